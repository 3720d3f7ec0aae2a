"""KTO: unpaired desirable and undesirable examples against a frozen reference.

Per example, with r = log pi(y|x) - log pi_ref(y|x) (sums over the completion's tokens) and z0
the reference point (Ethayarajh et al. 2024, eq. 7; TRL's KTOTrainer, loss_type "kto"):

    desirable:    w_d * (1 - sigmoid(beta * (r - z0)))
    undesirable:  w_u * (1 - sigmoid(beta * (z0 - r)))

the batch's loss their mean. z0 estimates KL(pi || pi_ref) on the batch's own completions
paired with other prompts (TRL moves each completion one place down the batch: prompt i meets
completion i - 1): the mean of log pi - log pi_ref over those mismatched rows, clamped at 0 and
not differentiated (the policy's figures under no_grad, as TRL's). The implicit reward is
beta * r. TRL's logged names: kl, rewards/chosen and rewards/rejected (the mean reward of the
batch's desirable / undesirable examples), rewards/margins (their difference), logps/chosen and
logps/rejected; a batch without examples of one kind logs NaN for that kind.

Data: the synthetic task's pairs (or a user's pairs) unpaired, each pair's chosen response
desirable and its rejected one undesirable (`prefs.unpair`, what TRL does to a paired
dataset), or a user's {prompt, completion, label} file. Held out, the same figures as every
method (preference accuracy of the held-out pairs, rule satisfaction of sampled generations);
on an unpaired file, which has neither pairs nor a rule, the held-out desirable completions'
mean per-token log-probability minus the undesirable ones' (`logps_margin`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from llmbench.benches.align.common import (
    Run,
    after_figures,
    extra_step,
    heldout_rule_and_prefs,
    pair_logps,
    reference_policy,
    train_results,
)
from llmbench.benches.align.pairs import PairStep, pair_loop
from llmbench.core import progress
from llmbench.core.memory import measure_peak
from llmbench.train.losses import kto_loss
from llmbench.train.policy import encode, response_logps
from llmbench.train.prefs import Example


def kto_tensors(examples: list[Example], dev: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows (2n, T) and their completion masks: the n examples, then the n KL rows (prompt i
    with completion i - 1, the last completion going to the first prompt); and whether each
    example is desirable (n,)."""
    prompts = [e.prompt for e in examples]
    completions = [e.completion for e in examples]
    mismatched = completions[-1:] + completions[:-1]
    tokens, mask = encode(prompts + prompts, completions + mismatched, dev)
    desirable = torch.tensor([e.label for e in examples], device=dev)
    return tokens, mask, desirable


def _mean_where(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Mean of x where `where` (a float 0/1 mask) is 1: NaN where it is nowhere."""
    return (x * where).sum() / where.sum()


def kto_batch(run: Run, policy: torch.nn.Module, reference: torch.nn.Module,
              examples: list[Example]) -> PairStep:
    """One KTO batch of `batch` examples drawn from `examples`: its loss, the desirable and
    the undesirable completions' masks (the tokens trained on), and the logged figures."""
    picks = [run.rng.choice(examples) for _ in range(run.p("batch"))]
    tokens, mask, desirable = kto_tensors(picks, run.dev)
    n = len(picks)
    logps = response_logps(policy, tokens[:n], mask[:n])
    with torch.no_grad():
        kl_logps = response_logps(policy, tokens[n:], mask[n:])
        ref = response_logps(reference, tokens, mask)  # both halves in one forward
    kl = (kl_logps - ref[n:]).mean().clamp_min(0)
    losses, rewards = kto_loss(logps, ref[:n], desirable, kl, beta=run.p("beta"),
                               desirable_weight=run.p("desirable_weight"),
                               undesirable_weight=run.p("undesirable_weight"))
    good = desirable.to(logps.dtype)
    bad = 1 - good

    def figures() -> dict[str, Any]:
        chosen, rejected = _mean_where(rewards, good), _mean_where(rewards, bad)
        return {"kl": kl, "rewards/chosen": chosen, "rewards/rejected": rejected,
                "rewards/margins": chosen - rejected,
                "logps/chosen": _mean_where(logps.detach(), good),
                "logps/rejected": _mean_where(logps.detach(), bad)}

    return losses.mean(), (mask[:n] * good[:, None], mask[:n] * bad[:, None]), figures


@torch.no_grad()
def example_logps(model: torch.nn.Module, examples: list[Example], dev: torch.device, *,
                  chunk: int = 64) -> torch.Tensor:
    """Each example's mean per-token log-probability of its completion."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(examples), chunk):
        part = examples[i:i + chunk]
        tokens, mask = encode([e.prompt for e in part], [e.completion for e in part], dev)
        out.append(response_logps(model, tokens, mask, average=True))
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, device=dev)


def logps_margin(model: torch.nn.Module, examples: list[Example], dev: torch.device) -> float:
    """Mean per-token log-probability of the desirable completions minus the undesirable
    ones' (NaN without both)."""
    logps = example_logps(model, examples, dev)
    good = torch.tensor([e.label for e in examples], device=dev, dtype=logps.dtype)
    return float(_mean_where(logps, good) - _mean_where(logps, 1 - good))


def kto_heldout(run: Run, model: torch.nn.Module,
                held_ref: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, float]:
    """The held-out figures: every method's on pairs (with the reference's log-probs
    `held_ref`), or on an unpaired file the desirable-minus-undesirable log-prob margin."""
    if run.data.unpaired is None:
        return heldout_rule_and_prefs(run, model, held_ref)
    progress.report(stage="evaluating")
    return {"logps_margin": logps_margin(model, run.data.unpaired[1], run.dev)}


def run_kto(run: Run) -> dict[str, Any]:
    """KTO from the reference policy against a frozen copy of it (two models held)."""
    reference = reference_policy(run)
    policy = copy.deepcopy(reference).train()
    held_ref = (pair_logps(reference, run.data.heldout, run.dev, average=True)
                if run.data.unpaired is None else None)
    before = kto_heldout(run, reference, held_ref)
    train, _ = run.data.examples()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))

    def batch_step() -> PairStep:
        return kto_batch(run, policy, reference, train)

    _, peak = measure_peak(pair_loop(run, optimizer, batch_step), device=run.device)
    after = kto_heldout(run, policy, held_ref)
    # --trace and the roofline's count: one more step, after every figure (it moves the policy)
    after_figures(run, extra_step(run, optimizer, lambda: batch_step()[0]))
    return train_results(run, peak, {"policy": policy, "reference": reference}, (optimizer,),
                         before, after)
