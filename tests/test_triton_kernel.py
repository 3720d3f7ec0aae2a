"""llmbench's Triton FlashAttention under TRITON_INTERPRET=1 against an fp64 oracle, and its
kernels compiled for real GPU targets (Triton's compiler and ptxas run without a GPU)."""

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")

FWD_TILE = {"block_m": 16, "block_n": 16, "num_warps": 4, "num_stages": 2}


@pytest.fixture(scope="module")
def tk():
    """The kernel module; conftest turned Triton's interpreter on for the whole session."""
    import llmbench.kernels.triton_flash as module

    assert type(module._fwd_kernel).__name__ == "InterpretedFunction"
    return module


def oracle(q, k, v, causal, window=None):
    """fp64 attention with its mask written from absolute positions. Bottom-right alignment (as
    flash-attn >= 2.1 and KV-cache decoding have it): query row i of s_q sits at key position
    i + s_k - s_q and, causal, sees the keys up to there; a window W keeps keys from position - W
    on. Non-causal rows see every key. A row that sees no key outputs zeros (zero gradients)."""
    s_q, s_k = q.shape[-2], k.shape[-2]
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    position = torch.arange(s_q)[:, None] + (s_k - s_q)
    key = torch.arange(s_k)[None, :]
    keep = torch.ones(s_q, s_k, dtype=torch.bool)
    if causal:
        keep &= key <= position
    if window is not None:
        keep &= key >= position - window
    sees = keep.any(-1, keepdim=True)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    # Rows that see nothing keep finite scores and are zeroed after the softmax: no NaN gradient.
    p = torch.softmax(scores.masked_fill(~keep & sees, float("-inf")), -1) * sees
    return p @ v


