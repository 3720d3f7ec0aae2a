"""`llmbench schedule`: learning-rate schedules, computed step by step.

Cosine annealing with linear warm-up and a minimum-lr ratio, linear decay, constant: the same
formulas as Hugging Face transformers' schedule functions (llmbench.train.schedules). Each
case holds the whole curve; the table shows it at chosen steps.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.flags import LR
from llmbench.core.hardware import HardwareInfo
from llmbench.train.schedules import KINDS


class ScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: Annotated[list[str], Field(min_length=1), Opt(
        "cosine (warmup, min-lr floor), linear, constant.")] = ["cosine"]
    lr: Annotated[float, Field(gt=0), LR] = 3e-4
    total: Annotated[int, Field(gt=0), Opt("Training steps.")] = 1000
    warmup: Annotated[int, Field(ge=0), Opt("Linear warm-up steps.")] = 100
    min_lr_ratio: Annotated[float, Field(ge=0, le=1), Opt("Cosine floor as a share of lr.")
                            ] = 0.1
    num_cycles: Annotated[float, Field(gt=0), Opt(
        "Cosine half-waves / 2 (0.5: to the floor once).")] = 0.5
    at: Annotated[list[int] | None, Opt(
        "Steps to tabulate, e.g. 0,100,500.",
        default_text="11 spread out, and the warmup's end")] = None

    @field_validator("kinds")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for k in v:
            if k not in KINDS:
                raise ValueError(f"unknown schedule {k!r} (choose from {', '.join(KINDS)})")
        return list(dict.fromkeys(v))

    @field_validator("warmup")
    @classmethod
    def _warmup_fits(cls, v: int, info: ValidationInfo) -> int:
        total = info.data.get("total")
        if total is not None and v > total:
            raise ValueError(f"warmup {v} is longer than total {total}")
        return v

    @field_validator("at")
    @classmethod
    def _steps_in_range(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        total = info.data.get("total")
        for step in v or []:
            if step < 0 or (total is not None and step > total):
                raise ValueError(f"step {step} is outside 0..{total}")
        return sorted(set(v)) if v else None

    def steps_to_show(self) -> list[int]:
        if self.at:
            return self.at
        spread = {round(i * self.total / 10) for i in range(11)}
        return sorted(spread | {self.warmup})


class ScheduleCase(BaseModel):
    """A case's params: one schedule kind (min_lr_ratio 0 for all but cosine)."""

    model_config = RECORD

    kind: str
    lr: float
    total: int
    warmup: int
    min_lr_ratio: float
    num_cycles: float


class ScheduleSummary(BaseModel):
    model_config = RECORD

    steps_shown: list[int]


class ScheduleBenchmark(Benchmark[ScheduleConfig]):
    name = "schedule"
    help = """\
    Learning-rate schedules: lr at chosen steps, a terminal chart, the whole curve in JSON.

    The same formulas as Hugging Face transformers' get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup and get_constant_schedule_with_warmup.
    """
    run_options = ()
    renderer = "llmbench.report.formats:render_schedule"
    plot = "llmbench.report.plots:schedule"
    config_type = ScheduleConfig
    params_type = ScheduleCase
    summary_type = ScheduleSummary
    metrics = (
        Metric("lr_curve", "1", "info", "the learning rate at every step"),
        Metric("lr_max", "1", "info", "the largest learning rate"),
        Metric("lr_final", "1", "info", "the learning rate at the last step"),
        Metric("warmup_end_lr", "1", "info", "the learning rate at the warm-up's end"),
    )
    case_target = "llmbench.benches.schedule:run_case"
    isolated = False

    def device_of(self, config: ScheduleConfig, hw: HardwareInfo) -> str:
        return "cpu"

    def plan(self, config: ScheduleConfig, ctx: PlanContext) -> list[CasePlan]:
        return [CasePlan(name=kind, params={
            "kind": kind, "lr": config.lr, "total": config.total, "warmup": config.warmup,
            "min_lr_ratio": config.min_lr_ratio if kind == "cosine" else 0.0,
            "num_cycles": config.num_cycles}) for kind in config.kinds]

    def summarize(self, config: ScheduleConfig, cases: list, ctx: PlanContext
                  ) -> tuple[list, dict[str, Any]]:
        return cases, {"steps_shown": config.steps_to_show()}


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    from llmbench.train.schedules import curve

    p = dict(payload["params"])
    lrs = curve(kind=p.pop("kind"), **p)
    return {"lr_curve": lrs, "lr_max": max(lrs), "lr_final": lrs[-1],
            "warmup_end_lr": lrs[min(p["warmup"], p["total"])]}
