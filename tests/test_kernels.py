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


@pytest.mark.parametrize("causal, window", [(False, None), (True, None), (True, 11)])
def test_tiled_computes_fp64_in_fp64(causal, window):
    """fp64 in, fp64 math and out: the error against the fp64 reference is rounding (~1e-15),
    not fp32's ~1e-7, forward and backward, with GQA, odd lengths and partial tiles."""
    g = torch.Generator().manual_seed(6)
    q, do = (torch.randn(2, 4, 70, 24, generator=g, dtype=torch.float64) for _ in range(2))
    k, v = (torch.randn(2, 2, 90, 24, generator=g, dtype=torch.float64) for _ in range(2))
    qt, kt, vt = (t.clone().requires_grad_() for t in (q, k, v))
    out = kernels.get("tiled").load()(qt, kt, vt, causal=causal, window=window, block_m=32,
                                      block_n=16)
    grads = torch.autograd.grad(out, (qt, kt, vt), do)
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    ref = reference_attention(qr, kr, vr, causal=causal, window=window)
    ref_grads = torch.autograd.grad(ref, (qr, kr, vr), do)
    assert out.dtype == torch.float64 and all(g.dtype == torch.float64 for g in grads)
    assert (out - ref).abs().max().item() < 1e-12
    for grad, r in zip(grads, ref_grads, strict=True):
        assert (grad - r).abs().max().item() < 1e-12


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
    g1, g2 = (problem(seq=s, device="cuda", dtype="bf16") for s in (4096, 8192))
    assert fused.predicted_extra_bytes(g2) / fused.predicted_extra_bytes(g1) == pytest.approx(2)
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
    """One rule: every visible (query, key) pair, and under a causal mask each row's own
    diagonal key (which every row that sees a key sees) counted half."""
    p = problem(seq=sq, seq_k=sk, causal=causal, window=window)
    pairs = attended_pairs(sq, causal=causal, window=window, seq_k=sk)
    seen = visible(sq, sk, causal, window)
    rows_with_keys = int(seen.any(dim=-1).sum())
    assert pairs == int(seen.sum()) - (rows_with_keys / 2 if causal else 0)
    if sq == sk and causal and (window is None or window >= sk - 1):
        assert pairs == sq * sq / 2  # half the full matrix, as flash-attn's benchmarks count
    assert attention_flops(p) == 4 * 8 * 64 * pairs


def test_causal_flops_follow_flash_attns_convention():
    # square: half of 4 * s^2 * heads * head_dim (flash-attn's benchmark_flash_attention.py)
    assert attention_flops(problem(seq=1000)) == 4 * 1000 * 1000 * 8 * 64 / 2
    # s_q <= s_k: 2 * s_q * avg * 2 * head_dim with avg = (s_k - s_q + s_k) / 2 (flash-attn's
    # hopper benchmark): one decoding row counts 4095.5 of its 4096 keys
    for sq, sk in ((1, 4096), (512, 4096), (300, 301)):
        avg = (sk - sq + sk) / 2
        assert attention_flops(problem(seq=sq, seq_k=sk)) == 2 * sq * avg * 2 * 64 * 8
    # a window no shorter than the keys is the causal figure; one key shorter drops one pair
    full = attended_pairs(4096, causal=True)
    assert attended_pairs(4096, causal=True, window=4095) == full == 4096 * 4096 / 2
    assert attended_pairs(4096, causal=True, window=9999) == full
    assert attended_pairs(4096, causal=True, window=4094) == full - 1
    # W = 512: rows 0..512 count p + 1/2, the other 3583 rows 512.5 each
    assert attended_pairs(4096, causal=True, window=512) == 513 * 513 / 2 + 3583 * 512.5


