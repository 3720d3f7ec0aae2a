"""What the training benchmarks (amp, checkpoint, optim, accum) share: the model and data
knobs of their configs, device resolution, and the child-side set-up of one case."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench.core import roofline
from llmbench.core.declare import RECORD, Metric
from llmbench.core.flags import BATCH, LR, MODEL, SEQ, Device, Seed, flag_like
from llmbench.core.hardware import HardwareInfo, usable_device
from llmbench.core.timing import TimingPolicy
from llmbench.models.presets import PRESETS
from llmbench.models.sizes import SIZES

MODEL_PANEL = "Model and data"
# The figures of a training step every training benchmark reports, declared once.
TOKENS_PER_S = Metric("tokens_per_s", "tok/s", "higher", "training tokens per second",
                      derived=True)
STEP_PEAK = Metric("peak_memory_bytes", "B", "lower", "peak memory of a training step")
ACTIVATIONS = Metric("activation_memory_bytes", "B", "lower",
                     "what the forward pass keeps for the backward pass")
# The step's place on the roofline (train.traffic counts its FLOPs and bytes; core.roofline).
STEP_ROOFLINE = (Metric("flops_per_step", "FLOP", "info",
                        "the FLOPs one timed call needs (6N per token plus attention)"),
                 *roofline.METRICS)
# A summary's ceilings of the roofline figures, by the dtype the cases compute in.
RooflineUsed = dict[str, roofline.RooflineCeilings]
# The model, batch and seq options of every training benchmark (a benchmark restates a field
# with these types to change its default).
Model = Annotated[str, flag_like(MODEL, help=f"Trained here: a built-in size ({', '.join(SIZES)}).",
                                 panel=MODEL_PANEL)]
Batch = Annotated[int, Field(gt=0), flag_like(BATCH, help="Per step.", panel=MODEL_PANEL)]
Seq = Annotated[int, Field(gt=1), flag_like(SEQ, panel=MODEL_PANEL)]


def built_in_size(name: str) -> str:
    """`name` when it is a built-in size; a ValueError saying what it is otherwise."""
    if name in SIZES:
        return name
    if name in PRESETS:
        raise ValueError(f"{name} is a published preset; this benchmark trains the built-in "
                         f"sizes ({', '.join(SIZES)}) (`llmbench optim --model {name}` gives "
                         "its analytic memory table)")
    raise ValueError(f"unknown model {name!r} (built-in sizes: {', '.join(SIZES)}; presets: "
                     f"{', '.join(PRESETS)})")


class TrainingConfig(BaseModel):
    """A real training step of the built-in model on the synthetic task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Model = "tiny"
    batch: Batch = 8
    seq: Seq = 128
    lr: Annotated[float, Field(gt=0), flag_like(LR, panel=MODEL_PANEL)] = 1e-3
    device: Device = None
    seed: Seed = 0
    timing: TimingPolicy = Field(default_factory=TimingPolicy)

    @field_validator("model")
    @classmethod
    def _known_size(cls, v: str) -> str:
        return built_in_size(v)


def resolve_device(config: TrainingConfig, hw: HardwareInfo) -> str:
    return usable_device(config.device, hw)


class TrainingCase(BaseModel):
    """The params every training benchmark's case carries (`case_params`); each benchmark's
    case model adds its own keys after these."""

    model_config = RECORD

    model: str
    batch: int
    seq: int
    device: Literal["cpu", "cuda"] | None = None


def case_params(config: TrainingConfig, **extra: Any) -> dict[str, Any]:
    return {"model": config.model, "batch": config.batch, "seq": config.seq,
            "device": config.device, **extra}


def run_args(config: TrainingConfig, **extra: Any) -> dict[str, Any]:
    return {"seed": config.seed, "lr": config.lr, "timing": config.timing.model_dump(), **extra}