def make(shape_q, shape_kv, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(shape_q, generator=g, dtype=torch.float64)
    k = torch.randn(shape_kv, generator=g, dtype=torch.float64)
    v = torch.randn(shape_kv, generator=g, dtype=torch.float64)
    do = torch.randn(shape_q, generator=g, dtype=torch.float64)
    return q, k, v, do


def expected(q, k, v, do, causal, window=None):
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    ref = oracle(qr, kr, vr, causal, window)
    return ref, torch.autograd.grad(ref, (qr, kr, vr), do)


def triton_fwd_bwd(fn, q, k, v, do, *args, **kwargs):
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    out = fn(qf, kf, vf, *args, **kwargs)
    return out, torch.autograd.grad(out, (qf, kf, vf), do.float())


def check(out, grads, ref, ref_grads):
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    assert (out.double() - ref).abs().max().item() < 1e-5
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.shape == r.shape
        assert (g.double() - r).abs().max().item() < 1e-4


@pytest.mark.parametrize("heads, kv, seq, dim, causal, window", [
    (2, 2, 40, 32, True, None),     # causal, length not a multiple of the block
    (2, 2, 33, 32, False, None),    # non-causal
    (4, 2, 50, 64, True, None),     # GQA
    (4, 1, 37, 32, True, None),     # MQA
    (4, 1, 45, 32, True, 10),       # MQA with a sliding window
    (2, 2, 48, 64, True, 0),        # window 0: the diagonal alone
    (2, 2, 64, 128, True, None),    # head dim 128
    (2, 2, 24, 40, False, None),    # head dim not a power of two
])
def test_dense_forward_and_backward(tk, heads, kv, seq, dim, causal, window):
    q, k, v, do = make((2, heads, seq, dim), (2, kv, seq, dim))
    out, grads = triton_fwd_bwd(tk.triton_attention, q, k, v, do, causal=causal, window=window,
                                block_m=16, block_n=16)
    check(out, grads, *expected(q, k, v, do, causal, window))


@pytest.mark.parametrize("heads, kv, s_q, s_k, causal, window", [
    (2, 2, 20, 45, True, None),     # more keys: the queries are the last 20 positions
    (2, 2, 20, 45, False, None),
    (2, 2, 45, 20, True, None),     # more queries: the first 25 rows see no key
    (2, 2, 45, 20, False, None),
    (4, 2, 45, 20, True, 5),        # GQA, a window, rows that see no key
    (2, 2, 20, 45, True, 6),        # a window shifted by s_k - s_q
    (4, 1, 1, 37, True, None),      # decoding: one query against the whole cache (MQA)
    (4, 2, 1, 37, True, 8),         # decoding with a window
])
def test_key_length_differs_from_query_length(tk, heads, kv, s_q, s_k, causal, window):
    q, k, v, do = make((2, heads, s_q, 16), (2, kv, s_k, 16), seed=2)
    out, grads = triton_fwd_bwd(tk.triton_attention, q, k, v, do, causal=causal, window=window,
                                block_m=16, block_n=16)
    check(out, grads, *expected(q, k, v, do, causal, window))
    if causal and s_q > s_k:  # flash-attn's convention: exact zeros, not NaN
        assert not out[:, :, :s_q - s_k].any() and not grads[0][:, :, :s_q - s_k].any()


def test_gradients_of_strided_views(tk):
    """q, k, v slices of longer buffers (a KV cache): gradients land where their strides say."""
    q, k, v, do = make((1, 2, 20, 16), (1, 2, 20, 16), seed=5)
    buffers = [torch.cat([t, torch.zeros_like(t)], 2).float().requires_grad_() for t in (q, k, v)]
    views = [b[:, :, :20] for b in buffers]
    assert views[1].stride() != torch.empty_like(views[1]).stride()
    out = tk.triton_attention(*views, causal=True, block_m=16, block_n=16)
    grads = torch.autograd.grad(out, buffers, do.float())
    assert not any(g[:, :, 20:].any() for g in grads)
    check(out, [g[:, :, :20] for g in grads], *expected(q, k, v, do, True))


@pytest.mark.parametrize("block_m, block_n", [(16, 32), (32, 16)])
@pytest.mark.parametrize("causal, window", [(True, None), (False, None), (True, 7)])
def test_varlen_uneven_lengths(tk, causal, window, block_m, block_n):
    lengths, heads, kv, dim = [5, 37, 16, 23], 4, 2, 32
    total = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    q, k, v, do = make((total, heads, dim), (total, kv, dim), seed=1)
    out, grads = triton_fwd_bwd(tk.triton_varlen_attention, q, k, v, do, cu, max(lengths),
                                causal=causal, window=window, block_m=block_m, block_n=block_n)
    for i in range(len(lengths)):
        sl = slice(int(cu[i]), int(cu[i + 1]))
        seq = [t[sl].transpose(0, 1).unsqueeze(0) for t in (q, k, v, do)]
        check(out[sl].transpose(0, 1).unsqueeze(0),
              [g[sl].transpose(0, 1).unsqueeze(0) for g in grads], *expected(*seq, causal, window))


@pytest.mark.parametrize("causal, window", [(True, None), (False, None), (True, 3)])
def test_varlen_separate_key_lengths(tk, causal, window):
    """cu_seqlens_k/max_seqlen_k as flash_attn_varlen_func takes them; bottom-right per sequence."""
    len_q, len_k, heads, kv, dim = [5, 20, 1, 12], [9, 20, 30, 4], 2, 1, 16

    def cumulative(lengths):
        return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)

    cu_q, cu_k = cumulative(len_q), cumulative(len_k)
    q, k, v, do = make((sum(len_q), heads, dim), (sum(len_k), kv, dim), seed=3)
    out, grads = triton_fwd_bwd(tk.triton_varlen_attention, q, k, v, do, cu_q, max(len_q),
                                cu_seqlens_k=cu_k, max_seqlen_k=max(len_k), causal=causal,
                                window=window, block_m=16, block_n=16)
    for i in range(len(len_q)):
        sq, sk = slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1]))
        seq = [t.transpose(0, 1).unsqueeze(0) for t in (q[sq], k[sk], v[sk], do[sq])]
        check(out[sq].transpose(0, 1).unsqueeze(0),
              [g[s].transpose(0, 1).unsqueeze(0) for g, s in zip(grads, (sq, sk, sk), strict=True)],
              *expected(*seq, causal, window))


def test_backward_tiles_of_their_own(tk):
    """dK/dV and dQ passes with tiles other than the forward's give the same gradients."""
    q, k, v, do = make((1, 4, 40, 16), (1, 2, 33, 16), seed=4)
    same = triton_fwd_bwd(tk.triton_attention, q, k, v, do, causal=True, **FWD_TILE)
    assert tk.last_backward_launch == {"dkdv": FWD_TILE, "dq": FWD_TILE}
    dkdv = {"block_m": 16, "block_n": 32, "num_warps": 2, "num_stages": 1}
    dq = {"block_m": 32, "block_n": 16, "num_warps": 1, "num_stages": 3}
    own = triton_fwd_bwd(tk.triton_attention, q, k, v, do, causal=True, dkdv=dkdv, dq=dq,
                         **FWD_TILE)
    assert tk.last_launch == FWD_TILE
    assert tk.last_backward_launch == {"dkdv": dkdv, "dq": dq}
    assert torch.equal(same[0], own[0])
    for a, b in zip(same[1], own[1], strict=True):
        assert (a - b).abs().max().item() < 1e-5
    check(*own, *expected(q, k, v, do, True))


