"""`llmbench attention --varlen`: packed variable-length batches against padding to the longest.

A batch of sequences of different lengths can be packed end to end (total tokens x heads x dim,
with cu_seqlens marking where each starts: flash_attn_varlen_func, llmbench's Triton kernel,
FlexAttention with a document mask), or
padded to the longest and masked (torch SDPA with a boolean mask, as a model without varlen
support does it). The padded run computes scores for every padded position; the share of its
FLOPs that is padding is reported next to the measured time and memory of each.
"""

from __future__ import annotations

import math
import random
from typing import Any

from llmbench import kernels
from llmbench.core.benchmark import CasePlan, PlanContext
from llmbench.core.dtypes import torch_dtype
from llmbench.core.errors import UsageError
from llmbench.core.profiles import AttentionTile
from llmbench.core.results import CaseResult
from llmbench.core.roofline import UTILIZATION, Ceilings, case_figures
from llmbench.core.timing import TimeStats, measure_warmed
from llmbench.kernels.problem import (
    AttentionProblem,
    attended_pairs,
    attention_bytes,
    mode_flops,
    pairs_flops,
)

# case label -> the registry implementation whose packed form it runs (None: padded SDPA)
VARLEN_CASES = {"triton-varlen": "triton", "flash-attn-varlen": "flash-attn",
                "flex-varlen": "flex", "sdpa-padded": None}


def parse_lengths(text: str, *, seed: int = 0) -> list[int]:
    """'128,512,2048' or 'random:COUNT:MIN:MAX' (uniform, seeded) -> sequence lengths."""
    text = text.strip()
    if text.startswith("random:"):
        parts = text.split(":")[1:]
        try:
            count, low, high = (int(x) for x in parts)
        except ValueError:
            raise UsageError(f"--varlen {text!r}: write random:COUNT:MIN:MAX") from None
        if count < 1 or low < 1 or high < low:
            raise UsageError(f"--varlen {text!r}: needs COUNT >= 1 and 1 <= MIN <= MAX")
        rng = random.Random(seed)
        return [rng.randint(low, high) for _ in range(count)]
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--varlen {text!r}: a comma-separated list of lengths, or "
                         "random:COUNT:MIN:MAX") from None
    if not lengths or min(lengths) < 1:
        raise UsageError(f"--varlen {text!r}: lengths must be positive")
    return lengths


def flops(lengths: list[int], *, heads: int, head_dim: int, causal: bool,
          window: int | None, padded: bool) -> float:
    """Forward FLOPs of the batch: each sequence's pairs, or the longest one's for every
    sequence when padded (4 * pairs * heads * head_dim, the pairs counted by dense attention's
    one rule, `attended_pairs`: causal, each sequence is half its full n x n matrix)."""
    def pairs(n: int) -> float:
        return attended_pairs(n, causal=causal, window=window)

    total = len(lengths) * pairs(max(lengths)) if padded else sum(pairs(n) for n in lengths)
    return pairs_flops(total, heads=heads, head_dim=head_dim)


def plan_varlen(config: Any, ctx: PlanContext, tile: AttentionTile) -> list[CasePlan]:
    lengths = config.varlen
    longest = max(lengths)
    plans = []
    for label, impl_name in VARLEN_CASES.items():
        params: dict[str, Any] = {
            "impl": label, "varlen": lengths, "heads": config.heads,
            "kv_heads": config.kv_heads or config.heads, "head_dim": config.head_dim,
            "dtype": config.dtype, "causal": config.causal, "mode": config.mode,
            "device": config.device, "window": config.window}
        unavailable = None
        if impl_name is not None:
            impl = kernels.get(impl_name)
            problem = AttentionProblem(
                batch=len(lengths), heads=config.heads,
                kv_heads=config.kv_heads or config.heads, seq=longest,
                head_dim=config.head_dim, dtype=config.dtype, causal=config.causal,
                mode=config.mode, device=config.device, interpret=config.interpret,
                compute_capability=ctx.hw.gpu.compute_capability if (
                    config.device == "cuda" and ctx.hw.gpu) else None)
            unavailable = impl.unavailable(problem)
            if impl.uses_tile:
                params.update(tile.model_dump(exclude={"head_dim"}))
        plans.append(CasePlan(
            name=f"{label}/{len(lengths)}x(max {longest})/{config.mode}", params=params,
            run_args={"seed": config.seed, "timing": config.timing.model_dump(),
                      "interpret": config.interpret},
            unavailable=unavailable))
    return plans


