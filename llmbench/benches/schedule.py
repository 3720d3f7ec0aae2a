"""`llmbench schedule`: learning-rate schedules, computed step by step.

Cosine annealing with linear warm-up and a minimum-lr ratio, linear decay, constant: the same
formulas as Hugging Face transformers' schedule functions (llmbench.train.schedules). Each
case holds the whole curve; the table shows it at chosen steps.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.hardware import HardwareInfo
from llmbench.train.schedules import KINDS


class ScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: list[str] = Field(default_factory=lambda: ["cosine"], min_length=1)
    lr: float = Field(3e-4, gt=0)
    total: int = Field(1000, gt=0, description="training steps")
    warmup: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine: floor as a share of lr")
    num_cycles: float = Field(0.5, gt=0, description="cosine: 0.5 is one half-wave to the floor")
    at: list[int] | None = Field(None, description="steps to tabulate; None: 11 spread + warmup")

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


class ScheduleBenchmark(Benchmark[ScheduleConfig]):
    name = "schedule"
    config_type = ScheduleConfig
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