def test_bad_tiles_and_inputs(tk):
    q = torch.zeros(1, 2, 16, 16)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        tk.triton_attention(q, q, q, causal=True, block_m=24)
    with pytest.raises(ValueError, match="num_stages >= 1"):
        tk.triton_attention(q, q, q, causal=True, num_stages=0)
    with pytest.raises(ValueError, match="needs causal=True"):
        tk.triton_attention(q, q, q, causal=False, window=4)
    with pytest.raises(ValueError, match="int32"):
        tk.triton_varlen_attention(q[0], q[0], q[0], torch.tensor([0, 2]), 2, causal=True)
    with pytest.raises(ValueError, match="dkdv: block_n must be a power of two"):
        tk.triton_attention(q, q, q, causal=True, dkdv={**FWD_TILE, "block_n": 8})
    with pytest.raises(ValueError, match="dq must be a mapping with the keys"):
        tk.triton_attention(q, q, q, causal=True, dq={"block_m": 16})
    with pytest.raises(ValueError, match="k and v"):
        tk.triton_attention(q, q, q[:, :, :8], causal=True)
    with pytest.raises(ValueError, match="cu_seqlens_k and max_seqlen_k"):
        tk.triton_varlen_attention(q[0], q[0], q[0], torch.tensor([0, 2], dtype=torch.int32), 2,
                                   causal=True, max_seqlen_k=2)


def _constexpr_params(kernel) -> set[str]:
    return {name for name, p in inspect.signature(kernel.fn).parameters.items()
            if "constexpr" in str(p.annotation)}


@pytest.mark.parametrize("varlen", [False, True])
def test_the_launchers_launch_what_kernel_launches_lists(tk, monkeypatch, varlen):
    """The one source of truth: a forward + backward call launches exactly kernel_launches(...),
    every constexpr by name, with its num_warps and num_stages."""
    launched = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel, self.fn, self.arg_names = kernel, kernel.fn, kernel.arg_names

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.append((self, kwargs))
                return self.kernel[grid](*args, **kwargs)
            return launch

    import llmbench.kernels.triton_flash_kernels as kernels_module  # where they are defined

    for name in ("_fwd_kernel", "_bwd_delta_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"):
        monkeypatch.setattr(kernels_module, name, Recorder(getattr(kernels_module, name)))
    dkdv = {"block_m": 16, "block_n": 32, "num_warps": 2, "num_stages": 1}
    dq = {"block_m": 32, "block_n": 16, "num_warps": 1, "num_stages": 3}
    if varlen:
        cu = torch.tensor([0, 7, 20], dtype=torch.int32)
        q, k, v, do = make((20, 4, 24), (20, 2, 24))
        triton_fwd_bwd(tk.triton_varlen_attention, q, k, v, do, cu, 13, causal=True, window=5,
                       dkdv=dkdv, dq=dq, **FWD_TILE)
    else:
        q, k, v, do = make((1, 4, 9, 24), (1, 2, 21, 24))
        triton_fwd_bwd(tk.triton_attention, q, k, v, do, causal=False, dkdv=dkdv, dq=dq,
                       **FWD_TILE)
    lists = tk.kernel_launches(dtype="fp32", head_dim=24, heads=4, kv_heads=2, causal=varlen,
                               window=varlen, varlen=varlen, tile=FWD_TILE, dkdv=dkdv, dq=dq)
    assert [launch.name for launch in lists] == ["fwd", "bwd_delta", "bwd_dkdv", "bwd_dq"]
    assert [(launch.kernel, {**launch.constexprs, "num_warps": launch.num_warps,
                             "num_stages": launch.num_stages}) for launch in lists] == launched
    for launch in lists:
        assert set(launch.constexprs) == _constexpr_params(launch.kernel)
    assert lists[0].constexprs["DOT_PRECISION"] == "ieee"
    only_forward = tk.kernel_launches(dtype="bf16", head_dim=24, heads=4, kv_heads=2,
                                      causal=True, window=False, varlen=False, tile=FWD_TILE,
                                      backward=False)
    assert [launch.name for launch in only_forward] == ["fwd"]
    sig = tk.signature(only_forward[0], "bf16")
    assert list(sig) == list(only_forward[0].kernel.arg_names)
    assert (sig["Q"], sig["LSE"], sig["CU_Q"], sig["scale_log2"], sig["sqs"], sig["BLOCK_M"]) \
        == ("*bf16", "*fp32", "*i32", "fp32", "i32", "constexpr")


