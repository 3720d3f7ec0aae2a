"""Every attention implementation that runs here against torch SDPA's math backend in fp64."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmbench import kernels
from llmbench.kernels.problem import AttentionProblem, attended_pairs, attention_flops
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


def test_documented_figures():
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


# ------------------------------------------------------------------ key length != query length

def visible(sq, sk, causal, window):
    """(s_q, s_k) True where query row i, at key position i + (s_k - s_q), sees the key."""
    pos = torch.arange(sq)[:, None] + (sk - sq)
    key = torch.arange(sk)[None, :]
    allowed = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        allowed &= key <= pos
    if window is not None:
        allowed &= key >= pos - window
    return allowed


def positional_oracle(q, k, v, causal, window=None):
    """fp64 attention from absolute positions, independent of every implementation: query row
    i sits at position i + (s_k - s_q) and, causal, sees keys 0..position (position - window..
    position with a window). A row that sees no key outputs zeros, with zero gradients."""
    sq, sk = q.shape[2], k.shape[2]
    g = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(g, dim=1), v.double().repeat_interleave(g, dim=1)
    allowed = visible(sq, sk, causal, window)
    sees = allowed.any(dim=-1, keepdim=True)
    scores = (q.double() @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    scores = torch.where(allowed, scores, float("-inf"))
    scores = torch.where(sees, scores, 0.0)  # keep softmax finite on rows that see nothing
    return (torch.softmax(scores, dim=-1) * sees) @ v


# Every implementation that runs on this CPU; triton through Triton's interpreter (conftest).
ALIGNED_IMPLS = ["standard", "sdpa", "sdpa-flash", "sdpa-math", "tiled", "triton"]


@pytest.mark.parametrize("name", ALIGNED_IMPLS)
@pytest.mark.parametrize("sq, sk", [(20, 45), (45, 20), (1, 37)])
@pytest.mark.parametrize("mask", ["none", "causal", "window"])
def test_bottom_right_alignment_forward_and_backward(name, sq, sk, mask):
    if name == "triton" and importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    causal, window = mask != "none", (5 if mask == "window" else None)
    g = torch.Generator().manual_seed(sq * 100 + sk)
    q = torch.randn(2, 4, sq, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, sk, 16, generator=g, dtype=torch.float64) for _ in range(2))
    do = torch.randn(2, 4, sq, 16, generator=g, dtype=torch.float64)
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    ref = positional_oracle(qr, kr, vr, causal, window)
    ref_grads = torch.autograd.grad(ref, (qr, kr, vr), do)

    fn = kernels.get(name).load()
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    out = fn(qf, kf, vf, causal=causal, window=window, block_m=16, block_n=16)
    grads = torch.autograd.grad(out, (qf, kf, vf), do.float())
    assert out.shape == ref.shape
    assert not out.isnan().any()
    assert (out.double() - ref).abs().max().item() < 1e-5
    for grad, r in zip(grads, ref_grads, strict=True):
        assert grad.shape == r.shape and not grad.isnan().any()
        assert (grad.double() - r).abs().max().item() < 1e-4
    if causal and sq > sk:  # rows before the first key: zeros, and no gradient
        assert torch.equal(out[:, :, :sq - sk], torch.zeros_like(out[:, :, :sq - sk]))
        assert torch.equal(grads[0][:, :, :sq - sk], torch.zeros_like(grads[0][:, :, :sq - sk]))


@pytest.mark.parametrize("sq, sk", [(20, 45), (45, 20), (1, 37)])
def test_reference_is_bottom_right_aligned(sq, sk):
    g = torch.Generator().manual_seed(7)
    q = torch.randn(1, 4, sq, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, 2, sk, 8, generator=g, dtype=torch.float64) for _ in range(2))
    rows = check_rows(sq, 9)
    for causal, window in ((False, None), (True, None), (True, 3)):
        ref = reference_attention(q, k, v, causal=causal, window=window, rows=rows, chunk=4)
        assert (ref - positional_oracle(q, k, v, causal, window)[:, :, rows]).abs().max() < 1e-12


def brute_force_pairs(sq, sk, causal, window):
    return int(visible(sq, sk, causal, window).sum())


@pytest.mark.parametrize("sq, sk", [(1, 37), (20, 45), (45, 20), (7, 7), (1, 1), (64, 3)])
@pytest.mark.parametrize("causal, window", [(False, None), (True, None), (True, 0), (True, 5),
                                            (True, 100)])
def test_attended_pairs_count_bottom_right(sq, sk, causal, window):
    p = problem(seq=sq, seq_k=sk, causal=causal, window=window)
    pairs = attended_pairs(sq, causal=causal, window=window, seq_k=sk)
    if sq == sk and causal and window is None:
        assert pairs == sq * sq / 2  # the documented convention for square causal problems
    else:
        assert pairs == brute_force_pairs(sq, sk, causal, window)
    assert attention_flops(p) == 4 * 8 * 64 * pairs


def test_problem_sizes_use_the_key_length():
    p = problem(seq=1, seq_k=8192)
    assert p.kv_seq == 8192 and problem(seq=300).kv_seq == 300
    assert p.kv_bytes == 2 * 8 * 8192 * 64 * 4
    assert p.score_bytes == 8 * 1 * 8192 * 4
    assert p.lse_bytes == 8 * 1 * 4
    assert attention_flops(p) == 4 * 8 * 64 * 8192  # one row sees every key
    assert p.with_seq(16).kv_seq == 8192
    std, fused = kernels.get("standard"), kernels.get("sdpa-flash")
    # Decode-shaped: no score matrix worth the name, so standard needs far less than square.
    assert std.predicted_extra_bytes(p) < std.predicted_extra_bytes(problem(seq=8192)) / 1000
    assert fused.predicted_extra_bytes(p) == p.q_bytes + p.lse_bytes


# torch's own words when no CUDA backend takes the input (aten/src/ATen/native/transformers:
# select_sdp_backend in cuda/sdp_utils.cpp and the checks of sdp_utils_cpp.h), as Python sees
# them: one UserWarning per line, then the RuntimeError.
CUDA_REFUSAL_WARNINGS = [
    "Memory efficient kernel not used because: (Triggered internally at "
    "/pytorch/aten/src/ATen/native/transformers/cuda/sdp_utils.cpp:916.)",
    "Memory Efficient attention has been runtime disabled. (Triggered internally at "
    "/pytorch/aten/src/ATen/native/transformers/sdp_utils_cpp.h:552.)",
    "Flash attention kernel not used because: (Triggered internally at "
    "/pytorch/aten/src/ATen/native/transformers/cuda/sdp_utils.cpp:918.)",
    "Flash Attention does not support non-null attn_mask. (Triggered internally at "
    "/pytorch/aten/src/ATen/native/transformers/sdp_utils_cpp.h:262.)",
    "cuDNN attention kernel not used because: (Triggered internally at "
    "/pytorch/aten/src/ATen/native/transformers/cuda/sdp_utils.cpp:920.)",
    "cuDNN attention has been runtime disabled. (Triggered internally at "
    "/pytorch/aten/src/ATen/native/transformers/cuda/sdp_utils.cpp:706.)",
]
CUDA_REFUSAL_ERROR = "No available kernel. Aborting execution."


def test_sdpa_cuda_refusal_is_unavailable_with_torchs_reasons(monkeypatch):
    import warnings

    from llmbench.core.errors import CaseUnavailable

    def refuse(*args, **kwargs):
        for message in CUDA_REFUSAL_WARNINGS:
            warnings.warn(message, UserWarning, stacklevel=2)
        raise RuntimeError(CUDA_REFUSAL_ERROR)

    monkeypatch.setattr(F, "scaled_dot_product_attention", refuse)
    fn = kernels.get("sdpa-flash").load()
    q, k, v, _ = inputs(2, 2, 8, 16)
    with pytest.raises(CaseUnavailable) as info:
        fn(q[:, :, :3], k, v, causal=True)
    message = str(info.value)
    assert message.startswith("torch refuses sdpa-flash for this input: ")
    assert ("Flash attention kernel not used because: Flash Attention does not support non-null "
            "attn_mask.") in message
    assert "runtime disabled" not in message and "Triggered internally" not in message
    assert "\n" not in message


def test_sdpa_other_runtime_errors_propagate(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(F, "scaled_dot_product_attention", broken)
    q, k, v, _ = inputs(2, 2, 8, 16)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        kernels.get("sdpa-flash").load()(q, k, v, causal=True)


@pytest.mark.parametrize("version, refused", [("2.0.9", True), ("2.1.0", False),
                                              ("2.7.4.post1", False)])
def test_flash_attn_adapter_passes_bottom_right_causal(monkeypatch, version, refused):
    import sys
    import types

    from llmbench.core.errors import CaseUnavailable

    calls = []
    fake = types.ModuleType("flash_attn")
    fake.__version__ = version
    fake.flash_attn_func = lambda q, k, v, **kw: calls.append(kw) or q
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    fn = kernels.get("flash-attn").load()
    q, k = torch.zeros(1, 1, 2, 8), torch.zeros(1, 9, 2, 8)  # (batch, seq, heads, dim)
    fn(q, k, k, causal=False)  # non-causal: no alignment to get wrong
    fn(k, k, k, causal=True)  # square: both alignments agree
    if refused:
        with pytest.raises(CaseUnavailable, match="top-left"):
            fn(q, k, k, causal=True)
    else:
        fn(q, k, k, causal=True, window=4)
        assert calls[-1]["causal"] is True and calls[-1]["window_size"] == (4, 0)


@pytest.mark.parametrize("name", ["standard", "sdpa", "sdpa-math", "tiled"])
def test_a_window_without_causal_is_refused_by_every_implementation(name):
    """flash-attn's window_size=(W, 0) is also a right edge; llmbench's window is a left window
    over the causal mask, so a non-causal window is refused rather than read three ways."""
    q = torch.randn(1, 2, 6, 8)
    with pytest.raises(ValueError, match="needs causal=True"):
        kernels.get(name).load()(q, q, q, causal=False, window=2)
    with pytest.raises(ValueError, match="needs causal=True"):
        reference_attention(q, q, q, causal=False, window=2)
