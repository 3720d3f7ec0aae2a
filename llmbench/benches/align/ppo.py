"""PPO (and RLHF: SFT, then a reward model, then PPO against it).

Per iteration: sample responses to a batch of prompts, score them (the task's rule, or a reward
model), compute per-token rewards (-kl_coef * KL(policy || reference) at every token, plus the
score at the last), advantages by GAE, whitened; then several epochs of clipped policy and value
updates over minibatches. Metric names follow TRL's PPO trainer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from llmbench.benches.align.common import (
    Run,
    heldout_rule_and_prefs,
    pair_logps,
    reference_policy,
    rule_scores,
    train_and_eval,
    train_results,
)
from llmbench.benches.align.rm import cached_reward_model, reward_accuracy
from llmbench.models.transformer import Transformer
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


@dataclass
class _Models:
    """The networks of a PPO run, and the optimizers of the two it trains."""

    reference: Transformer
    policy: Transformer
    value: ScalarHead
    reward_model: ScalarHead | None
    policy_opt: torch.optim.Optimizer
    value_opt: torch.optim.Optimizer

    def roles(self) -> dict[str, torch.nn.Module]:
        roles = {"policy": self.policy, "reference": self.reference, "value": self.value}
        if self.reward_model is not None:
            roles["reward"] = self.reward_model
        return roles


@dataclass
class _Batch:
    """One rollout, and what the updates need of it (computed without gradients)."""

    rows: torch.Tensor
    mask: torch.Tensor
    gold: torch.Tensor | None
    old_logp: torch.Tensor
    entropy: torch.Tensor
    old_values: torch.Tensor
    score: torch.Tensor
    kl: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def run_ppo(run: Run, *, with_reward_model: bool) -> dict[str, Any]:
    reference = _frozen(reference_policy(run).eval())
    held_ref = pair_logps(reference, run.data.heldout, run.dev, average=True)
    before = heldout_rule_and_prefs(run, reference, held_ref)
    extra: dict[str, Any] = {}
    reward_model = _reward_model(run, reference, extra) if with_reward_model else None
    m = _models(run, reference, reward_model)
    steps, batch = run.p("steps"), run.p("batch")
    max_new = DIGITS + 1 if run.data.task else 32
    gold_history: list[float] = []

    def loop() -> None:
        for step in range(steps):
            _ppo_step(run, m, step, steps, batch, max_new, gold_history)

    def one_step() -> None:  # --trace's call: a rollout, its scores, the updates; no log
        _update(run, m, _score(run, m, *_rollout(run, m.policy, batch, max_new)), steps)

    peak, after = train_and_eval(run, loop, m.policy, held_ref, step=one_step)
    # One more rollout, untimed and after every reported figure, counting the reads to the host
    # it makes from Python (what HostReads sees): 0 while sampling, 1 to score by the rule.
    with HostReads() as reads:
        _rollout(run, m.policy, batch, max_new)
    extra["rollout/host_reads"] = reads.count
    extra["rollout/tokens_sampled"] = batch * max_new
    out = train_results(run, peak, m.roles(), (m.policy_opt, m.value_opt), before, after,
                        extra=extra)
    out.update(_objective_summary(run.history, gold_history))
    return out


def _frozen(model: torch.nn.Module) -> Any:
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _reward_model(run: Run, reference: Transformer, extra: dict[str, Any]) -> ScalarHead:
    """The cached reward model, frozen; its provenance and held-out accuracy go to `extra`."""
    reward_model, cached = cached_reward_model(run, reference)
    _frozen(reward_model)
    extra["reward_model_from_cache"] = float(cached)
    extra["eval/reward_model_accuracy"] = reward_accuracy(
        reward_model, run.data.heldout, run.dev)["accuracy"]
    return reward_model


def _models(run: Run, reference: Transformer, reward_model: ScalarHead | None) -> _Models:
    """The policy (a trainable copy of the reference), a value model on a copy of it, and
    their optimizers."""
    policy = copy.deepcopy(reference).train()
    for p in policy.parameters():
        p.requires_grad_(True)
    value = ScalarHead(copy.deepcopy(policy)).to(run.dev).train()
    policy_opt = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))
    value_opt = torch.optim.AdamW(value.parameters(), lr=run.p("lr"))
    return _Models(reference=reference, policy=policy, value=value, reward_model=reward_model,
                   policy_opt=policy_opt, value_opt=value_opt)


def _ppo_step(run: Run, m: _Models, step: int, steps: int, batch: int, max_new: int,
              gold_history: list[float]) -> None:
    """One iteration, timed: a rollout, its scores, the updates; then the log."""
    run.start_step()
    b = _score(run, m, *_rollout(run, m.policy, batch, max_new))
    stats = _update(run, m, b, step)
    run.end_step(int(b.mask.sum()) * run.p("ppo_epochs"))
    if b.gold is not None:
        gold_history.append(float(b.gold.mean()))
    if run.should_log(step, steps):
        run.log(step, steps, **_logged(run, m, b, stats))


def _score(run: Run, m: _Models, rows: torch.Tensor, mask: torch.Tensor,
           gold: torch.Tensor | None) -> _Batch:
    """Per-token rewards (-kl_coef * KL at every token, plus the score at the last), and
    GAE's advantages (whitened) and returns, all without gradients."""
    with torch.no_grad():
        old_logp, entropy = token_logprobs(m.policy, rows)
        ref_logp, _ = token_logprobs(m.reference, rows)
        old_values = m.value(rows)[:, :-1]
        score = m.reward_model.reward(rows, mask) if m.reward_model is not None else gold
        kl = kl_penalty(old_logp, ref_logp, run.p("kl_estimator")) * mask
        rewards = -run.p("kl_coef") * kl
        last = (mask * torch.arange(mask.shape[1], device=run.dev)).argmax(-1)
        rewards[torch.arange(len(rows)), last] += score
        advantages, returns = gae(rewards, old_values, mask)
        advantages = masked_whiten(advantages, mask)
    return _Batch(rows=rows, mask=mask, gold=gold, old_logp=old_logp, entropy=entropy,
                  old_values=old_values, score=score, kl=kl, advantages=advantages,
                  returns=returns)


