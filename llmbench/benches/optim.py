"""`llmbench optim`: optimizer state memory and step time, measured and predicted.

Measured (cases, on a built-in model size or an --hf-config architecture): after two training
steps, the optimizer's state bytes counted from its real tensors, next to the figure predicted
from the parameters' shapes (they must be equal); the time of optimizer.step(); the whole
training-memory breakdown (weights, gradients, states, activations) in the chosen precision,
and a whole step's peak.

Analytic (summary): the same breakdown for any parameter count: a built-in size, a preset
(llama-3-8b, ...) or a size such as 7b, next to the bytes-per-parameter rule users know.

`compare_decay`: Adam without decay, Adam + L2 and AdamW from one initialisation on the same
batches; how much weight decay removed from each weight, grouped by that weight's gradient
scale, shows that L2 decay is divided by Adam's denominator and decoupled decay is not.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from llmbench.benches.training import (
    ACTIVATIONS,
    MODEL_PANEL,
    STEP_PEAK,
    STEP_ROOFLINE,
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
from llmbench.core.errors import UsageError
from llmbench.core.flags import MODEL, flag_like
from llmbench.core.hardware import HardwareInfo, dtype_unsupported
from llmbench.core.results import CaseResult
from llmbench.models.presets import PRESETS
from llmbench.models.sizes import SIZES
from llmbench.train import optimizers as optim_registry

Precision = Literal["auto", "fp32", "bf16-mixed", "fp16-mixed", "bf16"]

# Bytes per parameter of weights and gradients, and of each optimizer state element, for each
# precision as llmbench runs it: autocast keeps fp32 weights, gradients and states; pure bf16
# keeps all three in bf16 (torch optimizers store state in the parameter's dtype).
PRECISION_BYTES: dict[str, tuple[int, int, int]] = {
    "fp32": (4, 4, 4), "bf16-mixed": (4, 4, 4), "fp16-mixed": (4, 4, 4), "bf16": (2, 2, 2)}


class OptimConfig(TrainingConfig):
    model: Annotated[str, flag_like(
        MODEL, help=f"A built-in size ({', '.join(SIZES)}) is measured; a preset or a size "
        "such as 7b gives the analytic table only.", panel=MODEL_PANEL)] = "tiny"
    optimizers: Annotated[list[str] | None, Opt(
        f"{', '.join(optim_registry.OPTIMIZERS)}.", default_text="all")] = None
    precision: Annotated[Precision, Opt(
        "fp32; autocast with fp32 weights (-mixed); or pure bf16 weights and states. auto: "
        "bf16 for an --hf-config whose torch_dtype is bfloat16, fp32 otherwise.")] = "auto"
    weight_decay: Annotated[float, Field(ge=0), Opt("Weight decay.")] = 0.1
    compare_decay: Annotated[bool, Opt(
        "Also train Adam + L2 vs AdamW and show how their weight decay differs.",
        negatable=False)] = False
    decay_steps: Annotated[int, Field(gt=1), Opt("Steps of --compare-decay's runs.")] = 100

    @field_validator("model")
    @classmethod
    def _known_size(cls, v: str) -> str:
        if v in SIZES or v in PRESETS or parse_param_count(v) is not None:
            return v
        raise ValueError(f"unknown model {v!r} (a built-in size: {', '.join(SIZES)}; a "
                         f"preset: {', '.join(PRESETS)}; or a size such as 7b or 350m)")

    @field_validator("optimizers")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if name not in optim_registry.OPTIMIZERS:
                raise ValueError(f"unknown optimizer {name!r} (choose from "
                                 f"{', '.join(optim_registry.OPTIMIZERS)})")
        return list(dict.fromkeys(v)) if v else None


class OptimCase(TrainingCase):
    """A case's params: an optimizer measured, or the decay comparison (with its steps)."""

    optimizer: str
    precision: Precision
    steps: int | None = None


class AnalyticRow(BaseModel):
    """One optimizer's analytic training memory (`analytic_breakdown`)."""

    model_config = RECORD

    optimizer: str
    params: int
    weights_bytes: int
    gradients_bytes: int
    states_bytes: int | None = None  # None: factored (adafactor)
    total_bytes: int
    bytes_per_param: float
    rule: str


class OptimSummary(BaseModel):
    model_config = RECORD

    params: int
    analytic: list[AnalyticRow] = Field(default_factory=list)
    rule_of_thumb: str = ""
    roofline: RooflineUsed = Field(default_factory=dict)


