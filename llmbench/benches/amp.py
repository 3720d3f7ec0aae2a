"""`llmbench amp`: AMP vs FP32 on real training steps of the built-in model (or an
--hf-config architecture, its weights in fp32 as autocast expects).

Variants: fp32; fp16 autocast with torch.amp.GradScaler (dynamic loss scaling); bf16 autocast
without a scaler. Each trains the same model from the same seed on the same batches for
`steps` steps with AdamW, timing every step after three warm-up steps (step 1 is measured for
peak memory, step 2 for activation memory). Across variants: the final loss against fp32's.

`demo="underflow"` adds a case that shows fp16 gradient underflow on the model's own
gradients: the share of gradient elements that are non-zero in fp32 but zero after an fp16
autocast backward pass, without loss scaling and with the scaler's scale.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from llmbench.benches.training import (
    ACTIVATIONS,
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
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.dtypes import torch_dtype
from llmbench.core.errors import UsageError
from llmbench.core.hardware import HardwareInfo, dtype_unsupported
from llmbench.core.results import CaseResult

Variant = Literal["fp32", "fp16", "bf16"]
VARIANTS: tuple[str, ...] = ("fp32", "fp16", "bf16")
WARMUP_STEPS = 3


class AmpConfig(TrainingConfig):
    variants: Annotated[list[Variant] | None, Opt(
        "fp32, fp16 (autocast + GradScaler), bf16 (autocast).",
        default_text="all the device has")] = None
    steps: Annotated[int, Field(ge=WARMUP_STEPS + 2), Opt("Training steps per variant.")] = 50
    loss_tolerance: Annotated[float, Field(gt=0), Opt(
        "Allowed |final loss - fp32's| in nats.")] = 0.05
    demo: Annotated[Literal["underflow"] | None, Opt(
        "underflow: fp16 gradient underflow without and with loss scaling.")] = None


class AmpCase(TrainingCase):
    """A case's params: a training variant, or the underflow demo (no steps)."""

    variant: Literal["fp32", "fp16", "bf16", "underflow-demo"]
    steps: int | None = None


class AmpParity(BaseModel):
    """One variant's final loss against fp32's."""

    model_config = RECORD

    loss_diff: float
    within_tolerance: bool


class AmpSummary(BaseModel):
    model_config = RECORD

    loss_tolerance: float | None = None
    parity: dict[str, AmpParity] = Field(default_factory=dict)
    warmup_steps: int | None = None
    roofline: RooflineUsed = Field(default_factory=dict)


def variant_unsupported(device: str, variant: str, hw: HardwareInfo) -> str | None:
    if variant == "fp32":
        return None
    why = dtype_unsupported(device, variant, hw)
    if why:
        return why
    import torch

    kind = "cuda" if device == "cuda" else "cpu"
    try:
        with torch.autocast(device_type=kind, dtype=torch_dtype(variant)):
            pass
        if variant == "fp16":
            torch.amp.GradScaler(kind)
    except (RuntimeError, ValueError, AssertionError) as exc:
        return f"torch {torch.__version__} has no {variant} autocast on {kind}: {exc}"
    return None


