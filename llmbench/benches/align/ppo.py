"""PPO (and RLHF: SFT, then a reward model, then PPO against it).

Per iteration: sample responses to a batch of prompts, score them (the task's rule, or a reward
model), compute per-token rewards (-kl_coef * KL(policy || reference) at every token, plus the
score at the last), advantages by GAE, whitened; then several epochs of clipped policy and value
updates over minibatches. Metric names follow TRL's PPO trainer.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from llmbench.benches.align.common import (
    Run,
    before_after,
    heldout_rule_and_prefs,
    history_metrics,
    pair_logps,
    reference_policy,
    role_metrics,
    rule_scores,
)
from llmbench.benches.align.rm import cached_reward_model, reward_accuracy
from llmbench.core.memory import measure_peak
from llmbench.train.loop import HostReads
from llmbench.train.losses import (
    gae,
    kl_penalty,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
)
from llmbench.train.policy import ScalarHead, generate, token_logprobs
from llmbench.train.prefs import DIGITS

MINIBATCHES = 2
VF_COEF = 0.1
CLIP = 0.2


def _prompt_batch(run: Run, batch: int) -> torch.Tensor:
    """`batch` training prompts of one length (generation needs equal lengths)."""
    by_len: dict[int, list[bytes]] = {}
    for pair in run.data.train:
        by_len.setdefault(len(pair.prompt), []).append(pair.prompt)
    length = run.rng.choice(sorted(by_len))
    prompts = [run.rng.choice(by_len[length]) for _ in range(batch)]
    return torch.tensor([list(p) for p in prompts], device=run.dev)


def _rollout(run: Run, policy: torch.nn.Module, batch: int, max_new: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Sample responses to a batch of prompts: the rows, their response mask, and with a task
    the rule's ("gold") score of each row. Tokens are sampled on the device without reading
    anything back; scoring by the rule reads the rows once (inherent: the rule runs in Python)."""
    prompts = _prompt_batch(run, batch)
    rows, mask = generate(policy, prompts, max_new=max_new, temperature=run.p("temperature"),
                          generator=run.sampler)
    gold = None
    if run.data.task is not None:
        gold = torch.tensor(rule_scores(run, rows, prompts.shape[1]), device=run.dev)
    return rows, mask, gold


def run_ppo(run: Run, *, with_reward_model: bool) -> dict[str, Any]:
    reference = reference_policy(run).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    held_ref = pair_logps(reference, run.data.heldout, run.dev, average=True)
    before = heldout_rule_and_prefs(run, reference, held_ref)
    reward_model = None
    extra: dict[str, Any] = {}
    if with_reward_model:
        reward_model, cached = cached_reward_model(run, reference)
        for p in reward_model.parameters():
            p.requires_grad_(False)
        extra["reward_model_from_cache"] = float(cached)
        extra["eval/reward_model_accuracy"] = reward_accuracy(
            reward_model, run.data.heldout, run.dev)["accuracy"]
    policy = copy.deepcopy(reference).train()
    for p in policy.parameters():
        p.requires_grad_(True)
    value = ScalarHead(copy.deepcopy(policy)).to(run.dev).train()
    policy_opt = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))
    value_opt = torch.optim.AdamW(value.parameters(), lr=run.p("lr"))
    steps, batch = run.p("steps"), run.p("batch")
    kl_coef, max_new = run.p("kl_coef"), DIGITS + 1 if run.data.task else 32
    gold_history: list[float] = []

    def loop() -> None:
        for step in range(steps):
            run.start_step()
            rows, mask, gold = _rollout(run, policy, batch, max_new)
            with torch.no_grad():
                old_logp, entropy = token_logprobs(policy, rows)
                ref_logp, _ = token_logprobs(reference, rows)
                old_values = value(rows)[:, :-1]
                score = reward_model.reward(rows, mask) if reward_model is not None else gold
                kl = kl_penalty(old_logp, ref_logp, run.p("kl_estimator")) * mask
                rewards = -kl_coef * kl
                last = (mask * torch.arange(mask.shape[1], device=run.dev)).argmax(-1)
                rewards[torch.arange(len(rows)), last] += score
                advantages, returns = gae(rewards, old_values, mask)
                advantages = masked_whiten(advantages, mask)
            stats: dict[str, list[float]] = {}
            for _ in range(run.p("ppo_epochs")):
                order = torch.randperm(len(rows), generator=run.gen).to(run.dev)
                for mb in order.chunk(MINIBATCHES):
                    logp, _ = token_logprobs(policy, rows[mb])
                    values = value(rows[mb])[:, :-1]
                    pg_loss, pg_stats = ppo_policy_loss(logp, old_logp[mb], advantages[mb],
                                                        mask[mb], clip=CLIP)
                    vf_loss, vf_clipfrac = ppo_value_loss(values, old_values[mb], returns[mb],
                                                          mask[mb], clip=CLIP)
                    loss = pg_loss + VF_COEF * vf_loss
                    run.check(step, loss)
                    policy_opt.zero_grad(set_to_none=True)
                    value_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                    torch.nn.utils.clip_grad_norm_(value.parameters(), 1.0)
                    policy_opt.step()
                    value_opt.step()
                    for key, v in {**pg_stats, "loss/policy": pg_loss, "loss/value": vf_loss,
                                   "val/clipfrac": vf_clipfrac, "loss": loss}.items():
                        stats.setdefault(key, []).append(float(v.detach()) if
                                                         isinstance(v, torch.Tensor) else v)
            run.end_step(int(mask.sum()) * run.p("ppo_epochs"))
            kl_sum = kl.sum(-1)
            if gold is not None:
                gold_history.append(float(gold.mean()))
            if run.should_log(step, steps):
                logged = {k: sum(v) / len(v) for k, v in stats.items()}
                logged.update({
                    "objective/scores": score.mean(), "objective/kl": kl_sum.mean(),
                    "objective/entropy": (masked_mean(entropy, mask, dim=-1)).mean(),
                    "objective/rlhf_reward": (score - kl_coef * kl_sum).mean()})
                if gold is not None and reward_model is not None:
                    logged["objective/gold_scores"] = gold.mean()
                run.log(step, steps, **logged)

    _, peak = measure_peak(loop, device=run.device)
    after = heldout_rule_and_prefs(run, policy, held_ref)
    # One more rollout, untimed and after every reported figure, counting the reads to the host
    # it makes from Python (what HostReads sees): 0 while sampling, 1 to score by the rule.
    with HostReads() as reads:
        _rollout(run, policy, batch, max_new)
    extra["rollout/host_reads"] = reads.count
    extra["rollout/tokens_sampled"] = batch * max_new
    roles = {"policy": policy, "reference": reference, "value": value}
    if reward_model is not None:
        roles["reward"] = reward_model
    out = {**run.timing_metrics(), "peak_memory_bytes": peak.peak_bytes,
           **role_metrics(roles, policy_opt, value_opt),
           **before_after("eval/", before, after), **extra, **history_metrics(run)}
    h = run.history
    out["objective/kl"] = h["objective/kl"][-1]
    out["objective/kl_mean"] = sum(h["objective/kl"]) / len(h["objective/kl"])
    out["objective/scores_first"] = h["objective/scores"][0]
    out["objective/scores_last"] = h["objective/scores"][-1]
    if gold_history:
        # Mean rule score of the sampled training responses, over the first and last tenth.
        tenth = max(1, len(gold_history) // 10)
        out["objective/gold_first"] = sum(gold_history[:tenth]) / tenth
        out["objective/gold_last"] = sum(gold_history[-tenth:]) / tenth
    return out
