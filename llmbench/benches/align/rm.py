"""Reward model: the reference network with a scalar head, trained Bradley-Terry on pairs.

Training it is a cacheable stage (`align rm` leaves it in the cache, `ppo --reward-model` and
`rlhf` read it or train it): it runs on the streams of stage_rng(seed, "rm") and never on the
run's, and its key holds the reference's, so it is the same model whoever trained it.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import torch

from llmbench.benches.align.common import (
    Run,
    after_figures,
    history_metrics,
    pair_reward_metrics,
    pair_tensors,
    reference_key,
    reference_policy,
    role_metrics,
)
from llmbench.core import progress
from llmbench.core.memory import measure_peak
from llmbench.models.transformer import Transformer
from llmbench.train.losses import reward_model_loss
from llmbench.train.policy import ScalarHead
from llmbench.train.prefs import Pair
from llmbench.train.reference import cached_state, code_digest, save_state, stage_rng

RM_STEPS, RM_BATCH, RM_LR = 200, 16, 1e-3  # what ppo --reward-model and rlhf train with
# llmbench's modules whose code trains the reward model on top of the reference's.
RM_CODE = ("llmbench.benches.align.rm", "llmbench.benches.align.common")


@torch.no_grad()
def reward_accuracy(rm: ScalarHead, pairs: list[Pair], dev: torch.device) -> dict[str, float]:
    was = rm.training
    rm.eval()
    wins, margin = 0, 0.0
    for i in range(0, len(pairs), 64):
        ct, cm, rt, rmask = pair_tensors(pairs[i:i + 64], dev)
        rc, rr = rm.reward(ct, cm), rm.reward(rt, rmask)
        wins += int((rc > rr).sum())
        margin += float((rc - rr).sum())
    rm.train(was)
    return {"accuracy": wins / len(pairs), "margin": margin / len(pairs)}


def _rm_batch(run: Run, rm: ScalarHead, pairs: list[Pair]) -> tuple[torch.Tensor, ...]:
    """A batch of pairs: the Bradley-Terry loss, both rewards and both response masks."""
    ct, cm, rt, rmask = pair_tensors(pairs, run.dev)
    rc, rr = rm.reward(ct, cm), rm.reward(rt, rmask)
    return reward_model_loss(rc, rr).mean(), rc, rr, cm, rmask


def train_reward_model(run: Run, reference: Transformer, *, steps: int, batch: int, lr: float,
                       log: bool) -> ScalarHead:
    """`steps` Bradley-Terry steps of a scalar head on a copy of `reference`, on the streams of
    stage_rng(seed, "rm") (its head's initialisation, its batches): the same model whether
    `align rm` trains it (log: step times and the history) or PPO does, for its cache."""
    with stage_rng(run.p("seed"), "rm", run.device) as rng:
        rm = ScalarHead(copy.deepcopy(reference)).to(run.dev).train()
        for p in rm.parameters():  # all of it, even from a reference the caller froze (PPO's)
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(rm.parameters(), lr=lr)
        for step in range(steps):
            if log:
                run.start_step()
            loss, rc, rr, cm, rmask = _rm_batch(run, rm, _pairs(rng, run.data.train, batch))
            run.update(step, loss, optimizer)
            if log:
                run.end_step(int(cm.sum() + rmask.sum()))
                if run.should_log(step, steps):
                    run.log(step, steps, loss=loss, **pair_reward_metrics(rc, rr))
    rm.optimizer = optimizer  # kept for the memory figures of `align rm`
    return rm


def _pairs(rng: random.Random, pairs: list[Pair], n: int) -> list[Pair]:
    return [rng.choice(pairs) for _ in range(n)]


def rm_key(run: Run, *, steps: int, batch: int, lr: float) -> dict[str, Any]:
    """Everything that shapes the reward model: the reference it starts from (its whole key),
    its own steps, batch and lr, and the code that trains it."""
    return {"stage": "rm", "reference": reference_key(run), "seed": run.p("seed"),
            "steps": steps, "batch": batch, "lr": lr, "code": code_digest(RM_CODE)}


def cached_reward_model(run: Run, reference: Transformer) -> tuple[ScalarHead, bool]:
    """The reward model `align rm` trains with its defaults: the one it left in the cache, or
    trained now."""
    progress.report(stage="reward model")
    key = rm_key(run, steps=RM_STEPS, batch=RM_BATCH, lr=RM_LR)
    state, hit = cached_state("rm", key, lambda: train_reward_model(
        run, reference, steps=RM_STEPS, batch=RM_BATCH, lr=RM_LR, log=False).state_dict())
    with stage_rng(run.p("seed"), "rm", run.device):  # the head's initial draws, overwritten
        rm = ScalarHead(copy.deepcopy(reference)).to(run.dev)
    rm.load_state_dict(state)
    return rm.eval(), hit


def run_rm(run: Run) -> dict[str, Any]:
    reference = reference_policy(run)
    box: dict[str, ScalarHead] = {}

    def loop() -> None:
        box["rm"] = train_reward_model(run, reference, steps=run.p("steps"),
                                       batch=run.p("batch"), lr=run.p("lr"), log=True)

    before = reward_accuracy(ScalarHead(copy.deepcopy(reference)).to(run.dev),
                             run.data.heldout, run.dev)
    _, peak = measure_peak(loop, device=run.device)
    rm = box["rm"]
    after = reward_accuracy(rm, run.data.heldout, run.dev)
    save_state("rm", rm_key(run, steps=run.p("steps"), batch=run.p("batch"), lr=run.p("lr")),
               rm.state_dict())  # for `align ppo --reward-model`
    out = {**run.timing_metrics(), "peak_memory_bytes": peak.peak_bytes,
           **role_metrics({"reward": rm}, rm.optimizer),
           "eval/accuracy_before": before["accuracy"], "eval/accuracy": after["accuracy"],
           "eval/reward_margin": after["margin"], **history_metrics(run)}
    # The roofline's count and --trace: more steps, after every figure and after the model is
    # saved (they move it).
    after_figures(run, lambda: run.update(
        run.p("steps"), _rm_batch(run, rm, run.sample_pairs(run.p("batch")))[0], rm.optimizer))
    return {**out, **run.traffic}