def parse_param_count(text: str) -> int | None:
    """'7b' -> 7e9, '1.5B' -> 1.5e9, '350m' -> 3.5e8; None if it is not such a size."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mMbB])\s*", text)
    if not m:
        return None
    return int(float(m.group(1)) * (1e9 if m.group(2) in "bB" else 1e6))


def parameter_count(model: str) -> int:
    if model in PRESETS:
        return PRESETS[model].params
    if model in SIZES:
        from llmbench.models.sizes import build

        return build(model).num_parameters()
    count = parse_param_count(model)
    assert count is not None
    return count


def analytic_breakdown(params: int, optimizer: str, precision: str) -> dict[str, Any]:
    """Weights, gradients and optimizer states for `params` parameters (activations depend on
    batch and sequence and are measured, not predicted here)."""
    w, g, s = PRECISION_BYTES[precision]
    spec = optim_registry.get(optimizer)
    if optimizer == "adafactor":
        states = None  # factored: depends on the matrix shapes, not the count alone
    elif optimizer == "adam8bit":
        states = 2 * params
    else:
        states = spec.elementwise_states * s * params
    total = w * params + g * params + (states or 0)
    return {"optimizer": optimizer, "params": params, "weights_bytes": w * params,
            "gradients_bytes": g * params, "states_bytes": states, "total_bytes": total,
            "bytes_per_param": total / params, "rule": spec.rule}


class OptimBenchmark(Benchmark[OptimConfig]):
    name = "optim"
    help = """Optimizer state memory (measured from the state tensors) and step time.

    Also the whole training-memory breakdown (weights, gradients, states, activations) and an
    analytic table for any parameter count, next to the bytes-per-parameter rule users know.
    """
    renderer = "llmbench.report.training:render_optim"
    plot = "llmbench.report.plots:optim"
    config_type = OptimConfig
    params_type = OptimCase
    summary_type = OptimSummary
    metrics = (
        *STEP_ROOFLINE,
        Metric("params", "1", "info", "the model's parameters"),
        Metric("state_bytes", "B", "lower", "the optimizer's state, from its tensors"),
        Metric("analytic_state_bytes", "B", "info", "the state predicted from the shapes"),
        Metric("state_matches_analytic", "1", "info", "the state's bytes equal the prediction",
               derived=True),
        Metric("state_bytes_per_param", "B/param", "info", "state bytes per parameter",
               derived=True),
        Metric("elementwise_state_bytes_per_param", "B/param", "info",
               "bytes per parameter of the state tensors shaped like their parameter",
               derived=True),
        Metric("weights_bytes", "B", "lower", "the weights' bytes"),
        Metric("gradients_bytes", "B", "lower", "the gradients' bytes"),
        ACTIVATIONS,
        Metric("training_memory_bytes", "B", "lower",
               "weights + gradients + state + activations", derived=True),
        STEP_PEAK,
        Metric("training_peak_bytes", "B", "lower",
               "weights + state + a training step's peak", derived=True),
        # --compare-decay
        Metric("weight_decay", "1", "info", "the weight decay of the comparison"),
        Metric("steps", "1", "info", "training steps of each run"),
        Metric("*_final_loss", "nats", "lower", "the run's loss at its last step"),
        Metric("*_weight_norm", "1", "info", "the L2 norm of all weights at the end"),
        Metric("*_decay_ratio_*", "x", "info",
               "one step's decay of each weight / AdamW's -lr * wd * w (quantiles, means)"),
    )
    case_target = "llmbench.benches.optim:run_case"

    def resolve(self, config: OptimConfig, hw: HardwareInfo) -> OptimConfig:
        device = resolve_device(config, hw)
        if config.precision == "auto":
            config = config.model_copy(update={"precision": config.trained_dtype()})
        half = {"bf16-mixed": "bf16", "fp16-mixed": "fp16", "bf16": "bf16"}.get(config.precision)
        if half:
            why = dtype_unsupported(device, half, hw)
            if why:
                raise UsageError(f"--precision {config.precision}: {why}")
        if config.compare_decay and (config.model not in SIZES or config.hf is not None):
            raise UsageError("--compare-decay trains a built-in size: use --model "
                             f"{' / '.join(SIZES)}")
        return config.model_copy(update={"device": device})

    def plan(self, config: OptimConfig, ctx: PlanContext) -> list[CasePlan]:
        if config.hf is None and config.model not in SIZES:
            return []  # a preset or a size like 7b: the analytic table only
        plans = [CasePlan(
            name=name, params=case_params(config, optimizer=name, precision=config.precision),
            run_args=run_args(config, weight_decay=config.weight_decay),
            unavailable=optim_registry.get(name).unavailable())
            for name in config.optimizers or optim_registry.OPTIMIZERS]
        if config.compare_decay:
            plans.append(CasePlan(
                name="decay-comparison",
                params=case_params(config, optimizer="decay-comparison",
                                   precision="fp32", steps=config.decay_steps),
                run_args=run_args(config, weight_decay=config.weight_decay)))
        return plans

    def summarize(self, config: OptimConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        params = config.hf_params() if config.hf is not None else parameter_count(config.model)
        names = config.optimizers or list(optim_registry.OPTIMIZERS)
        # The optimizer's step computes in the weights' dtype (bf16 only when pure bf16).
        cases, used = roofline.apply(cases, ctx, "flops_per_step",
                                     lambda c: "bf16" if c.params["precision"] == "bf16"
                                     else "fp32")
        return cases, {
            "roofline": used,
            "params": params,
            "analytic": [analytic_breakdown(params, n, config.precision) for n in names],
            "rule_of_thumb": "mixed-precision Adam: 16 B/param = 2 (fp16 weights) + 2 (fp16 "
                             "gradients) + 4 (fp32 master weights) + 4 + 4 (Adam moments); "
                             "torch autocast keeps fp32 weights and gradients instead: 4 + 4 + 8",
        }


# ------------------------------------------------------------------ one case, in the child


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    p = payload["params"]
    if p["optimizer"] == "decay-comparison":
        return _compare_decay(payload)
    import torch

    from llmbench.core.memory import measure_peak
    from llmbench.core.timing import measure
    from llmbench.train.case import setup
    from llmbench.train.loop import Precision as Autocast
    from llmbench.train.loop import activation_step, gradient_bytes, parameter_bytes, train_step
    from llmbench.train.traffic import optimizer_bytes

    s = setup(payload)
    precision = p["precision"]
    if precision == "bf16":
        s.model.to(torch.bfloat16)
    autocast = Autocast(precision.split("-")[0], s.device) if precision.endswith("-mixed") \
        else None
    scaler = autocast.scaler() if autocast else None
    spec = optim_registry.get(p["optimizer"])
    params = list(s.model.parameters())
    optimizer = spec.build(params, lr=s.lr, weight_decay=payload["weight_decay"])
    tokens = s.batches[0]

    def step() -> object:
        return train_step(s.model, optimizer, tokens, precision=autocast, scaler=scaler)

    for _ in range(2):  # states exist after the first step; the second is a warm-up
        step()
    state_bytes, elementwise = optim_registry.measured_state_bytes(optimizer, params)
    analytic = optim_registry.analytic_state_bytes(
        spec.name, [(tuple(q.shape), q.element_size()) for q in params])
    n = sum(q.numel() for q in params)
    weights, grads = parameter_bytes(s.model), gradient_bytes(s.model)

    _, activation = activation_step(s.model, optimizer, tokens, device=s.device,
                                    precision=autocast, scaler=scaler)
    _, peak = measure_peak(step, device=s.device)
    # Time the optimizer's own step; the gradients of the last training step stay in place.
    stats = measure(optimizer.step, device=s.device, policy=s.timing)
    return {
        "time_ms": stats.model_dump(),
        "params": n,
        "state_bytes": state_bytes,
        "analytic_state_bytes": analytic,
        "state_matches_analytic": None if analytic is None else state_bytes == analytic,
        "state_bytes_per_param": state_bytes / n,
        "elementwise_state_bytes_per_param": elementwise / n,
        "weights_bytes": weights,
        "gradients_bytes": grads,
        "activation_memory_bytes": activation,
        "training_memory_bytes": weights + grads + state_bytes + activation,
        "peak_memory_bytes": peak.peak_bytes,
        # Weights and states exist before the step; gradients are freed at its start, so the
        # step's own peak counts them.
        "training_peak_bytes": weights + state_bytes + peak.peak_bytes,
        # The timed call is the optimizer's step: element-wise work only (no counted FLOPs).
        "flops_per_step": 0.0,
        "bytes_moved": optimizer_bytes(params, state_bytes),
    }


def _compare_decay(payload: dict[str, Any]) -> dict[str, Any]:
    """Adam + L2 against AdamW, two ways.

    Trajectories: Adam without decay, Adam + L2 and AdamW train from one initialisation on the
    same batches for `steps` steps; final loss and weight norm of each.

    One step, isolated: from the no-decay run's final state (weights, gradients, moments), take
    one Adam step and one AdamW step with and without weight decay. The difference is what decay
    did to each weight, which is divided by AdamW's -lr * wd * w: AdamW's ratio is exactly 1
    everywhere; Adam + L2's is divided by its sqrt(v) denominator, so weights with small
    gradients are decayed far more than weights with large ones.
    """
    p, wd = payload["params"], payload["weight_decay"]
    out: dict[str, Any] = {"weight_decay": wd, "steps": p["steps"]}
    model, opt, lr = _decay_trajectories(payload, out)
    out.update(_decay_ratios(model, opt, lr, wd))
    return out


def _decay_trajectories(payload: dict[str, Any], out: dict[str, Any]) -> tuple[Any, Any, float]:
    """Adam without decay, Adam + L2 and AdamW trained from one initialisation: each one's
    final loss and weight norm into `out`; returns the no-decay run's model, optimizer, lr."""
    import torch

    from llmbench.train.case import setup
    from llmbench.train.loop import train_step

    p, wd = payload["params"], payload["weight_decay"]
    final = None
    for label, cls, decay in (("adam", torch.optim.Adam, 0.0),
                              ("adam+l2", torch.optim.Adam, wd),
                              ("adamw", torch.optim.AdamW, wd)):
        s = setup(payload, batches=p["steps"])
        opt = cls(s.model.parameters(), lr=s.lr, weight_decay=decay)
        losses = [train_step(s.model, opt, t).loss for t in s.batches]
        out[f"{label}_final_loss"] = losses[-1]
        out[f"{label}_weight_norm"] = float(torch.cat(
            [q.detach().flatten() for q in s.model.parameters()]).norm())
        if label == "adam":
            final = (s.model, opt, s.lr)
    return final


