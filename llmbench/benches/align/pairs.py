"""DPO and ORPO: preference pairs, with and without a reference model."""

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
    pair_tensors,
    reference_policy,
    role_metrics,
)
from llmbench.core.memory import measure_peak
from llmbench.train.losses import AVERAGED_LOSS_TYPES, dpo_loss, orpo_loss
from llmbench.train.policy import response_logps


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
        train_ref = pair_logps(reference, run.data.train, run.dev, average=average)
        roles = {"policy": policy}
        del reference
        reference = None
    optimizer = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))
    steps, batch = run.p("steps"), run.p("batch")

    def loop() -> None:
        for step in range(steps):
            run.start_step()
            index = [run.rng.randrange(len(run.data.train)) for _ in range(batch)]
            pairs = [run.data.train[i] for i in index]
            ct, cm, rt, rm = pair_tensors(pairs, run.dev)
            pc = response_logps(policy, ct, cm, average=average)
            pr = response_logps(policy, rt, rm, average=average)
            if train_ref is not None:
                rc, rr = train_ref[0][index], train_ref[1][index]
            else:
                with torch.no_grad():
                    rc = response_logps(reference, ct, cm, average=average)
                    rr = response_logps(reference, rt, rm, average=average)
            losses, chosen_r, rejected_r = dpo_loss(
                pc, pr, rc, rr, beta=run.p("beta"), loss_type=run.p("loss_type"),
                label_smoothing=run.p("label_smoothing"))
            loss = losses.mean()
            extra = {}
            if run.p("rpo_alpha"):
                # RPO: keep the chosen responses likely (per-token NLL), against DPO's habit of
                # lowering both responses' likelihood.
                nll = -(pc if average else pc / cm.sum(-1)).mean()
                loss = loss + run.p("rpo_alpha") * nll
                extra["nll_loss"] = nll.detach()
            run.check(step, loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.end_step(int(cm.sum() + rm.sum()))
            if run.should_log(step, steps):
                run.log(step, steps, loss=loss, **extra, **{
                    "rewards/chosen": chosen_r.mean(), "rewards/rejected": rejected_r.mean(),
                    "rewards/margins": (chosen_r - rejected_r).mean(),
                    "rewards/accuracies": (chosen_r > rejected_r).float().mean(),
                    "logps/chosen": pc.detach().mean(), "logps/rejected": pr.detach().mean()})

    _, peak = measure_peak(loop, device=run.device)
    after = heldout_rule_and_prefs(run, policy, held_ref)
    out = {**run.timing_metrics(), "peak_memory_bytes": peak.peak_bytes,
           **role_metrics(roles, optimizer, precomputed=train_ref),
           **before_after("eval/", before, after), **history_metrics(run)}
    out["loss_at_step0"] = run.history["loss"][0]
    return out


def run_orpo(run: Run) -> dict[str, Any]:
    """ORPO: NLL on chosen responses plus an odds-ratio term; no reference model in training
    (the reference is used for the before figures only, then freed)."""
    reference = reference_policy(run)
    policy = copy.deepcopy(reference).train()
    held_ref = pair_logps(reference, run.data.heldout, run.dev, average=True)
    before = heldout_rule_and_prefs(run, reference, held_ref)
    del reference
    optimizer = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))
    steps, batch = run.p("steps"), run.p("batch")

    def loop() -> None:
        for step in range(steps):
            run.start_step()
            ct, cm, rt, rm = pair_tensors(run.sample_pairs(batch), run.dev)
            pc = response_logps(policy, ct, cm, average=True)
            pr = response_logps(policy, rt, rm, average=True)
            losses, chosen_r, rejected_r, log_odds = orpo_loss(pc, pr, -pc, beta=run.p("beta"))
            loss = losses.mean()
            run.check(step, loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.end_step(int(cm.sum() + rm.sum()))
            if run.should_log(step, steps):
                run.log(step, steps, loss=loss, nll_loss=-pc.detach().mean(),
                        log_odds_ratio=log_odds.mean(), **{
                            "rewards/chosen": chosen_r.mean(),
                            "rewards/rejected": rejected_r.mean(),
                            "rewards/margins": (chosen_r - rejected_r).mean(),
                            "rewards/accuracies": (chosen_r > rejected_r).float().mean(),
                            "logps/chosen": pc.detach().mean(),
                            "logps/rejected": pr.detach().mean()})

    _, peak = measure_peak(loop, device=run.device)
    after = heldout_rule_and_prefs(run, policy, held_ref)
    return {**run.timing_metrics(), "peak_memory_bytes": peak.peak_bytes,
            **role_metrics({"policy": policy}, optimizer),
            **before_after("eval/", before, after), **history_metrics(run)}