class AmpBenchmark(Benchmark[AmpConfig]):
    name = "amp"
    help = """\
    AMP vs FP32: step time, tokens/s, peak and activation memory, loss parity, loss scaling.

    Every variant trains the same model from the same seed on the same batches with AdamW.
    fp16 uses dynamic loss scaling (torch.amp.GradScaler), whose scale trace and skipped steps
    are reported; bf16 needs no scaler.
    """
    renderer = "llmbench.report.training:render_amp"
    plot = "llmbench.report.plots:amp"
    config_type = AmpConfig
    params_type = AmpCase
    summary_type = AmpSummary
    metrics = (
        TOKENS_PER_S,
        STEP_PEAK,
        ACTIVATIONS,
        *STEP_ROOFLINE,
        Metric("activation_saved_pct", "%", "higher", "activation memory saved vs fp32",
               derived=True),
        Metric("final_loss", "nats", "lower", "the loss at the last step"),
        Metric("first_loss", "nats", "info", "the loss at the first step, before training"),
        Metric("loss_curve", "nats", "info", "the loss at every step"),
        Metric("loss_diff_vs_fp32", "nats", "info", "final loss - fp32's", derived=True),
        Metric("skipped_steps", "1", "info", "steps the scaler skipped (inf/NaN gradients)"),
        Metric("skip_reason", "", "info", "why and where the scaler skipped steps"),
        Metric("scale_trace", "1", "info", "the loss scale at every step"),
        Metric("final_scale", "1", "info", "the loss scale at the end"),
        # --demo underflow
        Metric("loss_scale", "1", "info", "the scaler's initial scale"),
        Metric("gradient_elements", "1", "info", "gradient elements of the model"),
        Metric("nonzero_fp32_elements", "1", "info", "gradient elements non-zero in fp32"),
        Metric("zeroed_fraction_*", "1", "info",
               "share of the non-zero fp32 gradient elements that fp16 zeroes"),
        Metric("nonfinite_*", "1", "info", "non-finite fp16 gradient elements"),
        Metric("below_fp16_subnormal_fraction", "1", "info",
               "share of gradient magnitudes below fp16's smallest subnormal"),
        Metric("below_fp16_normal_fraction", "1", "info",
               "share of gradient magnitudes below fp16's smallest normal"),
        Metric("median_abs_gradient", "abs", "info", "median |gradient| in fp32"),
    )
    case_target = "llmbench.benches.amp:run_case"

    def resolve(self, config: AmpConfig, hw: HardwareInfo) -> AmpConfig:
        device = resolve_device(config, hw)
        for v in config.variants or []:
            why = variant_unsupported(device, v, hw)
            if why:
                raise UsageError(f"--variants {v}: {why}")
        if config.demo and variant_unsupported(device, "fp16", hw):
            raise UsageError(f"--demo underflow needs fp16: "
                             f"{variant_unsupported(device, 'fp16', hw)}")
        return config.model_copy(update={"device": device})

    def plan(self, config: AmpConfig, ctx: PlanContext) -> list[CasePlan]:
        plans = []
        for v in config.variants or VARIANTS:
            label = "fp16+scaler" if v == "fp16" else v
            plans.append(CasePlan(
                name=label, params=case_params(config, variant=v, steps=config.steps),
                run_args=run_args(config),
                unavailable=variant_unsupported(config.device, v, ctx.hw)))
        if config.demo == "underflow":
            plans.append(CasePlan(name="underflow-demo",
                                  params=case_params(config, variant="underflow-demo"),
                                  run_args=run_args(config)))
        return plans

    def summarize(self, config: AmpConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        fp32 = next((c for c in cases if c.ok and c.params["variant"] == "fp32"), None)
        parity: dict[str, Any] = {}
        out = []
        for case in cases:
            metrics = dict(case.metrics)
            if case.ok and fp32 is not None and "final_loss" in metrics:
                diff = metrics["final_loss"] - fp32.metrics["final_loss"]
                metrics["loss_diff_vs_fp32"] = diff
                act, base = metrics.get("activation_memory_bytes"), \
                    fp32.metrics.get("activation_memory_bytes")
                if act and base:
                    metrics["activation_saved_pct"] = 100.0 * (1 - act / base)
                parity[case.name] = {"loss_diff": diff,
                                     "within_tolerance": abs(diff) <= config.loss_tolerance}
            out.append(case.model_copy(update={"metrics": metrics}))
        out, used = roofline.apply(out, ctx, "flops_per_step",
                                   lambda c: c.params["variant"])  # fp32, bf16, fp16
        return out, {"loss_tolerance": config.loss_tolerance, "parity": parity,
                     "warmup_steps": WARMUP_STEPS, "roofline": used}


# ------------------------------------------------------------------ one case, in the child


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    if payload["params"]["variant"] == "underflow-demo":
        return _underflow_demo(payload)
    from llmbench.core.memory import measure_peak
    from llmbench.core.timing import TimeStats, stopwatch
    from llmbench.train.case import setup
    from llmbench.train.loop import Precision, activation_step, train_step
    from llmbench.train.traffic import step_figures

    p = payload["params"]
    s = setup(payload, batches=p["steps"])
    precision = Precision(p["variant"], s.device)
    scaler = precision.scaler()
    import torch

    optimizer = torch.optim.AdamW(s.model.parameters(), lr=s.lr)
    clock = stopwatch(s.device)
    losses, scales, skipped_at, samples = [], [], [], []
    peak = activation = None
    for i, tokens in enumerate(s.batches):
        if i == 1:
            result, mem = measure_peak(
                lambda t=tokens: train_step(s.model, optimizer, t, precision=precision,
                                            scaler=scaler), device=s.device)
            peak = mem.peak_bytes
        elif i == 2:
            result, activation = activation_step(s.model, optimizer, tokens, device=s.device,
                                                 precision=precision, scaler=scaler)
        else:
            clock.start()
            result = train_step(s.model, optimizer, tokens, precision=precision, scaler=scaler)
            elapsed = clock.stop_ms()
            if i >= WARMUP_STEPS:
                samples.append(elapsed)
        losses.append(result.loss)
        if result.scale is not None:
            scales.append(result.scale)
        if result.skipped:
            skipped_at.append(i)
    stats = TimeStats.from_samples(samples)
    metrics: dict[str, Any] = {
        "time_ms": stats.model_dump(),
        "tokens_per_s": s.tokens_per_step / (stats.median / 1e3),
        "peak_memory_bytes": peak,
        "activation_memory_bytes": activation,
        "final_loss": losses[-1],
        "first_loss": losses[0],
        "loss_curve": losses,
        "skipped_steps": len(skipped_at),
        **step_figures(s.model, optimizer, p["batch"], p["seq"], activation or 0),
    }
    if scaler is not None:
        metrics.update(_scaler_metrics(scaler, scales, skipped_at))
    from llmbench.core import tracing

    # --trace: one more step, after every figure above (it moves the weights and the scale).
    tracing.after_timing(lambda: train_step(s.model, optimizer, s.batches[-1],
                                            precision=precision, scaler=scaler), s.device)
    return metrics


def _scaler_metrics(scaler: Any, scales: list[float], skipped_at: list[int]) -> dict[str, Any]:
    """fp16's loss scaling: the scale after every step, the last one, and why steps were
    skipped."""
    out: dict[str, Any] = {"scale_trace": scales, "final_scale": float(scaler.get_scale())}
    if skipped_at:
        out["skip_reason"] = (
            f"inf/NaN gradients: the scaler skipped the update and halved the scale at "
            f"step(s) {', '.join(map(str, skipped_at[:10]))}"
            + (" ..." if len(skipped_at) > 10 else ""))
    return out


def _underflow_demo(payload: dict[str, Any]) -> dict[str, Any]:
    """Zeroed gradient elements: fp16 autocast backward without and with loss scaling."""
    import torch

    from llmbench.train.case import setup
    from llmbench.train.loop import Precision, forward_loss

    s = setup(payload)
    tokens = s.batches[0]
    fp16 = Precision("fp16", s.device)

    def grads(precision: Precision | None, scale: float = 1.0) -> list[torch.Tensor]:
        s.model.zero_grad(set_to_none=True)
        (forward_loss(s.model, tokens, precision) * scale).backward()
        return [p.grad.detach().float() / scale for p in s.model.parameters()]

    ref = torch.cat([g.flatten() for g in grads(None)])
    nonzero = ref != 0
    scale = float(fp16.scaler().get_scale())
    out: dict[str, Any] = {"loss_scale": scale, "gradient_elements": int(ref.numel()),
                           "nonzero_fp32_elements": int(nonzero.sum())}
    for label, factor in (("unscaled", 1.0), ("scaled", scale)):
        g = torch.cat([x.flatten() for x in grads(fp16, factor)])
        lost = (g == 0) & nonzero
        out[f"zeroed_fraction_{label}"] = float(lost.sum()) / max(1, int(nonzero.sum()))
        out[f"nonfinite_{label}"] = int((~torch.isfinite(g)).sum())
    tiny = torch.finfo(torch.float16)
    mags = ref[nonzero].abs()
    out["below_fp16_subnormal_fraction"] = float((mags < tiny.smallest_normal * tiny.eps)
                                                 .float().mean())
    out["below_fp16_normal_fraction"] = float((mags < tiny.smallest_normal).float().mean())
    out["median_abs_gradient"] = float(mags.median())
    return out