def _decay_ratios(model: Any, opt: Any, lr: float, wd: float) -> dict[str, float]:
    """One Adam + L2 and one AdamW step from the same state, with and without decay: what
    decay removed from each weight matrix entry over AdamW's lr * wd * w (quantiles, and the
    means over the quarter of weights with the smallest and the largest second moments)."""
    import copy

    import torch

    out: dict[str, float] = {}
    matrices = [q for q in model.parameters() if q.dim() >= 2 and q.grad is not None]
    state = opt.state_dict()
    index = {id(q): i for i, q in enumerate(model.parameters())}

    def one_step(cls: type, decay: float) -> torch.Tensor:
        copies = [q.detach().clone().requires_grad_() for q in model.parameters()]
        for c, q in zip(copies, model.parameters(), strict=True):
            c.grad = None if q.grad is None else q.grad.detach().clone()
        o = cls(copies, lr=lr)
        o.load_state_dict(copy.deepcopy(state))  # step() updates the moments in place
        for group in o.param_groups:
            group["weight_decay"] = decay
        o.step()
        return torch.cat([copies[index[id(q)]].detach().flatten() for q in matrices])

    w = torch.cat([q.detach().flatten() for q in matrices])
    v = torch.cat([state["state"][index[id(q)]]["exp_avg_sq"].flatten() for q in matrices])
    expected = -lr * wd * w  # AdamW's decoupled decay of each weight
    keep = expected.abs() > 1e-12
    order = v[keep].argsort()
    quarter = max(1, order.numel() // 4)
    for label, cls in (("adam+l2", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        ratio = ((one_step(cls, wd) - one_step(cls, 0.0))[keep] / expected[keep])
        q = torch.quantile(ratio.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        out[f"{label}_decay_ratio_p10"] = float(q[0])
        out[f"{label}_decay_ratio_median"] = float(q[1])
        out[f"{label}_decay_ratio_p90"] = float(q[2])
        out[f"{label}_decay_ratio_small_grads"] = float(ratio[order[:quarter]].mean())
        out[f"{label}_decay_ratio_large_grads"] = float(ratio[order[-quarter:]].mean())
    return out
