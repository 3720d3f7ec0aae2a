"""What the training benchmarks (amp, checkpoint, optim, accum) share: the model and data
knobs of their configs, device resolution, and the child-side set-up of one case."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench.core.hardware import HardwareInfo, usable_device
from llmbench.core.timing import TimingPolicy
from llmbench.models.sizes import SIZES


class TrainingConfig(BaseModel):
    """A real training step of the built-in model on the synthetic task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("tiny", description=f"built-in size: {', '.join(SIZES)}")
    batch: int = Field(8, gt=0)
    seq: int = Field(128, gt=1)
    lr: float = Field(1e-3, gt=0)
    device: Literal["cpu", "cuda"] | None = None
    seed: int = 0
    timing: TimingPolicy = Field(default_factory=TimingPolicy)

    @field_validator("model")
    @classmethod
    def _known_size(cls, v: str) -> str:
        if v not in SIZES:
            raise ValueError(f"unknown model size {v!r} (choose from {', '.join(SIZES)})")
        return v


def resolve_device(config: TrainingConfig, hw: HardwareInfo) -> str:
    return usable_device(config.device, hw)


def case_params(config: TrainingConfig, **extra: Any) -> dict[str, Any]:
    return {"model": config.model, "batch": config.batch, "seq": config.seq,
            "device": config.device, **extra}


def run_args(config: TrainingConfig, **extra: Any) -> dict[str, Any]:
    return {"seed": config.seed, "lr": config.lr, "timing": config.timing.model_dump(), **extra}