# Compiles every kernel of two small problems for real targets, in a process without Triton's
# interpreter, and prints each kernel's TTIR and TTGIR: bf16 forward + backward (GQA, causal,
# window, own backward tiles) for sm80, and an fp32 varlen forward for sm90.
COMPILE = r"""
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from llmbench.kernels import triton_flash as tf

def compiled(arch, **problem):
    ttir = {}
    for launch in tf.kernel_launches(**problem):
        source = ASTSource(launch.kernel, tf.signature(launch, problem["dtype"]),
                           constexprs=launch.constexprs)
        kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": launch.num_warps,
                                         "num_stages": launch.num_stages})
        ttir[launch.name] = {"ttir": kernel.asm["ttir"], "ttgir": kernel.asm["ttgir"]}
    return ttir

tile = {"block_m": 64, "block_n": 64, "num_warps": 4, "num_stages": 2}
json.dump({
    "bf16": compiled(80, dtype="bf16", head_dim=64, heads=4, kv_heads=2, causal=True,
                     window=True, varlen=False, tile=tile,
                     dkdv={"block_m": 32, "block_n": 64, "num_warps": 4, "num_stages": 2},
                     dq={"block_m": 64, "block_n": 32, "num_warps": 4, "num_stages": 2}),
    "fp32": compiled(90, dtype="fp32", head_dim=64, heads=4, kv_heads=4, causal=True,
                     window=False, varlen=True, tile=tile, backward=False),
}, sys.stdout)
"""


@pytest.fixture(scope="module")
def compiled_ttir():
    from tests.conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def stride_products(ttir: str) -> tuple[list[str], set[str], set[str]]:
    """(32-bit multiplications that read a stride argument, the stride arguments the kernel reads,
    those multiplied in 64 bits). A stride argument is i32 (sqb ... slb); it is followed through
    splat/broadcast/expand_dims, and through arith.extsi into the 64-bit set."""
    header = next(line for line in ttir.splitlines() if "tt.func public" in line)
    strides = set(re.findall(r"%(s[qkvodl][bhs]): i32", header))
    narrow = {f"%{s}": s for s in strides}
    wide: dict[str, str] = {}
    bad, used, widened = [], set(), set()
    for line in ttir.splitlines():
        if " = " not in line or "tt.func" in line:
            continue
        result, rhs = line.strip().split(" = ", 1)
        op = rhs.split()[0]
        operands = re.findall(r"%[\w.$-]+", rhs.split(" : ")[0])
        hits = [narrow[o] for o in operands if o in narrow]
        wide_hits = [wide[o] for o in operands if o in wide]
        used.update(hits, wide_hits)
        if op in ("tt.splat", "tt.broadcast", "tt.expand_dims"):
            for name in hits:
                narrow[result] = name
            for name in wide_hits:
                wide[result] = name
        elif op == "arith.extsi":
            for name in hits:
                wide[result] = name
        elif op == "arith.muli":
            kind = re.search(r" : (\S+)", rhs.split("}")[-1]).group(1)
            if hits and (kind == "i32" or kind.endswith("xi32>")):
                bad.append(line.strip())
            widened.update(wide_hits if kind == "i64" or kind.endswith("xi64>") else ())
    return bad, used, widened


def test_offsets_are_64_bit(compiled_ttir):
    """Batch/head/token offsets times a stride overflow int32 past 2**31 elements: every product
    of an index and a stride (Q/K/V/O/dO, LSE/DELTA) must be computed in int64."""
    for dtype, kernels in compiled_ttir.items():
        for name, ir in kernels.items():
            bad, used, widened = stride_products(ir["ttir"])
            assert not bad, f"{dtype} {name}: 32-bit stride products\n" + "\n".join(bad)
            assert used and used == widened, f"{dtype} {name}"


def test_fp32_dots_are_ieee_not_tf32(compiled_ttir):
    """fp32 inputs multiply in IEEE fp32 (FMA), not TF32 on the tensor cores; 16-bit inputs keep
    Triton's default. MLIR prints no inputPrecision for IEEE, its default value."""
    fwd = compiled_ttir["fp32"]["fwd"]
    dots = [line for line in fwd["ttir"].splitlines() if "tt.dot " in line]
    assert len(dots) == 2 and not any("inputPrecision" in line for line in dots), dots
    assert "mma" not in fwd["ttgir"]  # no tensor-core layout anywhere
    assert set(compiled_ttir["bf16"]) == {"fwd", "bwd_delta", "bwd_dkdv", "bwd_dq"}
    for name, ir in compiled_ttir["bf16"].items():
        dots = [line for line in ir["ttir"].splitlines() if "tt.dot " in line]
        assert all("inputPrecision = tf32" in line for line in dots), name
    assert "#mma" in compiled_ttir["bf16"]["fwd"]["ttgir"]