def _update(run: Run, m: _Models, b: _Batch, step: int) -> dict[str, list[float]]:
    """ppo_epochs passes over the rollout in shuffled minibatches; every minibatch's figures."""
    stats: dict[str, list[float]] = {}
    for _ in range(run.p("ppo_epochs")):
        order = torch.randperm(len(b.rows), generator=run.gen).to(run.dev)
        for mb in order.chunk(MINIBATCHES):
            for key, v in _minibatch(run, m, b, mb, step).items():
                stats.setdefault(key, []).append(float(v.detach()) if
                                                 isinstance(v, torch.Tensor) else v)
    return stats


def _minibatch(run: Run, m: _Models, b: _Batch, mb: torch.Tensor,
               step: int) -> dict[str, Any]:
    """One clipped policy and value update on the rows `mb`; its losses and statistics."""
    logp, _ = token_logprobs(m.policy, b.rows[mb])
    values = m.value(b.rows[mb])[:, :-1]
    pg_loss, pg_stats = ppo_policy_loss(logp, b.old_logp[mb], b.advantages[mb], b.mask[mb],
                                        clip=CLIP)
    vf_loss, vf_clipfrac = ppo_value_loss(values, b.old_values[mb], b.returns[mb], b.mask[mb],
                                          clip=CLIP)
    loss = pg_loss + VF_COEF * vf_loss
    run.check(step, loss)
    m.policy_opt.zero_grad(set_to_none=True)
    m.value_opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.policy.parameters(), 1.0)
    torch.nn.utils.clip_grad_norm_(m.value.parameters(), 1.0)
    m.policy_opt.step()
    m.value_opt.step()
    return {**pg_stats, "loss/policy": pg_loss, "loss/value": vf_loss,
            "val/clipfrac": vf_clipfrac, "loss": loss}


def _logged(run: Run, m: _Models, b: _Batch, stats: dict[str, list[float]]) -> dict[str, Any]:
    """A logged iteration's figures: the minibatches' means, and the rollout's objective."""
    kl_coef, kl_sum = run.p("kl_coef"), b.kl.sum(-1)
    logged: dict[str, Any] = {k: sum(v) / len(v) for k, v in stats.items()}
    logged.update({
        "objective/scores": b.score.mean(), "objective/kl": kl_sum.mean(),
        "objective/entropy": (masked_mean(b.entropy, b.mask, dim=-1)).mean(),
        "objective/rlhf_reward": (b.score - kl_coef * kl_sum).mean()})
    if b.gold is not None and m.reward_model is not None:
        logged["objective/gold_scores"] = b.gold.mean()
    return logged


def _objective_summary(h: dict[str, list[float]], gold_history: list[float]
                       ) -> dict[str, float]:
    """The last and mean KL and the first and last score of the history; with a rule, the
    mean rule score of the sampled training responses over the first and last tenth."""
    out = {"objective/kl": h["objective/kl"][-1],
           "objective/kl_mean": sum(h["objective/kl"]) / len(h["objective/kl"]),
           "objective/scores_first": h["objective/scores"][0],
           "objective/scores_last": h["objective/scores"][-1]}
    if gold_history:
        tenth = max(1, len(gold_history) // 10)
        out["objective/gold_first"] = sum(gold_history[:tenth]) / tenth
        out["objective/gold_last"] = sum(gold_history[-tenth:]) / tenth
    return out
