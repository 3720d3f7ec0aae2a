"""`llmbench estimate`: will a training run fit on a GPU, and how fast will it go?

Per GPU, from the model's widths (train.footprint, train.memory_model): weights, gradients and
optimizer states under ZeRO, activations per layer and in total under a checkpoint policy,
logits and loss, the backward's temporary peak, the step's peak; FLOPs per token (6N plus
attention), step time and tokens/s at an MFU of the profile's peak (or of a `llmbench peak`
calibration); whether it fits in --memory, and the largest batch and seq that would.

`--validate` measures what it predicts: the same model (a built-in size or an --hf-config,
cut to --layers) trains here under none / every / sqrt checkpointing (`llmbench checkpoint`'s
protocol), and each case shows predicted vs measured model states, activations and step peak.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from llmbench.benches.checkpoint import CheckpointBenchmark
from llmbench.benches.training import MODEL_PANEL, TrainingCase, checked_hf_config, hf_params
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.errors import UsageError
from llmbench.core.flags import (
    BATCH,
    HEAD_DIM,
    HEADS,
    KV_HEADS,
    MODEL,
    SEQ,
    Device,
    Seed,
    flag_like,
)
from llmbench.core.hardware import HardwareInfo, usable_device
from llmbench.core.results import CaseResult
from llmbench.core.timing import TimingPolicy
from llmbench.models.sizes import SIZES
from llmbench.train import optimizers as optim_registry
from llmbench.train.checkpointing import POLICIES

_RUN = "The run"
_VALIDATE = "Validation (measured here)"
VALIDATED_POLICIES = ("none", "every", "sqrt")
# Acceptance: predicted activations within 10 % of measured, the step peak within 15 %.
ACTIVATION_TOLERANCE_PCT = 10.0
PEAK_TOLERANCE_PCT = 15.0
# --validate checks memory: one timed step (after the protocol's own warm-up steps) is enough.
ONE_STEP = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=1, max_runs=1,
                        min_time_s=0.0, max_time_s=1e9)


class EstimateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[str | None, flag_like(
        MODEL, default_text="llama-3-8b", panel=MODEL_PANEL)] = None
    hf_config: Annotated[str | None, Opt(
        "A Hugging Face config.json (or a folder holding one, or a preset name), read "
        "without transformers.", flag="--hf-config", panel=MODEL_PANEL, parse="text")] = None
    layers: Annotated[int | None, Field(gt=0), Opt(
        "Decoder layers (cuts or sets the model's depth).", panel=MODEL_PANEL)] = None
    hidden: Annotated[int | None, Field(gt=0), Opt("Hidden size.", panel=MODEL_PANEL)] = None
    intermediate: Annotated[int | None, Field(gt=0), Opt(
        "MLP width.", panel=MODEL_PANEL)] = None
    heads: Annotated[int | None, Field(gt=0), flag_like(HEADS, panel=MODEL_PANEL)] = None
    kv_heads: Annotated[int | None, Field(gt=0), flag_like(KV_HEADS, panel=MODEL_PANEL)] = None
    head_dim: Annotated[int | None, Field(gt=0), flag_like(
        HEAD_DIM, default_text="hidden / heads", panel=MODEL_PANEL)] = None
    vocab: Annotated[int | None, Field(gt=0), Opt("Vocabulary size.", panel=MODEL_PANEL)] = None
    batch: Annotated[int, Field(gt=0), flag_like(
        BATCH, help="Per GPU (the micro-batch).", panel=_RUN)] = 1
    seq: Annotated[int, Field(gt=1), flag_like(SEQ, panel=_RUN)] = 4096
    precision: Annotated[Literal["fp32", "bf16-mixed", "fp16-mixed", "bf16"], Opt(
        "fp32; mixed precision (-mixed); or pure bf16 weights, gradients and states.",
        panel=_RUN)] = "bf16-mixed"
    mixed_layout: Annotated[Literal["zero", "autocast"], Opt(
        "Mixed precision as DeepSpeed/Megatron keep it (zero: 2-byte weights and gradients, an "
        "fp32 master copy with the optimizer states; the ZeRO paper's 16 B/param for Adam) or "
        "as torch.autocast does (fp32 weights, gradients and states; 2-byte copies of the "
        "weights per forward).", panel=_RUN)] = "zero"
    optimizer: Annotated[str, Opt(f"{', '.join(optim_registry.OPTIMIZERS)}.",
                                  panel=_RUN)] = "adamw"
    checkpoint: Annotated[Literal["none", "every", "every-k", "sqrt"], Opt(
        "Activation checkpointing: none, every layer, every k-th layer, sqrt(L)-layer "
        "segments.", panel=_RUN)] = "none"
    every: Annotated[int, Field(ge=1), Opt("k of --checkpoint every-k.", panel=_RUN)] = 2
    attention: Annotated[Literal["flash", "standard"], Opt(
        "flash (a fused kernel: no seq x seq matrix kept) or standard (softmax(QK^T)V keeps "
        "the seq x seq probabilities).", panel=_RUN)] = "flash"
    zero_stage: Annotated[int, Field(ge=0, le=3), Opt(
        "ZeRO stage: 0 none, 1 optimizer states sharded, 2 and gradients, 3 and weights "
        "(FSDP).", flag="--zero", panel=_RUN)] = 0
    gpus: Annotated[int, Field(ge=1), Opt("Data-parallel GPUs (ZeRO shards over them).",
                                          panel=_RUN)] = 1
    memory_bytes: Annotated[int | None, Field(gt=0), Opt(
        "Memory per GPU such as 80GiB: whether the step fits, the largest batch and seq that "
        "do.", flag="--memory", parse="bytes", default_text="the GPU's, on a GPU",
        panel=_RUN)] = None
    mfu: Annotated[float, Field(gt=0, le=1), Opt(
        "Model FLOPs utilization the step time assumes (0-1].", panel=_RUN)] = 0.4
    measure: Annotated[bool, Opt(
        "Train the model here under none / every / sqrt checkpointing and show predicted vs "
        "measured: a --layers, --batch and --seq that run here, with activations well above "
        "~15 MiB (the CPU runtime's own scratch buffers, not modelled, dominate smaller "
        "steps).", flag="--validate",
        negatable=False, panel=_VALIDATE)] = False
    device: Annotated[Device, Opt("Where --validate trains.", panel=_VALIDATE)] = None
    seed: Seed = 0
    _arch: Any = PrivateAttr(None)
    _name: str = PrivateAttr("")
    _spec: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        return v if v is None or v in SIZES else checked_hf_config(v)

    @field_validator("hf_config")
    @classmethod
    def _buildable(cls, v: str | None) -> str | None:
        return checked_hf_config(v)

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        optim_registry.get(v)  # a one-line error naming the choices
        return v

    def model_post_init(self, context: Any) -> None:
        self._arch, self._name, self._spec = resolve_architecture(self)

    @property
    def arch(self) -> Any:
        """The resolved widths (train.memory_model.Arch)."""
        return self._arch

    @property
    def model_name(self) -> str:
        return self._name


def resolve_architecture(cfg: EstimateConfig) -> tuple[Any, str, dict[str, Any]]:
    """(widths, name, how --validate builds it): the preset, built-in size or config.json at
    its --layers depth, then the explicit widths over it; explicit widths alone are a Llama
    block (the built-in model's layout, untied head)."""
    from llmbench.models.hf import load_config
    from llmbench.train.memory_model import Arch

    if cfg.model and cfg.hf_config:
        raise UsageError("give --model or --hf-config, not both")
    explicit = {k: v for k, v in {"hidden": cfg.hidden, "intermediate": cfg.intermediate,
                                  "heads": cfg.heads, "kv_heads": cfg.kv_heads,
                                  "head_dim": cfg.head_dim, "vocab": cfg.vocab}.items()
                if v is not None}
    spec: dict[str, Any] = {}
    if cfg.model in SIZES:
        arch = Arch.from_size(cfg.model, **({"n_layers": cfg.layers} if cfg.layers else {}))
        name, spec = cfg.model, {"model": cfg.model}
    elif cfg.hf_config or cfg.model or not explicit:
        source = cfg.hf_config or cfg.model or "llama-3-8b"
        hf = load_config(source, layers=cfg.layers)
        arch, name = Arch.from_hf(hf), hf.name
        spec = hf_params(source)
    else:
        missing = [f"--{k}" for k in ("hidden", "intermediate", "heads", "vocab")
                   if k not in explicit] + ([] if cfg.layers else ["--layers"])
        if missing:
            raise UsageError(f"without --model or --hf-config, give {', '.join(missing)}")
        arch = Arch(hidden=explicit["hidden"], intermediate=explicit["intermediate"],
                    layers=cfg.layers, heads=explicit["heads"],
                    kv_heads=explicit.get("kv_heads", explicit["heads"]),
                    head_dim=explicit.get("head_dim", explicit["hidden"] // explicit["heads"]),
                    vocab=explicit["vocab"], family="llama", tied_embeddings=False)
        return _checked(arch), "custom", {}
    if explicit:
        if "heads" in explicit and "kv_heads" not in explicit:
            explicit["kv_heads"] = explicit["heads"]
        if "head_dim" not in explicit and ("hidden" in explicit or "heads" in explicit):
            explicit["head_dim"] = explicit.get("hidden", arch.hidden) // explicit.get(
                "heads", arch.heads)
        name, spec = f"{name} (modified)", {}
        arch = dataclasses.replace(arch, **explicit)
    return _checked(arch), name, spec


def _checked(arch: Any) -> Any:
    if arch.heads % arch.kv_heads:
        raise UsageError(f"--kv-heads {arch.kv_heads} does not divide --heads {arch.heads}")
    return arch


class EstimateCase(TrainingCase):
    """A --validate case: the model trained here under one checkpoint policy."""

    policy: str
    layers: int
    segments: list[list[int]]
    autocast: Literal["bf16", "fp16"] | None = None
    live_tensors: bool = True


class PolicyRow(BaseModel):
    model_config = RECORD

    policy: str
    activation_bytes: int
    peak_bytes: float
    hardware_flops_per_token: float
    checkpointed_layers: int


class EstimateSummary(BaseModel):
    """What one GPU holds and does per step (`train.footprint`)."""

    model_config = RECORD

    model: str
    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    per_gpu: dict[str, Any]
    activation_parts: dict[str, int]
    by_policy: list[PolicyRow]
    peak_tflops: float | None = None
    peak_source: str | None = None
    compute_dtype: str
    step_time_s: float | None = None
    tokens_per_s: float | None = None
    tokens_per_s_all_gpus: float | None = None
    memory_bytes: int | None = None
    fits: bool | None = None
    max_batch: int | None = None
    max_seq: int | None = None
    validation_note: str | None = None


def measured_form(precision: str, mixed: str) -> tuple[str, str | None, str]:
    """What --validate trains for a precision: (parameter dtype, autocast, the layout whose
    model states it checks). torch has no master-weight optimizer, so the zero layout is
    measured as pure half-precision weights (the same activations)."""
    if precision == "fp32":
        return "fp32", None, "fp32"
    if precision == "bf16":
        return "bf16", None, "bf16"
    half = precision.split("-")[0]
    if mixed == "autocast":
        return "fp32", half, precision
    return half, None, half


class EstimateBenchmark(Benchmark[EstimateConfig]):
    name = "estimate"
    help = """Training memory and speed per GPU: will it fit, how fast will it go?

    Weights, gradients and optimizer states under ZeRO, activations (per layer and total, for
    the checkpoint policy and attention kind), logits and loss, the backward's temporary peak;
    FLOPs per token, step time and tokens/s at an MFU of the profile's peak (--profile sm90:
    H100) or a `llmbench peak` calibration; fit in --memory, the largest batch and seq.
    --validate trains the model here and prints predicted vs measured.
    """
    renderer = "llmbench.report.estimate:render"
    plot = "llmbench.report.plots:estimate"
    config_type = EstimateConfig
    params_type = EstimateCase
    summary_type = EstimateSummary
    metrics = (
        *CheckpointBenchmark.metrics,
        Metric("predicted_activation_bytes", "B", "info", "activations, predicted"),
        Metric("activation_error_pct", "%", "info",
               "(predicted - measured) / measured activations", derived=True),
        Metric("predicted_peak_bytes", "B", "info", "step peak, predicted"),
        Metric("peak_error_pct", "%", "info", "(predicted - measured) / measured step peak",
               derived=True),
        Metric("predicted_state_bytes", "B", "info", "weights + gradients + optimizer states"),
        Metric("states_match", "1", "info", "predicted model states equal the tensors' bytes",
               derived=True),
        Metric("within_tolerance", "1", "info",
               "activations within 10 % and the step peak within 15 % of measured",
               derived=True),
    )
    case_target = "llmbench.benches.checkpoint:run_case"

    def resolve(self, config: EstimateConfig, hw: HardwareInfo) -> EstimateConfig:
        if config.measure:
            if not config._spec:
                raise UsageError("--validate trains a built-in size or an --hf-config (not "
                                 "explicit widths)")
            config = config.model_copy(update={"device": usable_device(config.device, hw)})
        return config

    def plan(self, config: EstimateConfig, ctx: PlanContext) -> list[CasePlan]:
        if not config.measure:
            return []
        from llmbench.train.checkpointing import segments

        dtype, autocast, _ = measured_form(config.precision, config.mixed_layout)
        arch = config.arch
        plans = []
        for policy in VALIDATED_POLICIES:
            segs = [list(s) for s in segments(policy, arch.layers, config.every)]
            params = {**config._spec, "batch": config.batch, "seq": config.seq,
                      "device": config.device, "layers": arch.layers,
                      "attention": "sdpa" if config.attention == "flash" else "standard",
                      "param_dtype": dtype, "autocast": autocast, "policy": policy,
                      "segments": segs, "live_tensors": True}
            plans.append(CasePlan(name=f"validate/{policy}", params=params,
                                  run_args={"seed": config.seed, "lr": 1e-3,
                                            "timing": ONE_STEP.model_dump()}))
        return plans

    def summarize(self, config: EstimateConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        from llmbench.core import roofline
        from llmbench.train import footprint as fp

        arch = config.arch
        x = fp.Inputs(batch=config.batch, seq=config.seq, precision=config.precision,
                      mixed=config.mixed_layout, optimizer=config.optimizer,
                      policy=config.checkpoint, every=config.every, attention=config.attention,
                      zero_stage=config.zero_stage, gpus=config.gpus)
        f = fp.footprint(arch, x)
        dtype = fp.compute_dtype(config.precision)
        device = "cuda" if ctx.profile.kind == "cuda" else "cpu"
        ceil = roofline.ceilings(ctx.profile, ctx.hw, device, dtype)
        tokens = config.batch * config.seq
        speed = fp.timing(f["flops_per_token"], tokens, ceil.peak_tflops, config.mfu)
        memory = config.memory_bytes or _gpu_memory(ctx)
        fit = fp.fit(arch, x, memory) if memory else {}
        summary = {
            "model": config.model_name, "params": f["params"], "layers": arch.layers,
            "hidden": arch.hidden, "heads": arch.heads, "kv_heads": arch.kv_heads,
            "head_dim": arch.head_dim, "intermediate": arch.intermediate, "vocab": arch.vocab,
            "per_gpu": {k: v for k, v in f.items() if k != "activation_parts"},
            "activation_parts": f["activation_parts"], "by_policy": fp.by_policy(arch, x),
            "peak_tflops": ceil.peak_tflops, "peak_source": ceil.source,
            "compute_dtype": dtype, **speed,
            "tokens_per_s_all_gpus": speed["tokens_per_s"] * config.gpus if speed else None,
            "memory_bytes": memory, **fit,
        }
        if config.measure:
            cases = [_compared(config, c) for c in cases]
            _, _, checked = measured_form(config.precision, config.mixed_layout)
            if checked != config.precision:
                summary["validation_note"] = (
                    f"{config.precision} in the zero layout is measured as pure {checked} "
                    "weights (torch has no master-weight optimizer): the same activations; the "
                    f"model states checked are torch's {checked} layout")
        return cases, summary


def _gpu_memory(ctx: PlanContext) -> int | None:
    """The GPU's own memory when the estimate runs on one."""
    if ctx.device != "cuda" or not ctx.hw.gpus:
        return None
    return ctx.hw.gpus[0].memory_total_bytes


def _compared(config: EstimateConfig, case: CaseResult) -> CaseResult:
    """A --validate case with its predictions and their errors."""
    if not case.ok:
        return case
    from llmbench.train import footprint as fp
    from llmbench.train import memory_model as mm

    p = case.params
    arch = config.arch
    pred = mm.predict(arch, batch=p["batch"], seq=p["seq"], param_dtype=p["param_dtype"],
                      autocast=p.get("autocast"), attention=config.attention,
                      segments=[tuple(s) for s in p["segments"]],
                      allocator="tensors" if p.get("live_tensors") else "rss")
    form = measured_form(config.precision, config.mixed_layout)[2]
    states = fp.model_states(arch, "adamw", fp.layout(form, "autocast"))
    m = dict(case.metrics)
    measured_states = m["weights_bytes"] + m["gradients_bytes"] + m["state_bytes"]
    act_err = 100.0 * (pred.activation_bytes / m["activation_memory_bytes"] - 1)
    peak_err = 100.0 * (pred.step_peak_bytes / m["peak_memory_bytes"] - 1)
    m.update(predicted_activation_bytes=pred.activation_bytes, activation_error_pct=act_err,
             predicted_peak_bytes=pred.step_peak_bytes, peak_error_pct=peak_err,
             predicted_state_bytes=states.total,
             states_match=states.total == measured_states,
             within_tolerance=abs(act_err) <= ACTIVATION_TOLERANCE_PCT
             and abs(peak_err) <= PEAK_TOLERANCE_PCT)
    return case.model_copy(update={"metrics": m})


__all__ = ["POLICIES", "EstimateBenchmark", "EstimateConfig"]
