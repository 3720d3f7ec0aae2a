"""`llmbench attention --varlen`: packed variable-length batches against padding to the longest.

A batch of sequences of different lengths can be packed end to end (total tokens x heads x dim,
with cu_seqlens marking where each starts: flash_attn_varlen_func, llmbench's Triton kernel), or
padded to the longest and masked (torch SDPA with a boolean mask, as a model without varlen
support does it). The padded run computes scores for every padded position; the share of its
FLOPs that is padding is reported next to the measured time and memory of each.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from llmbench import kernels
from llmbench.core.benchmark import CasePlan, PlanContext
from llmbench.core.dtypes import torch_dtype
from llmbench.core.errors import UsageError
from llmbench.core.profiles import AttentionTile
from llmbench.core.results import CaseResult
from llmbench.kernels.problem import AttentionProblem, attended_pairs

# case label -> the registry implementation whose packed form it runs (None: padded SDPA)
VARLEN_CASES = {"triton-varlen": "triton", "flash-attn-varlen": "flash-attn", "sdpa-padded": None}


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
    """Forward FLOPs of the batch: each sequence's pairs, or the longest one's for every row
    when padded (4 * pairs * heads * head_dim, as for dense attention)."""
    def pairs(n: int) -> float:
        return attended_pairs(n, causal=causal, window=window)

    total = len(lengths) * pairs(max(lengths)) if padded else sum(pairs(n) for n in lengths)
    return 4.0 * heads * head_dim * total


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
                     peak: float | None) -> tuple[list[CaseResult], dict[str, Any]]:
    lengths = config.varlen
    kw = {"heads": config.heads, "head_dim": config.head_dim, "causal": config.causal,
          "window": config.window}
    useful = flops(lengths, padded=False, **kw)
    padded = flops(lengths, padded=True, **kw)
    out = []
    for case in cases:
        metrics = dict(case.metrics)
        if case.ok and peak and "throughput_tflops" in metrics:
            metrics["peak_utilization_pct"] = 100.0 * metrics["throughput_tflops"] / peak
        out.append(case.model_copy(update={"metrics": metrics}))
    return out, {"lengths": lengths, "total_tokens": sum(lengths), "longest": max(lengths),
                 "useful_flops": useful, "padded_flops": padded,
                 "padded_flops_wasted_pct": 100.0 * (1 - useful / padded),
                 "peak_tflops": peak}


# ------------------------------------------------------------------ one case, in the child


def run_varlen_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llmbench.core.memory import measure_peak
    from llmbench.core.timing import TimingPolicy, measure
    from llmbench.kernels.reference import reference_attention

    p = payload["params"]
    lengths, heads, kvh, d = p["varlen"], p["heads"], p["kv_heads"], p["head_dim"]
    device = torch.device("cuda:0" if p["device"] == "cuda" else "cpu")
    dtype = torch_dtype(p["dtype"])
    backward = p["mode"] == "fwd+bwd"
    scale = 1.0 / math.sqrt(d)
    total, longest, batch = sum(lengths), max(lengths), len(lengths)
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    cu = torch.tensor(starts, dtype=torch.int32, device=device)
    gen = torch.Generator().manual_seed(payload["seed"])
    q, k, v, do = (torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
                   for shape in ((total, heads, d), (total, kvh, d), (total, kvh, d),
                                 (total, heads, d)))
    tile = {key: p[key] for key in ("block_m", "block_n", "num_warps", "num_stages") if key in p}
    window = p.get("window")

    if p["impl"] == "sdpa-padded":
        def pad(x: torch.Tensor) -> torch.Tensor:
            out = x.new_zeros((batch, longest, x.shape[1], d))
            for i, n in enumerate(lengths):
                out[i, :n] = x[starts[i]:starts[i] + n]
            return out.transpose(1, 2).contiguous()  # (batch, heads, longest, dim)

        qp, kp, vp, dop = (pad(t) for t in (q, k, v, do))
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
        inputs = [t.requires_grad_(backward and i < 3) for i, t in enumerate((qp, kp, vp))]

        def attend() -> torch.Tensor:
            import torch.nn.functional as F

            return F.scaled_dot_product_attention(*inputs, attn_mask=allowed, scale=scale,
                                                  enable_gqa=kvh != heads)

        grad_out = dop

        def unpack(o: torch.Tensor) -> torch.Tensor:
            o = o.transpose(1, 2)
            return torch.cat([o[i, :n] for i, n in enumerate(lengths)])
    else:
        fn = kernels.get({"triton-varlen": "triton",
                          "flash-attn-varlen": "flash-attn"}[p["impl"]]).load_varlen()
        inputs = [t.requires_grad_(backward and i < 3) for i, t in enumerate((q, k, v))]

        def attend() -> torch.Tensor:
            return fn(*inputs, cu, longest, causal=p["causal"], scale=scale, window=window,
                      **tile)

        grad_out = do

        def unpack(o: torch.Tensor) -> torch.Tensor:
            return o

    def step() -> torch.Tensor:
        if not backward:
            with torch.no_grad():
                return attend()
        for t in inputs:
            t.grad = None
        out = attend()
        out.backward(grad_out)
        return out.detach()

    step()
    for t in inputs:
        t.grad = None
    t0 = time.perf_counter()
    out, peak = measure_peak(step, device=p["device"])
    memory_call_ms = (time.perf_counter() - t0) * 1e3
    packed = unpack(out).double()
    worst = 0.0
    for i, n in enumerate(lengths):  # each sequence against its own fp64 reference
        sl = slice(starts[i], starts[i] + n)
        ref = reference_attention(*(t[sl].transpose(0, 1).unsqueeze(0).detach()
                                    for t in (q, k, v)), causal=p["causal"], scale=scale,
                                  window=window)
        worst = max(worst, (packed[sl].transpose(0, 1) - ref[0]).abs().max().item())
    del out, packed
    prior = [memory_call_ms] if p["device"] == "cpu" and memory_call_ms >= 100 else None
    stats = measure(step, device=p["device"], prior_samples_ms=prior,
                    policy=TimingPolicy(**{**payload["timing"], "warmup_s": 0.0,
                                           "min_warmup_runs": 0}))
    kw = {"heads": heads, "head_dim": d, "causal": p["causal"], "window": window}
    useful = flops(lengths, padded=False, **kw) * (3.5 if backward else 1.0)
    computed = flops(lengths, padded=p["impl"] == "sdpa-padded", **kw) * (
        3.5 if backward else 1.0)
    return {
        "time_ms": stats.model_dump(),
        # Effective throughput: the FLOPs the batch needs, whatever the run computed.
        "throughput_tflops": useful / (stats.median / 1e3) / 1e12,
        "peak_memory_bytes": peak.peak_bytes,
        "max_abs_error": worst,
        "flops_needed": useful,
        "flops_computed": computed,
        "wasted_flops_pct": 100.0 * (1 - useful / computed),
    }
