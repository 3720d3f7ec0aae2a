"""`llmbench checkpoint`: what activation checkpointing saves and what it costs.

Policies (llmbench.train.checkpointing): none, every layer, every k-th layer, sqrt(L)-layer
segments. Per policy and depth: activation memory (held between forward and backward), peak
memory of a whole step, step time; against `none`: overhead % and memory saved %.

Over a sweep of three or more depths, the exponent k of activation memory ~ c + a * L^k per
policy (none ~1, sqrt ~0.5). c, the memory that does not grow with depth (embedding output,
logits, loss), is measured, not fitted: a one-layer model with that layer checkpointed holds c
plus one layer input, whose size (batch x seq x width x 4 bytes) is known exactly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from llmbench.benches.training import (
    ACTIVATIONS,
    STEP_PEAK,
    STEP_ROOFLINE,
    TOKENS_PER_S,
    Batch,
    Model,
    ParamDtype,
    RooflineUsed,
    Seq,
    TrainingCase,
    TrainingConfig,
    case_params,
    resolve_device,
    run_args,
)
from llmbench.core import roofline
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.fit import power_law_exponent
from llmbench.core.hardware import HardwareInfo
from llmbench.core.results import CaseResult
from llmbench.train.checkpointing import POLICIES, segments


class CheckpointConfig(TrainingConfig):
    model: Model = "mini"
    batch: Batch = 4
    seq: Seq = 256
    layers: Annotated[list[int], Field(min_length=1), Opt(
        "Depth(s): 16 | 4,8,16 | 4:32 (doubling). A sweep of 3+ depths fits the exponent of "
        "memory in depth.", parse="sweep")] = [16]
    policies: Annotated[list[str] | None, Opt(
        f"{', '.join(POLICIES)}.", default_text="all")] = None
    every: Annotated[int, Field(ge=1), Opt("k of the every-k policy.")] = 2
    param_dtype: ParamDtype = "auto"

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError(f"layers must be at least 1, got {min(v)}")
        return sorted(set(v))

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str] | None) -> list[str] | None:
        for p in v or []:
            if p not in POLICIES:
                raise ValueError(f"unknown policy {p!r} (choose from {', '.join(POLICIES)})")
        return list(dict.fromkeys(v)) if v else None


class CheckpointCase(TrainingCase):
    policy: str  # a policy's label (every-2, ...), or depth-independent for the reference case
    layers: int
    segments: list[list[int]]
    autocast: Literal["bf16", "fp16"] | None = None  # estimate --validate's mixed precision
    # estimate --validate: on a CPU, the resident set follows the live tensors
    # (core.memory.rss_follows_tensors), so the step peak reads as a GPU allocator counts it
    live_tensors: bool = False


# The model states a step holds, counted from their tensors.
MODEL_STATES = (Metric("weights_bytes", "B", "info", "the parameters' bytes"),
                Metric("gradients_bytes", "B", "info", "the gradients' bytes"),
                Metric("state_bytes", "B", "info", "the optimizer states' bytes"))


class ActivationFit(BaseModel):
    """One policy's exponent of activation memory in depth."""

    model_config = RECORD

    layers: list[int]
    exponent: float | None = None
    exponent_raw: float | None = None
    depth_independent_bytes: int | None = None


class CheckpointSummary(BaseModel):
    model_config = RECORD

    activation_fit: dict[str, ActivationFit] = Field(default_factory=dict)
    roofline: RooflineUsed = Field(default_factory=dict)


def policy_label(policy: str, every: int) -> str:
    return f"every-{every}" if policy == "every-k" else policy


