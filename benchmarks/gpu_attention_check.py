"""The Triton kernel on a real GPU: correctness in bf16, then speed against torch's flash.

1. Correctness: llmbench's Triton attention in bf16 against an fp32 SDPA-math reference, forward
   and gradients, for causal / non-causal, GQA, MQA, a sliding window and a packed varlen batch.
2. Speed: forward causal at batch 4, 16 heads, head dim 128, seq 8192 (bf16), TFLOP/s of the
   Triton kernel (the profile's tile) against SDPA's flash backend in the same run; targets
   >= 0.9x forward and >= 0.7x forward + backward.

    python benchmarks/gpu_attention_check.py            # needs a CUDA GPU and triton
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmbench import kernels
from llmbench.core.hardware import detect
from llmbench.core.profiles import select_profile
from llmbench.core.timing import TimingPolicy, measure
from llmbench.kernels.problem import AttentionProblem, attention_flops


def reference(q, k, v, causal, window=None):  # noqa: ANN001, ANN201
    q, k, v = (t.float() for t in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = q.shape[2]
    mask = None
    if causal or window is not None:
        i = torch.arange(s, device=q.device)
        mask = i[None, :] <= i[:, None]
        if window is not None:
            mask &= i[None, :] >= i[:, None] - window
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def correctness(tri, tile) -> bool:  # noqa: ANN001
    ok = True
    torch.manual_seed(0)
    print(f"{'shape':<44} {'out err':>9} {'grad err':>9}")
    for b, h, kvh, s, d, causal, window in [(2, 8, 8, 1000, 64, True, None),
                                            (2, 8, 8, 777, 128, False, None),
                                            (1, 16, 4, 2048, 128, True, None),
                                            (1, 16, 1, 1536, 64, True, None),
                                            (1, 8, 2, 2048, 128, True, 256)]:
        q = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(b, kvh, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(b, kvh, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(q)
        out = tri.triton_attention(q, k, v, causal=causal, window=window, **tile)
        grads = torch.autograd.grad(out, (q, k, v), do)
        qr, kr, vr = (t.detach().float().requires_grad_() for t in (q, k, v))
        ref = reference(qr, kr, vr, causal, window)
        ref_grads = torch.autograd.grad(ref, (qr, kr, vr), do.float())
        err = (out.float() - ref).abs().max().item()
        gerr = max((g.float() - r).abs().max().item() for g, r in zip(grads, ref_grads,
                                                                       strict=True))
        good = err < 2e-2 and gerr < 5e-2
        ok &= good
        print(f"b{b} h{h} kv{kvh} s{s} d{d} causal={causal} window={window}".ljust(44)
              + f" {err:9.2e} {gerr:9.2e} {'ok' if good else 'FAIL'}")
    lengths = [300, 1200, 57, 2048]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                      device="cuda")
    q = torch.randn(sum(lengths), 8, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(sum(lengths), 2, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = tri.triton_varlen_attention(q, k, v, cu, max(lengths), causal=True, **tile)
    worst = 0.0
    for i in range(len(lengths)):
        sl = slice(int(cu[i]), int(cu[i + 1]))
        ref = reference(*(t[sl].transpose(0, 1).unsqueeze(0) for t in (q, k, v)), True)
        worst = max(worst, (out[sl].transpose(0, 1).float() - ref[0]).abs().max().item())
    ok &= worst < 2e-2
    verdict = "ok" if worst < 2e-2 else "FAIL"
    print(f"{'varlen ' + str(lengths):<44} {worst:9.2e} {'-':>9} {verdict}")
    return ok


def _medians(tri, tile, mode: str) -> tuple[float, float, float]:  # noqa: ANN001
    """(FLOPs, sdpa-flash median ms, triton median ms) at the headline shape."""
    b, h, s, d = 4, 16, 8192, 128
    backward = mode == "fwd+bwd"
    q, k, v, do = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16,
                               requires_grad=backward and i < 3) for i in range(4))

    def flash() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def triton_fn() -> torch.Tensor:
        return tri.triton_attention(q, k, v, causal=True, **tile)

    def step(fn):  # noqa: ANN001, ANN202
        def call() -> None:
            if not backward:
                with torch.no_grad():
                    fn()
                return
            for t in (q, k, v):
                t.grad = None
            fn().backward(do)
        return call

    policy = TimingPolicy(max_time_s=5.0)
    flops = attention_flops(AttentionProblem(batch=b, heads=h, kv_heads=h, seq=s, head_dim=d,
                                             dtype="bf16", causal=True, mode=mode,
                                             device="cuda"))
    return (flops, measure(step(flash), device="cuda", policy=policy).median,
            measure(step(triton_fn), device="cuda", policy=policy).median)


def speed(tri, tile) -> bool:  # noqa: ANN001
    ok = True
    for mode, target in (("fwd", 0.9), ("fwd+bwd", 0.7)):
        flops, t_flash, t_tri = _medians(tri, tile, mode)
        ratio = t_flash / t_tri
        ok &= ratio >= target
        print(f"{mode:<8} sdpa-flash {flops / t_flash / 1e9:8.1f} TFLOP/s   triton "
              f"{flops / t_tri / 1e9:8.1f} TFLOP/s   ratio {ratio:.2f} (target >= {target}) "
              f"{'ok' if ratio >= target else 'MISS'}")
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check here")
        return 2
    hw = detect()
    choice = select_profile(hw)
    t = choice.profile.tile_for(128)
    tile = {"block_m": t.block_m, "block_n": t.block_n, "num_warps": t.num_warps,
            "num_stages": t.num_stages}
    print(f"{hw.gpu.name} (sm{hw.gpu.compute_capability[0]}{hw.gpu.compute_capability[1]}), "
          f"torch {torch.__version__}, profile {choice.profile.name} ({choice.reason}), "
          f"tile {tile}")
    tri = kernels.get("triton").load().__module__
    module = sys.modules[tri]
    good = correctness(module, tile)
    fast = speed(module, tile)
    print("correctness", "OK" if good else "FAIL", "| speed targets", "met" if fast else "missed")
    return 0 if good and fast else 1


if __name__ == "__main__":
    sys.exit(main())