def test_the_kernel_launches_with_the_profiles_tile(tk, hw, tmp_path, fast_timing):
    from llmbench.benches.attention import AttentionBenchmark, AttentionConfig
    from llmbench.core.runner import RunOptions, run_benchmark
    from tests.conftest import ROOT

    profile = tmp_path / "mine.toml"
    profile.write_text((ROOT / "profiles" / "cpu.toml").read_text().replace(
        "block_m = 128\nblock_n = 256\nnum_warps = 1\nnum_stages = 1",
        "block_m = 32\nblock_n = 16\nnum_warps = 2\nnum_stages = 3", 1))
    cfg = AttentionConfig(impls=["triton"], seqs=[48], heads=2, head_dim=16, device="cpu",
                          interpret=True, timing=fast_timing, check_rows=48)
    doc = run_benchmark(AttentionBenchmark(), cfg, hw=hw,
                        options=RunOptions(isolate=False, profile=str(profile)))
    (case,) = doc.cases
    assert case.status == "ok", case.reason
    assert (case.params["block_m"], case.params["block_n"]) == (32, 16)
    assert case.metrics["launched_tile"] == "block_m=32 block_n=16 num_stages=3 num_warps=2"
    assert case.metrics["max_abs_error"] < 1e-5
    # A flag overrides the profile.
    over = cfg.model_copy(update={"block_n": 32})
    doc = run_benchmark(AttentionBenchmark(), over, hw=hw,
                        options=RunOptions(isolate=False, profile=str(profile)))
    assert doc.cases[0].metrics["launched_tile"] == \
        "block_m=32 block_n=32 num_stages=3 num_warps=2"


def test_window_and_varlen_modes_of_the_benchmark(tk, hw, fast_timing):
    from llmbench.benches.attention import AttentionBenchmark, AttentionConfig
    from llmbench.core.runner import RunOptions, run_benchmark

    cfg = AttentionConfig(impls=["standard", "tiled", "triton", "sdpa-flash"], seqs=[64],
                          heads=2, head_dim=16, window=8, device="cpu", interpret=True,
                          block_m=16, block_n=16, timing=fast_timing)
    doc = run_benchmark(AttentionBenchmark(), cfg, options=RunOptions(isolate=False), hw=hw)
    by = {c.name: c for c in doc.cases}
    assert by["sdpa-flash/seq=64/fwd/window=8"].status == "unavailable"
    for impl in ("standard", "tiled", "triton"):
        for suffix in ("causal", "window=8"):
            case = by[f"{impl}/seq=64/fwd/{suffix}"]
            assert case.status == "ok", case.reason
            assert case.metrics["max_abs_error"] < 1e-5
    w = doc.summary["window"]["triton/seq=64"]
    # one rule for both counts: the keys each row sees, its own diagonal key counted half
    expected = sum(min(pos, 8) + 0.5 for pos in range(64)) / (64 * 64 / 2)
    assert w["expected_flop_ratio"] == pytest.approx(expected)
    assert w["time_ratio"] > 0

    cfg = AttentionConfig(seqs=[1], heads=2, kv_heads=1, head_dim=16, varlen=[7, 30, 12],
                          device="cpu", interpret=True, block_m=16, block_n=16,
                          mode="fwd+bwd", timing=fast_timing)
    doc = run_benchmark(AttentionBenchmark(), cfg, options=RunOptions(isolate=False), hw=hw)
    by = {c.params["impl"]: c for c in doc.cases}
    assert by["flash-attn-varlen"].status == "unavailable"
    for impl in ("triton-varlen", "sdpa-padded"):
        assert by[impl].status == "ok", by[impl].reason
        assert by[impl].metrics["max_abs_error"] < 1e-5
    assert by["triton-varlen"].metrics["wasted_flops_pct"] == 0.0
    needed = (7 * 7 + 30 * 30 + 12 * 12) / 2
    assert doc.summary["padded_flops_wasted_pct"] == pytest.approx(
        100 * (1 - needed / (3 * 30 * 30 / 2)))
    assert by["sdpa-padded"].metrics["wasted_flops_pct"] == pytest.approx(
        doc.summary["padded_flops_wasted_pct"])