def test_problem_sizes_use_the_key_length():
    p = problem(seq=1, seq_k=8192)
    assert p.kv_seq == 8192 and problem(seq=300).kv_seq == 300
    assert p.kv_bytes == 2 * 8 * 8192 * 64 * 4
    assert p.score_bytes == 8 * 1 * 8192 * 4
    assert p.lse_bytes == 8 * 1 * 4
    # one row sees every key, its own diagonal key counted half
    assert attention_flops(p) == 4 * 8 * 64 * (8192 - 0.5)
    assert p.with_seq(16).kv_seq == 8192
    std, fused = kernels.get("standard"), kernels.get("sdpa-flash")
    # Decode-shaped: no score matrix worth the name, so standard needs far less than square.
    assert std.predicted_extra_bytes(p) < std.predicted_extra_bytes(problem(seq=8192)) / 1000
    gpu = problem(seq=1, seq_k=8192, device="cuda", dtype="bf16")
    assert fused.predicted_extra_bytes(gpu) == gpu.q_bytes + gpu.lse_bytes


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


# ------------------------------------------------------------------ predicted peak memory


def torch_peak_bytes(fn):
    """The most bytes torch's CPU allocator held at once while fn() ran, above what it held
    before: the allocations and frees torch's profiler records (profile_memory), in order."""
    with torch.autograd.profiler.profile(profile_memory=True) as prof:
        fn()
    nodes, events = list(prof.kineto_results.experimental_event_tree()), []
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if str(node.tag).endswith("Allocation"):
            events.append((node.start_time_ns, node.extra_fields))
    events.sort(key=lambda e: e[0])
    first = events[0][1]
    before = first.total_allocated - first.alloc_size
    return max(e.total_allocated for _, e in events) - before


MEMORY_SHAPES = [  # (batch, heads, kv_heads, seq, kv_seq, head_dim, causal, window)
    (1, 4, 4, 96, 96, 16, True, None),    # MHA
    (1, 4, 2, 96, 96, 16, True, None),    # GQA: torch.matmul copies K and V per query head
    (2, 4, 1, 80, 80, 16, True, None),    # MQA, batch 2: copied too
    (1, 4, 1, 96, 96, 16, False, None),   # MQA, batch 1: broadcast as a view
    (1, 6, 3, 70, 50, 24, False, None),   # GQA, more queries than keys, no mask
    (2, 4, 2, 1, 160, 16, True, None),    # one decoding step
    (1, 4, 2, 30, 120, 16, True, None),   # a chunk after a cache
    (1, 4, 2, 120, 40, 16, True, None),   # rows before the first key (zeros)
    (1, 4, 2, 96, 96, 16, True, 20),      # a sliding window
]


@pytest.mark.parametrize("name", ["standard", "sdpa", "sdpa-flash", "sdpa-math", "tiled"])
def test_predicted_memory_is_what_torch_allocates(name):
    """Each implementation's predicted peak above its inputs, forward and forward + backward,
    within 5 % of the most bytes torch held at once during the call (the figure a GPU's
    caching allocator reports; the CPU benchmark reads its resident set the same way,
    `benches.attention.warm_then_peak_live`)."""
    from types import SimpleNamespace

    impl = kernels.get(name)
    fn, tile = impl.load(), SimpleNamespace(block_m=64, block_n=32)
    g = torch.Generator().manual_seed(8)
    for b, h, kvh, sq, sk, d, causal, window in MEMORY_SHAPES:
        q, do = (torch.randn(b, h, sq, d, generator=g) for _ in range(2))
        k, v = (torch.randn(b, kvh, sk, d, generator=g) for _ in range(2))
        for mode in ("fwd", "fwd+bwd"):
            backward = mode == "fwd+bwd"
            inputs = [t.requires_grad_(backward) for t in (q, k, v)]

            def call(inputs=inputs, do=do, backward=backward, causal=causal, window=window):
                for t in inputs:
                    t.grad = None
                with torch.set_grad_enabled(backward):
                    out = fn(*inputs, causal=causal, window=window, block_m=64, block_n=32)
                    if backward:
                        out.backward(do)

            call()  # first-call allocations stay out, as in the benchmark
            for t in inputs:
                t.grad = None
            measured = torch_peak_bytes(call)
            p = problem(batch=b, heads=h, kv_heads=kvh, seq=sq, seq_k=sk, head_dim=d,
                        causal=causal, window=window, mode=mode)
            predicted = impl.predicted_extra_bytes(p, tile)
            assert predicted == pytest.approx(measured, rel=0.05), (name, mode, b, h, kvh, sq,
                                                                    sk, causal, window)

