"""Every attention implementation that runs here against torch SDPA's math backend in fp64."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmbench import kernels
from llmbench.kernels.problem import AttentionProblem, attention_flops
from llmbench.kernels.reference import check_rows, reference_attention

RUNNABLE_ON_CPU = ["standard", "sdpa-flash", "sdpa-math", "tiled"]

SHAPES = [  # (heads, kv_heads, seq, head_dim, causal)
    (4, 4, 77, 32, True),     # odd length, not a multiple of any block
    (4, 4, 130, 64, False),
    (8, 2, 129, 64, True),    # GQA
    (6, 3, 33, 40, False),    # GQA, odd head dim
    (4, 1, 200, 16, True),    # MQA
]


def oracle(q, k, v, causal):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                              enable_gqa=k.shape[1] != q.shape[1])


def inputs(h, kvh, s, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, h, s, d, generator=g, dtype=torch.float64)
    k = torch.randn(2, kvh, s, d, generator=g, dtype=torch.float64)
    v = torch.randn(2, kvh, s, d, generator=g, dtype=torch.float64)
    do = torch.randn(2, h, s, d, generator=g, dtype=torch.float64)
    return q, k, v, do


@pytest.mark.parametrize("name", RUNNABLE_ON_CPU)
@pytest.mark.parametrize("h, kvh, s, d, causal", SHAPES)
def test_forward_and_backward_match_sdpa_math(name, h, kvh, s, d, causal):
    q, k, v, do = inputs(h, kvh, s, d)
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    ref = oracle(qr, kr, vr, causal)
    ref_grads = torch.autograd.grad(ref, (qr, kr, vr), do)

    fn = kernels.get(name).load()
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    out = fn(qf, kf, vf, causal=causal, block_m=32, block_n=64)
    grads = torch.autograd.grad(out, (qf, kf, vf), do.float())
    assert out.shape == ref.shape
    assert (out.double() - ref).abs().max().item() < 1e-5
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.shape == r.shape
        assert (g.double() - r).abs().max().item() < 1e-4


@pytest.mark.parametrize("block_m, block_n", [(16, 16), (16, 128), (128, 16), (512, 512)])
def test_tiled_any_block_shape(block_m, block_n):
    q, k, v, do = inputs(4, 2, 100, 32, seed=3)
    fn = kernels.get("tiled").load()
    for causal in (True, False):
        out = fn(q.float(), k.float(), v.float(), causal=causal, block_m=block_m,
                 block_n=block_n)
        assert (out.double() - oracle(q, k, v, causal)).abs().max().item() < 1e-5


def test_tiled_bf16_accumulates_in_fp32():
    q, k, v, _ = inputs(4, 4, 256, 64, seed=4)
    fn = kernels.get("tiled").load()
    out = fn(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True, block_m=64, block_n=64)
    assert out.dtype == torch.bfloat16
    ref = oracle(q.bfloat16().double(), k.bfloat16().double(), v.bfloat16().double(), True)
    assert (out.double() - ref).abs().max().item() < 2e-2


def test_reference_matches_sdpa_math_on_rows():
    q, k, v, _ = inputs(8, 2, 150, 32, seed=5)
    rows = check_rows(150, 20)
    assert rows[0] == 0 and rows[-1] == 149 and len(rows) == 20
    for causal in (True, False):
        ref = reference_attention(q, k, v, causal=causal, rows=rows, chunk=7)
        assert (ref - oracle(q, k, v, causal)[:, :, rows]).abs().max().item() < 1e-12
    assert torch.equal(check_rows(10, 256), torch.arange(10))


def problem(**kw):
    base = dict(batch=1, heads=8, kv_heads=8, seq=8192, head_dim=64, dtype="fp32",
                causal=True, mode="fwd", device="cpu")
    return AttentionProblem(**{**base, **kw})


def test_design_md_figures():
    # seq 8192, one head, one sequence, fp32: 268,435,456 bytes (268 MB, not GB).
    assert problem(heads=1, kv_heads=1).score_bytes == 268_435_456
    p = problem(causal=False)
    assert attention_flops(p) == 4 * 8192**2 * 8 * 64
    assert attention_flops(problem()) == 2 * 8192**2 * 8 * 64
    assert attention_flops(problem(mode="fwd+bwd")) == 3.5 * 2 * 8192**2 * 8 * 64


def test_predicted_memory_is_quadratic_for_standard_only():
    std, fused = kernels.get("standard"), kernels.get("sdpa-flash")
    p1, p2 = problem(seq=4096), problem(seq=8192)
    assert std.predicted_extra_bytes(p2) / std.predicted_extra_bytes(p1) == pytest.approx(4, 0.01)
    assert fused.predicted_extra_bytes(p2) / fused.predicted_extra_bytes(p1) == pytest.approx(2)
    # Scores and probabilities: two 2 GiB matrices at seq 8192, 8 heads, fp32.
    assert std.predicted_extra_bytes(p2) > 2 * problem(seq=8192).score_bytes


def test_availability_reasons():
    cpu = problem()
    assert kernels.get("standard").unavailable(cpu) is None
    assert kernels.get("sdpa-flash").unavailable(cpu) is None
    assert "only on CUDA" in kernels.get("sdpa-efficient").unavailable(cpu)
    assert "only on NVIDIA GPUs" in kernels.get("flash-attn").unavailable(cpu)
    turing = problem(device="cuda", compute_capability=(7, 5), dtype="fp16")
    reason = kernels.get("sdpa-flash").unavailable(turing)
    assert "8.0" in reason and "7.5" in reason
    assert kernels.get("sdpa-efficient").unavailable(turing) is None
    hopper = problem(device="cuda", compute_capability=(9, 0), dtype="fp32")
    assert "fp16/bf16" in kernels.get("sdpa-flash").unavailable(hopper)
    assert "up to 256" in kernels.get("flash-attn").shape_reason(problem(head_dim=512))
