"""llmbench's Triton FlashAttention under TRITON_INTERPRET=1, against SDPA's math backend."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmbench.kernels.reference import reference_attention

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")


@pytest.fixture(scope="module")
def tk():
    """The kernel module; conftest turned Triton's interpreter on for the whole session."""
    import llmbench.kernels.triton_flash as module

    assert type(module._fwd_kernel).__name__ == "InterpretedFunction"
    return module


def oracle(q, k, v, causal, window=None):
    if window is not None:
        return reference_attention(q, k, v, causal=True, window=window, chunk=1024)
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                              enable_gqa=k.shape[1] != q.shape[1])


def make(shape_q, shape_kv, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(shape_q, generator=g, dtype=torch.float64)
    k = torch.randn(shape_kv, generator=g, dtype=torch.float64)
    v = torch.randn(shape_kv, generator=g, dtype=torch.float64)
    do = torch.randn(shape_q, generator=g, dtype=torch.float64)
    return q, k, v, do


def check(out, grads, ref, ref_grads):
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
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    ref = oracle(qr, kr, vr, causal, window)
    ref_grads = torch.autograd.grad(ref, (qr, kr, vr), do)
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    out = tk.triton_attention(qf, kf, vf, causal=causal, window=window, block_m=16, block_n=16)
    check(out, torch.autograd.grad(out, (qf, kf, vf), do.float()), ref, ref_grads)


@pytest.mark.parametrize("block_m, block_n", [(16, 32), (32, 16)])
@pytest.mark.parametrize("causal, window", [(True, None), (False, None), (True, 7)])
def test_varlen_uneven_lengths(tk, causal, window, block_m, block_n):
    lengths, heads, kv, dim = [5, 37, 16, 23], 4, 2, 32
    total = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    q, k, v, do = make((total, heads, dim), (total, kv, dim), seed=1)
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    out = tk.triton_varlen_attention(qf, kf, vf, cu, max(lengths), causal=causal,
                                     window=window, block_m=block_m, block_n=block_n)
    grads = torch.autograd.grad(out, (qf, kf, vf), do.float())
    for i in range(len(lengths)):
        sl = slice(int(cu[i]), int(cu[i + 1]))
        seq = [t[sl].transpose(0, 1).unsqueeze(0).clone().requires_grad_() for t in (q, k, v)]
        ref = oracle(*seq, causal, window)
        ref_grads = torch.autograd.grad(ref, seq, do[sl].transpose(0, 1).unsqueeze(0))
        check(out[sl].transpose(0, 1).unsqueeze(0),
              [g[sl].transpose(0, 1).unsqueeze(0) for g in grads], ref, ref_grads)


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
    expected = (9 * 10 / 2 + 55 * 9) / (64 * 65 / 2)
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
