"""`llmbench accum`: gradient accumulation, the same effective batch split into micro-batches.

Per split (micro-batch size x accumulation steps = the effective batch): the accumulated
gradient (each micro-batch's loss divided by the number of steps) against the gradient of the
whole batch at once (max abs and relative difference), and a training step's peak memory,
time and tokens/s.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from llmbench.benches.training import (
    ACTIVATIONS,
    MODEL_PANEL,
    STEP_PEAK,
    STEP_ROOFLINE,
    TOKENS_PER_S,
    RooflineUsed,
    TrainingCase,
    TrainingConfig,
    case_params,
    resolve_device,
    run_args,
)
from llmbench.core import roofline
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import ERROR_FLOOR, RECORD, Metric, Opt
from llmbench.core.errors import UsageError
from llmbench.core.flags import BATCH, flag_like
from llmbench.core.hardware import HardwareInfo
from llmbench.core.results import CaseResult


class AccumConfig(TrainingConfig):
    batch: Annotated[int, Field(gt=0), flag_like(
        BATCH, help="The effective batch: micro-batch x accumulation steps.",
        panel=MODEL_PANEL)] = 32
    micro: Annotated[list[int] | None, Opt(
        "Micro-batch sizes, e.g. 16,8,4.", parse="sweep",
        default_text="batch, batch/2, batch/4, batch/8 (those that divide it)")] = None

    @field_validator("micro")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v and any(m < 1 for m in v):
            raise ValueError(f"micro-batch sizes must be at least 1, got {min(v)}")
        return sorted(set(v), reverse=True) if v else None


class AccumCase(TrainingCase):
    micro: int
    steps: int


class AccumSummary(BaseModel):
    model_config = RECORD

    effective_batch: int
    roofline: RooflineUsed = Field(default_factory=dict)


def default_micro(batch: int) -> list[int]:
    return [m for m in dict.fromkeys(batch // d for d in (1, 2, 4, 8)) if m and batch % m == 0]


class AccumBenchmark(Benchmark[AccumConfig]):
    name = "accum"
    help = """Gradient accumulation: one effective batch as micro-batch x steps.

    The accumulated gradient against the whole batch's, and each split's peak memory and
    throughput.
    """
    renderer = "llmbench.report.training:render_accum"
    plot = "llmbench.report.plots:accum"
    config_type = AccumConfig
    params_type = AccumCase
    summary_type = AccumSummary
    metrics = (
        TOKENS_PER_S,
        STEP_PEAK,
        ACTIVATIONS,
        *STEP_ROOFLINE,
        Metric("grad_max_abs_error", "abs", "lower",
               "max |accumulated gradient - whole batch's|", family="error", floor=ERROR_FLOOR),
        Metric("grad_rel_error", "rel", "lower",
               "grad_max_abs_error / the whole batch's max |gradient|", family="error",
               derived=True),
        Metric("peak_saved_pct", "%", "higher", "peak memory saved vs the whole batch",
               derived=True),
        Metric("slowdown_vs_whole_x", "x", "lower", "step time / the whole batch's",
               derived=True),
    )
    case_target = "llmbench.benches.accum:run_case"

    def resolve(self, config: AccumConfig, hw: HardwareInfo) -> AccumConfig:
        for m in config.micro or []:
            if config.batch % m:
                raise UsageError(f"--micro {m} does not divide --batch {config.batch}")
        return config.model_copy(update={"device": resolve_device(config, hw),
                                         "micro": config.micro or default_micro(config.batch)})

    def plan(self, config: AccumConfig, ctx: PlanContext) -> list[CasePlan]:
        return [CasePlan(name=f"{m}x{config.batch // m}",
                         params=case_params(config, micro=m, steps=config.batch // m),
                         run_args=run_args(config))
                for m in config.micro]

    def summarize(self, config: AccumConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        whole = next((c for c in cases if c.ok and c.params["steps"] == 1), None)
        out = []
        for case in cases:
            metrics = dict(case.metrics)
            if case.ok and whole is not None:
                base = whole.metrics["peak_memory_bytes"]
                if base:
                    metrics["peak_saved_pct"] = 100.0 * (1 - metrics["peak_memory_bytes"] / base)
                if whole.time() and case.time():
                    metrics["slowdown_vs_whole_x"] = case.time().median / whole.time().median
            out.append(case.model_copy(update={"metrics": metrics}))
        out, used = roofline.apply(out, ctx, "flops_per_step", lambda c: "fp32")
        return out, {"effective_batch": config.batch, "roofline": used}


# ------------------------------------------------------------------ one case, in the child


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llmbench.core.memory import measure_peak
    from llmbench.core.timing import measure
    from llmbench.train.case import setup
    from llmbench.train.loop import activation_step, gradients, lm_loss, train_step
    from llmbench.train.traffic import step_figures

    p = payload["params"]
    s = setup(payload)
    tokens, steps = s.batches[0], p["steps"]
    optimizer = torch.optim.AdamW(s.model.parameters(), lr=s.lr)

    def step() -> object:
        return train_step(s.model, optimizer, tokens, micro_batches=steps)

    step()  # warm-up
    # What one micro-batch's forward keeps for its backward (the roofline's traffic).
    _, activation = activation_step(s.model, optimizer, tokens.chunk(steps, dim=0)[0],
                                    device=s.device)
    _, peak = measure_peak(step, device=s.device)
    stats = measure(step, device=s.device, policy=s.timing)

    # The gradient check, at the current weights: accumulated vs the whole batch at once.
    s.model.zero_grad(set_to_none=True)
    for part in tokens.chunk(steps, dim=0):
        (lm_loss(s.model, part) / steps).backward()
    accumulated = gradients(s.model)
    s.model.zero_grad(set_to_none=True)
    lm_loss(s.model, tokens).backward()
    whole = gradients(s.model)
    diff = max(float((a - w).abs().max()) for a, w in zip(accumulated, whole, strict=True))
    scale = max(float(w.abs().max()) for w in whole)
    return {
        "time_ms": stats.model_dump(),
        "tokens_per_s": s.tokens_per_step / (stats.median / 1e3),
        "peak_memory_bytes": peak.peak_bytes,
        "grad_max_abs_error": diff,
        "grad_rel_error": diff / scale if scale else 0.0,
        "activation_memory_bytes": activation,  # one micro-batch's
        **step_figures(s.model, optimizer, p["batch"], p["seq"], activation,
                       micro_batches=steps),
    }