def summarize_varlen(config: Any, cases: list[CaseResult],
                     ceil: Ceilings) -> tuple[list[CaseResult], dict[str, Any]]:
    lengths = config.varlen
    kw = {"heads": config.heads, "head_dim": config.head_dim, "causal": config.causal,
          "window": config.window}
    useful = flops(lengths, padded=False, **kw)
    padded = flops(lengths, padded=True, **kw)
    out = []
    for case in cases:
        metrics = dict(case.metrics)
        if case.ok:  # placed by the FLOPs it computes; its throughput is the useful ones'
            placed = case_figures(metrics.get("flops_computed"), metrics.get("bytes_moved"),
                                  case, ceil)
            needed = case_figures(metrics.get("flops_needed"), metrics.get("bytes_moved"),
                                  case, ceil)
            metrics.update({**placed, **{k: v for k, v in needed.items() if k in UTILIZATION}})
        out.append(case.model_copy(update={"metrics": metrics}))
    return out, {"lengths": lengths, "total_tokens": sum(lengths), "longest": max(lengths),
                 "useful_flops": useful, "padded_flops": padded,
                 "padded_flops_wasted_pct": 100.0 * (1 - useful / padded),
                 "peak_tflops": ceil.theoretical_tflops, "roofline": ceil.record()}


# ------------------------------------------------------------------ one case, in the child


def run_varlen_case(payload: dict[str, Any]) -> dict[str, Any]:
    from llmbench.benches.attention import first_call_ms, mask_ms, warm_then_peak_live

    p = payload["params"]
    impl = kernels.IMPLS.get(VARLEN_CASES[p["impl"]] or "")
    scale = 1.0 / math.sqrt(p["head_dim"])
    packed = _packed_inputs(p, payload["seed"])
    prepare = _padded_call if p["impl"] == "sdpa-padded" else _varlen_call
    inputs, attend, grad_out, unpack = prepare(p, packed, scale)
    step = _step(attend, inputs, grad_out, backward=p["mode"] == "fwd+bwd")
    compiled = impl is not None and impl.compiles
    compile_ms = first_call_ms(step, p["device"]) if compiled else None
    out, peak, prior = warm_then_peak_live(step, device=p["device"],
                                           before=lambda: _clear_grads(inputs))
    worst = _max_error(p, packed, unpack(out).double(), scale)
    del out
    stats = measure_warmed(step, device=p["device"], policy=payload["timing"],
                           prior_samples_ms=prior)
    metrics = _metrics(p, stats, peak.peak_bytes, worst)
    if compile_ms is not None:
        metrics["compile_ms"] = compile_ms
    builders = impl.mask_builders() if impl is not None else None
    if builders is not None:
        metrics["mask_ms"] = mask_ms(builders.varlen_mask_builder(
            packed["cu"], causal=p["causal"], window=p.get("window")), p["device"],
            payload["timing"])
    return metrics


def _clear_grads(tensors: list[Any]) -> None:
    for t in tensors:
        t.grad = None


def _packed_inputs(p: dict[str, Any], seed: int) -> dict[str, Any]:
    """q, k, v and the output gradient packed end to end (total tokens x heads x dim), the
    sequences' start offsets and cu_seqlens, drawn from `seed` on the CPU."""
    import torch

    lengths, heads, kvh, d = p["varlen"], p["heads"], p["kv_heads"], p["head_dim"]
    device = torch.device("cuda:0" if p["device"] == "cuda" else "cpu")
    dtype = torch_dtype(p["dtype"])
    total = sum(lengths)
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    gen = torch.Generator().manual_seed(seed)
    q, k, v, do = (torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
                   for shape in ((total, heads, d), (total, kvh, d), (total, kvh, d),
                                 (total, heads, d)))
    return {"device": device, "starts": starts, "q": q, "k": k, "v": v, "do": do,
            "cu": torch.tensor(starts, dtype=torch.int32, device=device)}


def _padded_allowed(p: dict[str, Any], device: Any) -> Any:
    """The boolean mask of the padded batch (batch, 1, longest, longest): each row's real keys,
    causal and windowed as asked; padding rows see every real key."""
    import torch

    lengths, window = p["varlen"], p.get("window")
    batch, longest = len(lengths), max(lengths)
    key_ok = torch.arange(longest, device=device)[None, :] < torch.tensor(
        lengths, device=device)[:, None]  # (batch, longest)
    pos = torch.arange(longest, device=device)
    allowed = key_ok[:, None, None, :].expand(batch, 1, longest, longest).clone()
    if p["causal"]:
        allowed &= pos[None, None, None, :] <= pos[None, None, :, None]
    if window is not None:
        allowed &= pos[None, None, None, :] >= pos[None, None, :, None] - window
    # Padding rows see every real key: their output is discarded, but a row with no key at
    # all would be NaN, and NaN times a zero gradient is still NaN in the backward pass.
    pad_row = pos[None, :] >= torch.tensor(lengths, device=device)[:, None]
    allowed |= pad_row[:, None, :, None] & key_ok[:, None, None, :]
    return allowed


