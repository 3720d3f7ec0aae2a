"""A training run's footprint per GPU, from the model's widths: what `llmbench estimate` prints.

Torch-free arithmetic over `train.memory_model` (activations and the step's temporary peak),
`train.zero` (ZeRO's sharding of the model states, Rajbhandari et al. 2020) and
`train.optimizers` (each optimizer's state per parameter tensor). Sources beside each figure:

- Model states. Weights and gradients in the precision's dtype; the optimizer's states per
  tensor as torch keeps them (`optimizers.analytic_state_bytes`: a 4-byte `step` per tensor for
  Adam, AdamW and Adafactor); mixed precision in the ZeRO paper's layout (`zero` layout: 2-byte
  weights and gradients, a 4-byte fp32 master copy among the optimizer states, K = 12 for Adam)
  or in torch.autocast's (`autocast` layout: fp32 weights, gradients and states, low-precision
  copies of the weights cast per forward). ZeRO stage 1 shards the optimizer states over the
  GPUs, 2 the gradients too, 3 the weights too.
- Activations, logits and the backward's temporary peak: `memory_model` (docs/memory-estimate.md
  derives them; Korthikanti et al. 2022's s*b*h*(34 + 5*a*s/h) is shown beside them).
- FLOPs per token: 6 per matrix-multiply weight (2 forward, 4 backward; Kaplan et al. 2020,
  "6N"), the output head included and the embedding lookup not, plus the attention core, 4 *
  heads * head_dim FLOPs per (query, key) pair forward with causal pairs counted as seq^2 / 2 and
  the backward 2.5x the forward (flash-attention's benchmark convention, `kernels.problem`).
  Recomputed layers add their forward again (hardware FLOPs); the model FLOPs leave it out, as
  MFU does (Chowdhery et al. 2022, appendix B).
- Step time: model FLOPs per step / (peak FLOP/s x MFU), the peak the profile's datasheet
  figure or a `llmbench peak --save` calibration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmbench.kernels.problem import attended_pairs, mode_flops, pairs_flops
from llmbench.train import memory_model as mm
from llmbench.train import optimizers as optim_registry
from llmbench.train import zero
from llmbench.train.checkpointing import POLICIES, segments

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed", "bf16")
LAYOUTS = ("zero", "autocast")


@dataclass(frozen=True)
class Layout:
    """How a precision keeps the model's tensors: bytes per parameter of the weights, the
    gradients and the fp32 master copy, bytes per optimizer-state element, and what the
    forward computes in (the parameters' dtype, and autocast's)."""

    weights: int
    grads: int
    master: int
    state: int
    param_dtype: str
    autocast: str | None


def layout(precision: str, mixed: str = "zero") -> Layout:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if mixed not in LAYOUTS:
        raise ValueError(f"unknown mixed-precision layout {mixed!r} (choose from "
                         f"{', '.join(LAYOUTS)})")
    if precision == "fp32":
        return Layout(4, 4, 0, 4, "fp32", None)
    if precision == "bf16":
        return Layout(2, 2, 0, 2, "bf16", None)
    half = precision.split("-")[0]
    if mixed == "zero":
        return Layout(2, 2, 4, 4, half, None)
    return Layout(4, 4, 0, 4, "fp32", half)


@dataclass(frozen=True)
class ModelStates:
    """Bytes of the model states, unsharded."""

    params: int
    weights: int
    grads: int
    optimizer: int  # the master copy (zero layout) and the optimizer's own states
    step_counters: int  # of which: torch's 4-byte step per parameter tensor

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer


def model_states(arch: mm.Arch, optimizer: str, lay: Layout) -> ModelStates:
    shapes = arch.param_shapes()
    n = sum(math.prod(s) for s in shapes)
    spec = optim_registry.get(optimizer)
    if optimizer == "adam8bit":  # two 1-byte states; bitsandbytes' block scales left out
        states, counters = 2 * n + optim_registry.STEP_BYTES * len(shapes), \
            optim_registry.STEP_BYTES * len(shapes)
    else:
        states = optim_registry.analytic_state_bytes(optimizer, [(s, lay.state) for s in shapes])
        counters = optim_registry.STEP_BYTES * len(shapes) if spec.step_counter else 0
    return ModelStates(params=n, weights=n * lay.weights, grads=n * lay.grads,
                       optimizer=n * lay.master + states, step_counters=counters)


def matmul_weights(arch: mm.Arch) -> int:
    """Weights that take part in a matrix multiply per token: every layer's projections and
    the output head (the embedding lookup is not a multiply; a tied head is the embedding)."""
    return arch.layers * arch.layer_weight_params() + arch.vocab * arch.hidden


def attention_flops_per_token(arch: mm.Arch, seq: int) -> float:
    """The attention core per token, forward + backward, over every layer."""
    core = pairs_flops(attended_pairs(seq, causal=True), heads=arch.heads,
                       head_dim=arch.head_dim)
    return arch.layers * mode_flops(core, "fwd+bwd") / seq


def flops_per_token(arch: mm.Arch, seq: int, recomputed_layers: int = 0) -> dict[str, float]:
    """Model FLOPs per trained token (6N + attention) and hardware FLOPs (the recomputed
    layers' forward again)."""
    model = 6.0 * matmul_weights(arch) + attention_flops_per_token(arch, seq)
    layer_forward = 2.0 * arch.layer_weight_params() + mode_flops(
        pairs_flops(attended_pairs(seq, causal=True), heads=arch.heads,
                    head_dim=arch.head_dim), "fwd") / seq
    return {"model": model, "hardware": model + recomputed_layers * layer_forward,
            "matmul_6n": 6.0 * matmul_weights(arch)}


@dataclass(frozen=True)
class Inputs:
    batch: int  # per GPU (the micro-batch)
    seq: int
    precision: str = "bf16-mixed"
    mixed: str = "zero"
    optimizer: str = "adamw"
    policy: str = "none"
    every: int = 2
    attention: str = "flash"
    zero_stage: int = 0
    gpus: int = 1


def policy_segments(arch: mm.Arch, policy: str, every: int) -> list[tuple[int, int]]:
    return segments(policy, arch.layers, every)


def footprint(arch: mm.Arch, x: Inputs) -> dict[str, Any]:
    """Everything one GPU holds and does in a step of `x`."""
    lay = layout(x.precision, x.mixed)
    states = model_states(arch, x.optimizer, lay)
    # torch's step counters are per parameter tensor on every rank (FSDP shards each tensor)
    weights, grads, optimizer = zero.per_rank_parts(states.weights, states.grads,
                                                    states.optimizer - states.step_counters,
                                                    x.gpus, x.zero_stage)
    optimizer += states.step_counters
    segs = policy_segments(arch, x.policy, x.every)
    kw = dict(batch=x.batch, positions=x.seq, param_dtype=lay.param_dtype,
              autocast=lay.autocast, attention=x.attention)
    layer = mm.layer_activations(arch, **kw)
    act = mm.activation_memory(arch, segments=segs, **kw)
    held = grads / states.grads if states.grads else 1.0
    peak = mm.step_peak(arch, segments=segs, allocator="tensors", grad_fraction=held, **kw)
    recomputed = sum(b - a for a, b in segs)
    flops = flops_per_token(arch, x.seq, recomputed)
    logits = x.batch * x.seq * arch.vocab
    return {
        "params": states.params,
        "weights_bytes": weights, "gradients_bytes": grads, "optimizer_bytes": optimizer,
        "model_state_bytes": weights + grads + optimizer,
        "step_counter_bytes": states.step_counters,
        "bytes_per_param": (states.total - states.step_counters) / states.params,
        "activation_bytes": act.total,
        "activation_layer_bytes": layer.total,
        "activation_parts": {"norms": layer.norms, "attention": layer.attention,
                             "kv": layer.kv, "scores": layer.scores, "mlp": layer.mlp,
                             "weight_copies": layer.weight_copies},
        "activation_kept_inputs_bytes": act.kept_inputs,
        "logits_loss_bytes": act.head + logits * mm.element_widths(
            lay.param_dtype, lay.autocast).compute,
        "backward_peak_bytes": peak.peak - act.total,
        "peak_bytes": weights + grads + optimizer + peak.peak,
        "korthikanti_layer_bytes": mm.korthikanti_layer_bytes(arch.hidden, arch.heads,
                                                              x.batch, x.seq),
        # their 34sbh: the scores' 5as^2b left out (a fused kernel keeps none)
        "korthikanti_flash_layer_bytes": 34 * x.seq * x.batch * arch.hidden,
        "flops_per_token": flops["model"],
        "hardware_flops_per_token": flops["hardware"],
        "flops_6n_per_token": flops["matmul_6n"],
        "checkpointed_layers": recomputed,
        "segments": len(segs),
    }


def compute_dtype(precision: str) -> str:
    """The dtype the matrix multiplies run in (the peak FLOP/s to read)."""
    return {"fp32": "fp32", "bf16": "bf16"}.get(precision, precision.split("-")[0])


def timing(flops_per_token: float, tokens: int, peak_tflops: float | None,
           mfu: float) -> dict[str, float]:
    """Step time and tokens/s per GPU at `mfu` of the peak."""
    if not peak_tflops:
        return {}
    step_s = flops_per_token * tokens / (peak_tflops * 1e12 * mfu)
    return {"step_time_s": step_s, "tokens_per_s": tokens / step_s}


def largest(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest n in [low, high] with fits(n) (fits is monotone: true, then false); None
    when even `low` does not fit."""
    if not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def fit(arch: mm.Arch, x: Inputs, memory_bytes: int, *, max_seq: int | None = None
        ) -> dict[str, Any]:
    """Whether the step fits in `memory_bytes` per GPU, and the largest batch (at x.seq) and
    seq (at x.batch) that do."""
    def peak(**change: int) -> int:
        return footprint(arch, Inputs(**{**vars(x), **change}))["peak_bytes"]

    return {"fits": peak() <= memory_bytes,
            "max_batch": largest(lambda b: peak(batch=b) <= memory_bytes, 1, 1 << 20),
            "max_seq": largest(lambda s: peak(seq=s) <= memory_bytes, 2,
                               max_seq or 1 << 24)}


def by_policy(arch: mm.Arch, x: Inputs) -> list[dict[str, Any]]:
    """Activations, peak and hardware FLOPs of every checkpoint policy, the others as given."""
    rows = []
    for policy in POLICIES:
        f = footprint(arch, Inputs(**{**vars(x), "policy": policy}))
        rows.append({"policy": policy if policy != "every-k" else f"every-{x.every}",
                     "activation_bytes": f["activation_bytes"], "peak_bytes": f["peak_bytes"],
                     "hardware_flops_per_token": f["hardware_flops_per_token"],
                     "checkpointed_layers": f["checkpointed_layers"]})
    return rows
