"""FlexAttention (`kernels.flex`) against the fp64 reference, compiled for real on this CPU:
every mask llmbench's implementations share (causal bottom-right, window, GQA, chunks, a
decoding row, rows before the first key, no mask) and the document mask of packed batches;
block masks cached per problem and built apart; torch's refusal of a CPU backward.

Each new shape or mask compiles (seconds each on this CPU), so the shapes are few and chosen
to cover one case each; one compiled function serves them all, as in a user's process."""

from __future__ import annotations

import pytest
import torch

from llmbench import kernels
from llmbench.kernels import flex
from llmbench.kernels.problem import AttentionProblem
from llmbench.kernels.reference import reference_attention

SHAPES = [  # (heads, kv_heads, seq_q, seq_k, causal, window): one compilation each
    (4, 2, 200, 200, True, None),   # GQA, square causal, not a multiple of the 128 block
    (4, 2, 64, 256, True, 48),      # a chunk after cached keys, with a sliding window
    (4, 4, 150, 100, True, None),   # rows before the first key: zeros
    (4, 1, 1, 300, True, None),     # one decoding row (MQA): no mask at all
    (4, 4, 70, 130, False, None),   # non-causal, another key length: no mask
]


def _inputs(h, kvh, sq, sk, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, h, sq, d, generator=g), torch.randn(2, kvh, sk, d, generator=g),
            torch.randn(2, kvh, sk, d, generator=g))


def test_flex_matches_the_fp64_reference_on_every_mask():
    for h, kvh, sq, sk, causal, window in SHAPES:
        q, k, v = _inputs(h, kvh, sq, sk)
        with torch.no_grad():
            out = flex.flex_attention_fn(q, k, v, causal=causal, window=window)
        ref = reference_attention(q, k, v, causal=causal, window=window)
        assert out.shape == ref.shape
        assert (out.double() - ref).abs().max().item() < 1e-5, (h, kvh, sq, sk, window)
        if causal and sq > sk:
            assert out[:, :, : sq - sk].abs().max().item() == 0.0


def test_block_masks_are_built_once_per_problem_and_only_when_needed():
    square = flex.block_mask(200, 200, causal=True, window=None, device="cpu")
    assert square is flex.block_mask(200, 200, causal=True, window=None, device="cpu")
    fresh = flex.build_block_mask(200, 200, causal=True, window=None, device="cpu")
    assert fresh is not square and fresh.shape[-2:] == square.shape[-2:] == (200, 200)
    assert flex.block_mask(1, 300, causal=True, window=None, device="cpu") is None
    assert flex.build_block_mask(70, 130, causal=False, window=None, device="cpu") is None
    # a window as long as the keys masks nothing beyond causal; a shorter one does
    assert flex.masks_anything(1, 300, causal=True, window=299) is False
    assert flex.masks_anything(1, 300, causal=True, window=298) is True
    # the mask function itself: bottom-right causal with a left window
    mod = flex.band_mask_mod(256 - 64, causal=True, window=48)
    qi, ki = torch.arange(64)[:, None], torch.arange(256)[None, :]
    allowed = mod(0, 0, qi, ki)
    position = qi + 192
    assert torch.equal(allowed, (ki <= position) & (ki >= position - 48))


def test_dense_mask_builder_times_the_computed_rows():
    p = AttentionProblem(batch=1, heads=4, kv_heads=4, seq=150, head_dim=32, dtype="fp32",
                         causal=True, mode="fwd", device="cpu", seq_k=100)
    build = flex.dense_mask_builder(p, "cpu")
    assert build().shape[-2:] == (100, 100)  # the 50 rows before the first key are not masked
    decode = AttentionProblem(batch=1, heads=4, kv_heads=4, seq=1, head_dim=32, dtype="fp32",
                              causal=True, mode="fwd", device="cpu", seq_k=300)
    assert flex.dense_mask_builder(decode, "cpu") is None


@pytest.mark.parametrize("causal, window", [(True, 16)])
def test_varlen_document_mask_keeps_each_sequence_to_itself(causal, window):
    lengths = [40, 90, 7, 63]
    cu = torch.tensor([0, 40, 130, 137, 200], dtype=torch.int32)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(200, 4, 32, generator=g)
    k, v = (torch.randn(200, 2, 32, generator=g) for _ in range(2))
    with torch.no_grad():
        out = flex.flex_varlen_attention(q, k, v, cu, max(lengths), causal=causal,
                                         window=window)
    assert out.shape == q.shape
    for start, n in zip(cu[:-1].tolist(), lengths, strict=True):
        sl = slice(start, start + n)
        ref = reference_attention(*(t[sl].transpose(0, 1).unsqueeze(0) for t in (q, k, v)),
                                  causal=causal, window=window)
        assert (out[sl].transpose(0, 1).double() - ref[0]).abs().max().item() < 1e-5
    assert flex.varlen_mask_builder(cu, causal=causal, window=window)().shape[-2:] == (200, 200)


def test_no_cpu_backward_is_torch_own_refusal():
    refusal = flex.backward_refusal("cpu")
    if refusal is None:
        pytest.skip(f"torch {torch.__version__} has a FlexAttention backward on the CPU")
    assert "backward" in refusal and torch.__version__ in refusal
    p = AttentionProblem(batch=1, heads=4, kv_heads=4, seq=64, head_dim=32, dtype="fp32",
                         causal=True, mode="fwd+bwd", device="cpu")
    why = kernels.get("flex").unavailable(p)
    assert why.startswith("no FlexAttention backward here: ") and "time --mode fwd" in why
    assert kernels.get("flex").unavailable(AttentionProblem(**{**p.__dict__, "mode": "fwd"})) \
        is None


def test_compile_reasons_on_machines_without_the_toolchain(monkeypatch):
    """What each compiled implementation says where torch.compile cannot build kernels: no
    C++ compiler on a CPU; no Triton, or a GPU older than Triton supports."""
    p = AttentionProblem(batch=1, heads=4, kv_heads=4, seq=64, head_dim=32, dtype="fp32",
                         causal=True, mode="fwd", device="cpu")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    for name in ("compiled", "flex"):
        assert "no C++ compiler found" in kernels.get(name).unavailable(p)
    monkeypatch.undo()
    old = AttentionProblem(**{**p.__dict__, "device": "cuda", "compute_capability": (6, 1)})
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        assert "compute capability >= 7.0, not 6.1" in kernels.get("flex").unavailable(old)
    h100 = AttentionProblem(**{**old.__dict__, "compute_capability": (9, 0),
                               "mode": "fwd+bwd"})
    if importlib.util.find_spec("triton") is not None:
        assert kernels.get("flex").unavailable(h100) is None  # the backward runs on GPUs


def test_a_torch_without_flex_attention_is_a_reason(monkeypatch):
    p = AttentionProblem(batch=1, heads=4, kv_heads=4, seq=64, head_dim=32, dtype="fp32",
                         causal=True, mode="fwd", device="cpu")
    monkeypatch.setattr(kernels, "_torch_version", lambda: (2, 4))
    assert kernels.get("flex").unavailable(p) == \
        "FlexAttention is in torch >= 2.5, this is torch 2.4"