def _padded_call(p: dict[str, Any], packed: dict[str, Any], scale: float) -> tuple:
    """sdpa-padded: the inputs padded to the longest and masked; (inputs, attend, output
    gradient, unpack: padded output -> packed)."""
    import torch
    import torch.nn.functional as F

    lengths, starts, d = p["varlen"], packed["starts"], p["head_dim"]
    batch, longest = len(lengths), max(lengths)

    def pad(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((batch, longest, x.shape[1], d))
        for i, n in enumerate(lengths):
            out[i, :n] = x[starts[i]:starts[i] + n]
        return out.transpose(1, 2).contiguous()  # (batch, heads, longest, dim)

    qp, kp, vp, dop = (pad(packed[key]) for key in ("q", "k", "v", "do"))
    allowed = _padded_allowed(p, packed["device"])
    backward = p["mode"] == "fwd+bwd"
    inputs = [t.requires_grad_(backward and i < 3) for i, t in enumerate((qp, kp, vp))]

    def attend() -> torch.Tensor:
        return F.scaled_dot_product_attention(*inputs, attn_mask=allowed, scale=scale,
                                              enable_gqa=p["kv_heads"] != p["heads"])

    def unpack(o: torch.Tensor) -> torch.Tensor:
        o = o.transpose(1, 2)
        return torch.cat([o[i, :n] for i, n in enumerate(lengths)])

    return inputs, attend, dop, unpack


def _varlen_call(p: dict[str, Any], packed: dict[str, Any], scale: float) -> tuple:
    """A packed implementation's varlen function on the packed inputs and cu_seqlens; (inputs,
    attend, output gradient, unpack: the identity)."""
    fn = kernels.get(VARLEN_CASES[p["impl"]]).load_varlen()
    backward = p["mode"] == "fwd+bwd"
    inputs = [t.requires_grad_(backward and i < 3)
              for i, t in enumerate(packed[key] for key in ("q", "k", "v"))]
    tile = {key: p[key] for key in ("block_m", "block_n", "num_warps", "num_stages") if key in p}
    cu, longest = packed["cu"], max(p["varlen"])

    def attend() -> Any:
        return fn(*inputs, cu, longest, causal=p["causal"], scale=scale,
                  window=p.get("window"), **tile)

    return inputs, attend, packed["do"], lambda o: o


def _step(attend: Any, inputs: list[Any], grad_out: Any, *, backward: bool) -> Any:
    """One timed call: the forward under no_grad, or forward and backward with fresh grads."""
    import torch

    def step() -> torch.Tensor:
        if not backward:
            with torch.no_grad():
                return attend()
        for t in inputs:
            t.grad = None
        out = attend()
        out.backward(grad_out)
        return out.detach()

    return step


def _max_error(p: dict[str, Any], packed: dict[str, Any], out: Any, scale: float) -> float:
    """The largest abs difference of the packed output (fp64) from each sequence's own fp64
    reference."""
    from llmbench.kernels.reference import reference_attention

    worst = 0.0
    for start, n in zip(packed["starts"][:-1], p["varlen"], strict=True):
        sl = slice(start, start + n)
        ref = reference_attention(*(packed[key][sl].transpose(0, 1).unsqueeze(0).detach()
                                    for key in ("q", "k", "v")), causal=p["causal"],
                                  scale=scale, window=p.get("window"))
        worst = max(worst, (out[sl].transpose(0, 1) - ref[0]).abs().max().item())
    return worst


def _metrics(p: dict[str, Any], stats: TimeStats, peak_bytes: int,
             worst: float) -> dict[str, Any]:
    kw = {"heads": p["heads"], "head_dim": p["head_dim"], "causal": p["causal"],
          "window": p.get("window")}
    useful = mode_flops(flops(p["varlen"], padded=False, **kw), p["mode"])
    computed = mode_flops(flops(p["varlen"], padded=p["impl"] == "sdpa-padded", **kw),
                          p["mode"])
    return {
        "time_ms": stats.model_dump(),
        # Effective throughput: the FLOPs the batch needs, whatever the run computed.
        "throughput_tflops": useful / (stats.median / 1e3) / 1e12,
        "peak_memory_bytes": peak_bytes,
        "max_abs_error": worst,
        "flops_needed": useful,
        "flops_computed": computed,
        "wasted_flops_pct": 100.0 * (1 - useful / computed),
        "bytes_moved": varlen_bytes(p),
    }


def varlen_bytes(p: dict[str, Any]) -> int:
    """The traffic of a fused kernel (kernels.problem.attention_bytes) over the packed tokens,
    or, padded, over batch x longest plus the boolean mask (batch x longest^2), read by the
    forward and again by the backward."""
    lengths = p["varlen"]
    padded = p["impl"] == "sdpa-padded"
    batch, seq = (len(lengths), max(lengths)) if padded else (1, sum(lengths))
    problem = AttentionProblem(
        batch=batch, heads=p["heads"], kv_heads=p["kv_heads"], seq=seq,
        head_dim=p["head_dim"], dtype=p["dtype"], causal=False, mode=p["mode"],
        device=p["device"])
    mask = batch * seq * seq * (2 if p["mode"] == "fwd+bwd" else 1) if padded else 0
    return attention_bytes(problem, materializes=False) + mask