class CheckpointBenchmark(Benchmark[CheckpointConfig]):
    name = "checkpoint"
    help = """Activation checkpointing: memory saved and time it costs, per policy and depth.

    The built-in model at --model's width, or a Hugging Face architecture (--hf-config), with
    --layers layers; each policy recomputes the activations of its checkpointed segments
    during the backward pass (torch.utils.checkpoint, use_reentrant=False; a Hugging Face
    model checkpoints single layers with transformers' own activation checkpointing).
    """
    renderer = "llmbench.report.training:render_checkpoint"
    plot = "llmbench.report.plots:checkpoint"
    config_type = CheckpointConfig
    params_type = CheckpointCase
    summary_type = CheckpointSummary
    metrics = (
        TOKENS_PER_S,
        ACTIVATIONS,
        *STEP_ROOFLINE,
        Metric("activation_peak_bytes", "B", "lower",
               "peak of forward + backward, recomputation included"),
        STEP_PEAK,
        Metric("overhead_pct", "%", "lower", "step time added vs no checkpointing",
               derived=True),
        Metric("activation_saved_pct", "%", "higher",
               "activation memory saved vs no checkpointing", derived=True),
        Metric("peak_saved_pct", "%", "higher", "peak memory saved vs no checkpointing",
               derived=True),
        Metric("checkpointed_layers", "1", "info", "layers inside checkpointed segments"),
        Metric("segments", "1", "info", "checkpointed segments"),
        *MODEL_STATES,
    )
    case_target = "llmbench.benches.checkpoint:run_case"

    def resolve(self, config: CheckpointConfig, hw: HardwareInfo) -> CheckpointConfig:
        return config.model_copy(update={"device": resolve_device(config, hw)})

    def plan(self, config: CheckpointConfig, ctx: PlanContext) -> list[CasePlan]:
        plans = []
        dtype = config.trained_dtype(config.param_dtype)
        if len(config.layers) >= 3:
            plans.append(CasePlan(
                name="depth-independent/layers=1",
                params=case_params(config, policy="depth-independent", layers=1,
                                   segments=[[0, 1]], param_dtype=dtype),
                run_args=run_args(config)))
        for n_layers in config.layers:
            for policy in config.policies or POLICIES:
                segs = segments(policy, n_layers, config.every)
                label = policy_label(policy, config.every)
                plans.append(CasePlan(
                    name=f"{label}/layers={n_layers}",
                    params=case_params(config, policy=label, layers=n_layers,
                                       segments=[list(s) for s in segs], param_dtype=dtype),
                    run_args=run_args(config)))
        return plans

    def summarize(self, config: CheckpointConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        none = {c.params["layers"]: c for c in cases if c.ok and c.params["policy"] == "none"}
        out = []
        for case in cases:
            metrics = dict(case.metrics)
            base = none.get(case.params["layers"])
            if case.ok and base is not None:
                if case.time() and base.time():
                    metrics["overhead_pct"] = 100.0 * (case.time().median / base.time().median
                                                       - 1)
                for key, name in (("activation_memory_bytes", "activation_saved_pct"),
                                  ("peak_memory_bytes", "peak_saved_pct")):
                    if metrics.get(key) and base.metrics.get(key):
                        metrics[name] = 100.0 * (1 - metrics[key] / base.metrics[key])
            out.append(case.model_copy(update={"metrics": metrics}))
        out, used = roofline.apply(out, ctx, "flops_per_step",
                                   lambda c: c.params.get("param_dtype") or "fp32")
        return out, {"activation_fit": _fits(config, out), "roofline": used}


def _fits(config: CheckpointConfig, cases: list[CaseResult]) -> dict[str, Any]:
    """Per policy: the exponent of activation memory in depth, with and without removing the
    measured depth-independent part."""
    ref = next((c for c in cases if c.ok and c.params["policy"] == "depth-independent"), None)
    constant = None
    if ref is not None:
        from llmbench.models.sizes import SIZES

        width = config.hf.hidden_size if config.hf else SIZES[config.model]["dim"]
        elem = 2 if ref.params.get("param_dtype") == "bf16" else 4
        layer_input = config.batch * (config.seq - 1) * width * elem
        constant = max(0, ref.metrics["activation_memory_bytes"] - layer_input)
    fits: dict[str, Any] = {}
    for policy in dict.fromkeys(c.params["policy"] for c in cases):
        cs = sorted((c for c in cases if c.ok and c.params["policy"] == policy),
                    key=lambda c: c.params["layers"])
        if policy == "depth-independent" or len(cs) < 2:
            continue
        xs = [float(c.params["layers"]) for c in cs]
        ys = [float(c.metrics["activation_memory_bytes"]) for c in cs]
        fits[policy] = {
            "layers": [int(x) for x in xs],
            "exponent": power_law_exponent(xs, [y - constant for y in ys])
            if constant is not None else None,
            "exponent_raw": power_law_exponent(xs, ys),
            "depth_independent_bytes": constant,
        }
    return fits


# ------------------------------------------------------------------ one case, in the child


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llmbench.core.memory import measure_peak, rss_follows_tensors
    from llmbench.core.timing import measure
    from llmbench.train.case import setup
    from llmbench.train.loop import (
        Precision,
        activation_step,
        forward_loss,
        gradient_bytes,
        parameter_bytes,
        train_step,
    )
    from llmbench.train.optimizers import measured_state_bytes
    from llmbench.train.traffic import step_figures

    p = payload["params"]
    if p.get("live_tensors") and p["device"] == "cpu":
        rss_follows_tensors()  # estimate --validate: the peak as live tensors (a GPU's view)
    s = setup(payload)
    optimizer = torch.optim.AdamW(s.model.parameters(), lr=s.lr)
    tokens = s.batches[0]
    # `llmbench estimate --validate` runs this protocol under autocast too (fp32 weights).
    autocast = Precision(p["autocast"], s.device) if p.get("autocast") else None
    # What the layers save without checkpointing: the recomputed ones save it again in the
    # backward (the step's traffic, train.traffic).
    _, saved_without = activation_step(s.model, optimizer, tokens, device=s.device,
                                       precision=autocast)
    s.model.set_checkpointing([tuple(seg) for seg in p["segments"]])

    def step() -> object:
        return train_step(s.model, optimizer, tokens, precision=autocast)

    for _ in range(2):  # warm-up: checkpointing's first call allocates more than later ones
        step()
    _, activation = activation_step(s.model, optimizer, tokens, device=s.device,
                                    precision=autocast)
    _, peak = measure_peak(step, device=s.device)
    params = list(s.model.parameters())
    states = {"weights_bytes": parameter_bytes(s.model), "gradients_bytes": gradient_bytes(s.model),
              "state_bytes": measured_state_bytes(optimizer, params)[0]}

    # The activation high-water mark of forward + backward, recomputation included: gradients
    # stay allocated (zeroed in place), and the optimizer does not run.
    optimizer.zero_grad(set_to_none=False)

    def forward_backward() -> None:
        forward_loss(s.model, tokens, autocast).backward()

    _, act_peak = measure_peak(forward_backward, device=s.device)
    stats = measure(step, device=s.device, policy=s.timing)
    recomputed = sum(b - a for a, b in p["segments"])
    return {
        "time_ms": stats.model_dump(),
        "tokens_per_s": s.tokens_per_step / (stats.median / 1e3),
        "activation_memory_bytes": activation,
        "activation_peak_bytes": act_peak.peak_bytes,
        "peak_memory_bytes": peak.peak_bytes,
        "checkpointed_layers": recomputed,
        "segments": len(p["segments"]),
        **states,
        **step_figures(s.model, optimizer, p["batch"], p["seq"],
                       saved_without if recomputed else activation,
                       recomputed_layers=recomputed, segments=len(p["segments"])),
    }
