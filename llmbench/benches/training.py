"""What the training benchmarks (amp, checkpoint, optim, accum) share: the model and data
knobs of their configs, device resolution, and the child-side set-up of one case."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from llmbench.core import roofline
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.flags import BATCH, LR, MODEL, SEQ, Device, Seed, flag_like
from llmbench.core.hardware import HardwareInfo, usable_device
from llmbench.core.timing import TimingPolicy
from llmbench.models.hf import HFConfig, load_config
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
HFConfigSpec = Annotated[str | None, Opt(
    "Train a Hugging Face architecture instead of the built-in model: a preset "
    f"({', '.join(PRESETS)}) or a config.json (or a folder holding one). Built by transformers "
    "with random weights, nothing downloaded (pip install 'llmbench[hf]'); --model is then "
    "ignored.", flag="--hf-config", panel=MODEL_PANEL, parse="text")]
Layers = Annotated[int | None, Field(gt=0), Opt(
    "Decoder layers: cuts --hf-config's depth (every width kept) or sets the built-in "
    "model's.", default_text="the model's own", panel=MODEL_PANEL)]
ParamDtype = Annotated[Literal["auto", "fp32", "bf16"], Opt(
    "The trained parameters' dtype (and so their gradients' and optimizer states'): fp32, or "
    "pure bf16. auto: bf16 for an --hf-config whose torch_dtype is bfloat16 (the published "
    "weights' dtype), fp32 otherwise.", panel=MODEL_PANEL)]
Attention = Annotated[Literal["sdpa", "standard", "flex"], Opt(
    "The model's attention: sdpa (torch's fused scaled_dot_product_attention), standard "
    "(softmax(QK^T)V, which keeps the seq x seq probabilities for the backward pass; "
    "transformers' eager) or flex (torch's FlexAttention with a causal block mask, compiled; "
    "transformers' flex_attention; it needs FlexAttention's backward: a GPU with torch 2.13).",
    panel=MODEL_PANEL)]


def checked_hf_config(spec: str | None) -> str | None:
    """`spec` when it names a document llmbench can build (a one-line error otherwise,
    naming the file and the field)."""
    if spec is not None:
        load_config(spec)
    return spec


def built_in_size(name: str) -> str:
    """`name` when it is a built-in size; a ValueError saying what it is otherwise."""
    if name in SIZES:
        return name
    if name in PRESETS:
        raise ValueError(f"{name} is a published preset: train its architecture with "
                         f"--hf-config {name} (add --layers N to cut its depth); --model takes "
                         f"the built-in sizes ({', '.join(SIZES)})")
    raise ValueError(f"unknown model {name!r} (built-in sizes: {', '.join(SIZES)}; presets: "
                     f"{', '.join(PRESETS)})")


class TrainingConfig(BaseModel):
    """A real training step of the built-in model on the synthetic task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Model = "tiny"
    batch: Batch = 8
    seq: Seq = 128
    lr: Annotated[float, Field(gt=0), flag_like(LR, panel=MODEL_PANEL)] = 1e-3
    hf_config: HFConfigSpec = None
    layers: Layers = None
    attention: Attention = "sdpa"
    device: Device = None
    seed: Seed = 0
    timing: TimingPolicy = Field(default_factory=TimingPolicy)
    _hf: HFConfig | None = PrivateAttr(None)

    @field_validator("model")
    @classmethod
    def _known_size(cls, v: str) -> str:
        return built_in_size(v)

    @field_validator("hf_config")
    @classmethod
    def _buildable(cls, v: str | None) -> str | None:
        return checked_hf_config(v)

    @model_validator(mode="after")
    def _read_hf_config(self) -> TrainingConfig:
        if self.hf_config is not None:
            self._hf = load_config(self.hf_config)
        return self

    @property
    def hf(self) -> HFConfig | None:
        """The --hf-config document, checked (full depth)."""
        return self._hf

    @property
    def model_name(self) -> str:
        """What the cases train: the built-in size, or the HF config's name."""
        return self._hf.name if self._hf is not None else self.model

    def hf_params(self) -> int:
        """The --hf-config model's parameters at the --layers depth (transformers' count)."""
        depth = self.layers if isinstance(self.layers, int) else None
        return load_config(self.hf_config, layers=depth).param_count()

    def trained_dtype(self, choice: str = "auto") -> str:
        """A ParamDtype choice resolved: auto is bf16 for a bfloat16 --hf-config."""
        if choice != "auto":
            return choice
        if self._hf is None:
            return "fp32"
        published = self._hf.raw.get("torch_dtype") or self._hf.raw.get("dtype")
        return "bf16" if published == "bfloat16" else "fp32"


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
    hf_config: str | None = None
    layers: int | None = None
    attention: Literal["sdpa", "standard", "flex"] = "sdpa"
    param_dtype: Literal["fp32", "bf16"] = "fp32"


def hf_params(spec: str | None) -> dict[str, Any]:
    """The params naming an --hf-config: the model's name, and the document the child builds
    (a preset's name, or the file's absolute path); none without one."""
    if spec is None:
        return {}
    hf = load_config(spec)
    return {"model": hf.name,
            "hf_config": hf.name if spec in PRESETS else str(Path(hf.source).resolve())}


def case_params(config: TrainingConfig, **extra: Any) -> dict[str, Any]:
    """A case's params: the model (the built-in size, or --hf-config's name and the document
    the child builds), its depth, attention and parameter dtype, batch, seq, device, and the
    benchmark's own keys (which may restate layers and param_dtype)."""
    params = {"model": config.model_name, "batch": config.batch, "seq": config.seq,
              "device": config.device, "attention": config.attention,
              **hf_params(config.hf_config)}
    if isinstance(config.layers, int):
        params["layers"] = config.layers
    return {**params, **extra}


def run_args(config: TrainingConfig, **extra: Any) -> dict[str, Any]:
    return {"seed": config.seed, "lr": config.lr, "timing": config.timing.model_dump(), **extra}
