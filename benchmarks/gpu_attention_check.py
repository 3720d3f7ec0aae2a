"""The Triton kernel on a real GPU: correctness in the GPU's default dtype, then speed against
torch's flash.

1. Correctness: llmbench's Triton attention in bf16 (fp16 before compute capability 8.0) against
   an fp32 SDPA-math reference, forward and gradients, for causal / non-causal, GQA, MQA, a
   sliding window, keys longer and shorter than queries (bottom-right causal alignment) and a
   packed varlen batch; the profile's forward and backward tiles, and the shared memory Triton
   compiled each kernel with.
2. Speed: forward causal at batch 4, 16 heads, head dim 128, seq 8192, TFLOP/s of the Triton
   kernel (the profile's tiles) against SDPA's flash backend in the same run; targets >= 0.9x
   forward and >= 0.7x forward + backward. Skipped where SDPA's flash backend cannot run
   (compute capability below 8.0).

    python benchmarks/gpu_attention_check.py            # needs a CUDA GPU and triton

Exit 0 when correct and fast enough, 1 when not, 2 without a GPU; on a GPU the Triton kernel
does not support (compute capability below 7.5) it says so and exits 0.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmbench import kernels
from llmbench.core.hardware import default_dtype, detect
from llmbench.core.profiles import select_profile
from llmbench.core.timing import TimingPolicy, measure
from llmbench.kernels.problem import AttentionProblem, attention_flops

DTYPE = torch.bfloat16


def reference(q, k, v, causal, window=None):  # noqa: ANN001, ANN201
    """fp32 SDPA math with an explicit bottom-right mask; rows that see no key are zero."""
    q, k, v = (t.float() for t in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    sq, sk = q.shape[2], k.shape[2]
    mask = None
    if causal or window is not None:
        pos = torch.arange(sq, device=q.device) + (sk - sq)  # each query's key position
        keys = torch.arange(sk, device=q.device)
        mask = keys[None, :] <= pos[:, None]
        if window is not None:
            mask &= keys[None, :] >= pos[:, None] - window
    with sdpa_kernel(SDPBackend.MATH):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask is not None:
        out = torch.where(mask.any(-1)[:, None], out, torch.zeros_like(out))
    return out


def correctness(tri, tile) -> bool:  # noqa: ANN001
    ok = True
    torch.manual_seed(0)
    print(f"{'shape':<44} {'out err':>9} {'grad err':>9}")
    for b, h, kvh, s, sk, d, causal, window in [(2, 8, 8, 1000, 1000, 64, True, None),
                                                (2, 8, 8, 777, 777, 128, False, None),
                                                (1, 16, 4, 2048, 2048, 128, True, None),
                                                (1, 16, 1, 1536, 1536, 64, True, None),
                                                (1, 8, 2, 2048, 2048, 128, True, 256),
                                                (2, 8, 2, 1, 4096, 128, True, None),
                                                (1, 8, 8, 300, 1200, 128, True, None),
                                                (1, 8, 8, 1200, 300, 64, True, None)]:
        q = torch.randn(b, h, s, d, device="cuda", dtype=DTYPE, requires_grad=True)
        k = torch.randn(b, kvh, sk, d, device="cuda", dtype=DTYPE, requires_grad=True)
        v = torch.randn(b, kvh, sk, d, device="cuda", dtype=DTYPE, requires_grad=True)
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
        print(f"b{b} h{h} kv{kvh} s{s}/{sk} d{d} causal={causal} window={window}".ljust(44)
              + f" {err:9.2e} {gerr:9.2e} {'ok' if good else 'FAIL'}")
    lengths = [300, 1200, 57, 2048]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                      device="cuda")
    q = torch.randn(sum(lengths), 8, 128, device="cuda", dtype=DTYPE)
    k = torch.randn(sum(lengths), 2, 128, device="cuda", dtype=DTYPE)
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
    q, k, v, do = (torch.randn(b, h, s, d, device="cuda", dtype=DTYPE,
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
                                             dtype=_DTYPE_NAMES[DTYPE], causal=True, mode=mode,
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


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def compiled_shared_memory(tri) -> str:  # noqa: ANN001
    """The shared memory Triton compiled each kernel of the last launches with (what
    `llmbench tune attention --compile-only` predicts without a GPU)."""
    parts = []
    for name in ("_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"):
        kernel = getattr(tri, name)
        cache = getattr(kernel, "device_caches", None) or getattr(kernel, "cache", None) or {}
        shared = set()
        for entry in cache.values():
            table = entry[0] if isinstance(entry, tuple) else entry
            for compiled in getattr(table, "values", lambda: [])():
                meta = getattr(compiled, "metadata", None)
                if meta is not None:
                    shared.add(int(meta.shared))
        parts.append(f"{name} {sorted(shared) if shared else '?'}")
    return "compiled shared memory (bytes): " + "; ".join(parts)


def main() -> int:
    global DTYPE
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check here")
        return 2
    hw = detect()
    impl = kernels.get("triton")
    problem = AttentionProblem(batch=1, heads=8, kv_heads=8, seq=1024, head_dim=128,
                               dtype=default_dtype("cuda", hw), causal=True, mode="fwd+bwd",
                               device="cuda", compute_capability=hw.gpu.compute_capability)
    why = impl.unavailable(problem)
    if why:
        print(f"triton unavailable on {hw.gpu.name}: {why}")
        return 0
    DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}[problem.dtype]
    choice = select_profile(hw)
    t = choice.profile.tile_for(128)
    tile = {**t.forward.launch(), **t.backward().kwargs()}
    print(f"{hw.gpu.name} (sm{hw.gpu.compute_capability[0]}{hw.gpu.compute_capability[1]}), "
          f"torch {torch.__version__}, {problem.dtype}, profile {choice.profile.name} "
          f"({choice.reason}), tiles {tile}")
    module = sys.modules[impl.load().__module__]
    good = correctness(module, tile)
    print(compiled_shared_memory(sys.modules["llmbench.kernels.triton_flash_kernels"]))
    if kernels.get("sdpa-flash").unavailable(problem):
        print("speed: skipped,", kernels.get("sdpa-flash").unavailable(problem))
        fast = True
    else:
        fast = speed(module, tile)
    print("correctness", "OK" if good else "FAIL", "| speed targets", "met" if fast else "missed")
    return 0 if good and fast else 1


if __name__ == "__main__":
    sys.exit(main())
