"""SFT: cross-entropy on chosen responses only, starting from the reference."""

from __future__ import annotations

import copy
from typing import Any

import torch

from llmbench.benches.align.common import (
    Run,
    before_after,
    heldout_rule_and_prefs,
    history_metrics,
    reference_policy,
    role_metrics,
)
from llmbench.core.memory import measure_peak
from llmbench.train.policy import encode, response_logps


def run_sft(run: Run) -> dict[str, Any]:
    reference = reference_policy(run)
    before = heldout_rule_and_prefs(run, reference)
    policy = copy.deepcopy(reference).train()
    del reference
    optimizer = torch.optim.AdamW(policy.parameters(), lr=run.p("lr"))
    steps, batch = run.p("steps"), run.p("batch")

    def loop() -> None:
        for step in range(steps):
            run.start_step()
            pairs = run.sample_pairs(batch)
            tokens, mask = encode([p.prompt for p in pairs], [p.chosen for p in pairs], run.dev)
            loss = -(response_logps(policy, tokens, mask) / mask.sum(-1)).mean()
            run.check(step, loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.end_step(int(mask.sum()))
            if run.should_log(step, steps):
                run.log(step, steps, loss=loss)

    _, peak = measure_peak(loop, device=run.device)
    after = heldout_rule_and_prefs(run, policy)
    return {**run.timing_metrics(), "peak_memory_bytes": peak.peak_bytes,
            **role_metrics({"policy": policy}, optimizer),
            **before_after("eval/", before, after), **history_metrics(run)}
