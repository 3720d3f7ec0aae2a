"""SFT: cross-entropy on chosen responses only, starting from the reference."""

from __future__ import annotations

import copy
from typing import Any

import torch

from llmbench.benches.align.common import (
    Run,
    extra_step,
    heldout_rule_and_prefs,
    reference_policy,
    train_and_eval,
    train_results,
)
from llmbench.train.policy import encode, response_logps


def run_sft(run: Run) -> dict[str, Any]:
    reference = reference_policy(run)
    before = heldout_rule_and_prefs(run, reference)
    policy = copy.deepcopy(reference).train()
    del reference
    optimizer = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))
    steps, batch = run.p("steps"), run.p("batch")

    def batch_loss() -> tuple[torch.Tensor, torch.Tensor]:
        pairs = run.sample_pairs(batch)
        tokens, mask = encode([p.prompt for p in pairs], [p.chosen for p in pairs], run.dev)
        return -(response_logps(policy, tokens, mask) / mask.sum(-1)).mean(), mask

    def loop() -> None:
        for step in range(steps):
            run.start_step()
            loss, mask = batch_loss()
            run.update(step, loss, optimizer)
            run.end_step(int(mask.sum()))
            if run.should_log(step, steps):
                run.log(step, steps, loss=loss)

    peak, after = train_and_eval(run, loop, policy,
                                 step=extra_step(run, optimizer, lambda: batch_loss()[0]))
    return train_results(run, peak, {"policy": policy}, (optimizer,), before, after)
