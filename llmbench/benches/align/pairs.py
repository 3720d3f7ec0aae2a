"""DPO and ORPO: preference pairs, with and without a reference model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from llmbench.benches.align.common import (
    Run,
    extra_step,
    heldout_rule_and_prefs,
    pair_forward,
    pair_logps,
    pair_reward_metrics,
    pair_tensors,
    reference_policy,
    train_and_eval,
    train_results,
)
from llmbench.train.losses import AVERAGED_LOSS_TYPES, dpo_loss, orpo_loss

# A training batch of a preference method: its loss, its chosen and rejected response masks
# (the tokens it counts), and a function of the figures logged besides the loss.
PairStep = tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor],
                 Callable[[], dict[str, Any]]]


def pair_loop(run: Run, optimizer: torch.optim.Optimizer,
              batch_step: Callable[[], PairStep]) -> Callable[[], None]:
    """The training loop DPO and ORPO share: per step, `batch_step()` samples a batch and gives
    its loss, then one update, the step's time and tokens, and on logged steps the loss and
    the batch's figures (computed then only)."""
    steps = run.p("steps")

    def loop() -> None:
        for step in range(steps):
            run.start_step()
            loss, (cm, rm), figures = batch_step()
            run.update(step, loss, optimizer)
            run.end_step(int(cm.sum() + rm.sum()))
            if run.should_log(step, steps):
                run.log(step, steps, loss=loss, **figures())

    return loop


def run_dpo(run: Run) -> dict[str, Any]:
    """DPO against a frozen copy of the reference; with precompute_ref, the reference's
    log-probabilities of every training pair are computed once and the model is freed."""
    reference = reference_policy(run)
    policy = copy.deepcopy(reference).train()
    average = run.p("loss_type") in AVERAGED_LOSS_TYPES  # IPO: per-token averages
    held_ref = pair_logps(reference, run.data.heldout, run.dev, average=True)
    before = heldout_rule_and_prefs(run, reference, held_ref)
    train_ref: tuple[torch.Tensor, torch.Tensor] | None = None
    roles = {"policy": policy, "reference": reference}
    if run.p("precompute_ref"):
        train_ref = pair_logps(reference, run.data.train, run.dev, average=average,
                               layout=run.p("layout"))
        roles = {"policy": policy}
        del reference
        reference = None
    optimizer = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))

    def batch_step() -> PairStep:
        return _dpo_batch(run, policy, reference, train_ref, average=average)

    peak, after = train_and_eval(run, pair_loop(run, optimizer, batch_step), policy, held_ref,
                                 step=extra_step(run, optimizer, lambda: batch_step()[0]))
    out = train_results(run, peak, roles, (optimizer,), before, after, precomputed=train_ref)
    out["loss_at_step0"] = run.history["loss"][0]
    return out


def _dpo_batch(run: Run, policy: torch.nn.Module, reference: torch.nn.Module | None,
               train_ref: tuple[torch.Tensor, torch.Tensor] | None, *,
               average: bool) -> PairStep:
    """One DPO batch: the reference's log-probabilities are the precomputed ones of the
    sampled pairs, or computed now."""
    batch = run.p("batch")
    index = [run.rng.randrange(len(run.data.train)) for _ in range(batch)]
    pairs = [run.data.train[i] for i in index]
    ct, cm, rt, rm = pair_tensors(pairs, run.dev)
    layout = run.p("layout")
    pc, pr, chosen = pair_forward(policy, ct, cm, rt, rm, average=average, layout=layout)
    if train_ref is not None:
        rc, rr = train_ref[0][index], train_ref[1][index]
    else:
        with torch.no_grad():
            rc, rr, _ = pair_forward(reference, ct, cm, rt, rm, average=average, layout=layout)
    losses, chosen_r, rejected_r = dpo_loss(
        pc, pr, rc, rr, beta=run.p("beta"), loss_type=run.p("loss_type"),
        label_smoothing=run.p("label_smoothing"))
    loss = losses.mean()
    extra = {}
    if run.p("rpo_alpha"):
        # RPO: keep the chosen responses likely, against DPO's habit of lowering both
        # responses' likelihood. The NLL is TRL's: TRL 1.x (trl/trainer/dpo_trainer.py, read at
        # 1.1.0) deprecates rpo_alpha for loss_type ["sigmoid", "sft"] with loss_weights
        # [1, rpo_alpha], its "sft" term one cross-entropy over the chosen half's response
        # tokens (sum of token NLLs / their count), as its rpo_alpha term was before.
        nll = chosen.nll(prompt=False)
        loss = loss + run.p("rpo_alpha") * nll
        extra["nll_loss"] = nll.detach()
    return loss, (cm, rm), lambda: {
        **extra, **pair_reward_metrics(chosen_r, rejected_r, (pc, pr))}


def run_reference_free(run: Run, batch: Callable[[Run, torch.nn.Module], PairStep]
                       ) -> dict[str, Any]:
    """A preference method without a reference model in training (ORPO, SimPO): the
    reference gives the before figures (and the held-out log-probs the implicit-reward
    accuracy is measured against), then is freed, and `batch(run, policy)` gives each step's
    loss; the loop holds the policy alone."""
    reference = reference_policy(run)
    policy = copy.deepcopy(reference).train()
    held_ref = pair_logps(reference, run.data.heldout, run.dev, average=True)
    before = heldout_rule_and_prefs(run, reference, held_ref)
    del reference
    optimizer = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))

    def batch_step() -> PairStep:
        return batch(run, policy)

    peak, after = train_and_eval(run, pair_loop(run, optimizer, batch_step), policy, held_ref,
                                 step=extra_step(run, optimizer, lambda: batch_step()[0]))
    return train_results(run, peak, {"policy": policy}, (optimizer,), before, after)


def orpo_batch(run: Run, policy: torch.nn.Module) -> PairStep:
    """One ORPO batch: NLL on the chosen rows plus beta times the odds-ratio term."""
    ct, cm, rt, rm = pair_tensors(run.sample_pairs(run.p("batch")), run.dev)
    pc, pr, chosen = pair_forward(policy, ct, cm, rt, rm, average=True, layout=run.p("layout"))
    # TRL's ORPO NLL (TRL 1.1.0, trl/experimental/orpo/orpo_trainer.py,
    # ORPOTrainer.concatenated_forward): one cross-entropy over the chosen half with the
    # labels masked by the attention mask only, so over the prompt and the response ("orpo
    # chosen nll loss is computed over the full prompt and response"; its tokenize_row's
    # -100 prompt labels feed the log-probs of the odds ratio, not this). TRL prepends BOS
    # where the tokenizer has one, so every prompt token is a label there; the byte-level
    # model has none, so a row's first byte, which nothing predicts, is not.
    nll = chosen.nll(prompt=True)
    losses, chosen_r, rejected_r, log_odds = orpo_loss(pc, pr, nll, beta=run.p("beta"))
    # TRL's names: log_odds_chosen is the mean raw log odds ratio, log_odds_ratio the mean
    # of log sigmoid of it (the odds-ratio term before beta; never positive).
    return losses.mean(), (cm, rm), lambda: {
        "nll_loss": nll.detach(), "log_odds_ratio": F.logsigmoid(log_odds).mean(),
        "log_odds_chosen": log_odds.mean(),
        **pair_reward_metrics(chosen_r, rejected_r, (pc, pr))}


def run_orpo(run: Run) -> dict[str, Any]:
    """ORPO: NLL on chosen responses plus an odds-ratio term; no reference model in training
    (the reference is used for the before figures only, then freed)."""
    return run_reference_free(run, orpo_batch)
