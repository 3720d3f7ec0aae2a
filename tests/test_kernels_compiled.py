"""The textbook attention under torch.compile (`kernels.compiled`), compiled for real on this
CPU: forward and gradients against the fp64 reference; a compiled function is made once per
process; `cold_compile` really starts from empty caches (the first call compiles again)."""

from __future__ import annotations

import time

import torch

from llmbench.kernels import compiled
from llmbench.kernels.reference import reference_attention


def test_forward_and_gradients_match_the_fp64_reference():
    g = torch.Generator().manual_seed(1)
    q, do = (torch.randn(2, 4, 96, 32, generator=g) for _ in range(2))
    k, v = (torch.randn(2, 2, 96, 32, generator=g) for _ in range(2))
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = compiled.compiled_attention(*inputs, causal=True, window=24)
    grads = torch.autograd.grad(out, inputs, do)
    ref_in = [t.double().requires_grad_() for t in (q, k, v)]
    ref = reference_attention(*ref_in, causal=True, window=24)
    ref_grads = torch.autograd.grad(ref, ref_in, do.double())
    assert (out.double() - ref).abs().max().item() < 1e-5
    for got, want in zip(grads, ref_grads, strict=True):
        assert (got.double() - want).abs().max().item() < 1e-4


def test_one_compiled_function_per_name_and_cold_compiles_start_over():
    fn = compiled.compile_fn("standard", None)  # made already: the function is not used again
    assert fn is compiled.compile_fn("standard", None)
    assert torch._dynamo.config.fail_on_recompile_limit_hit  # never a quiet eager fallback
    assert torch._dynamo.config.recompile_limit >= compiled.RECOMPILE_LIMIT
    x = torch.randn(1, 2, 40, 16)
    with torch.no_grad():
        compiled.compiled_attention(x, x, x, causal=False)
        t0 = time.perf_counter()
        compiled.compiled_attention(x, x, x, causal=False)
        warm = time.perf_counter() - t0
        with compiled.cold_compile():
            t0 = time.perf_counter()
            out = compiled.compiled_attention(x, x, x, causal=False)
            cold = time.perf_counter() - t0
    # compiling again from empty caches costs at least a C++ build (seconds), a compiled call
    # at this size well under a millisecond or two
    assert cold > 20 * warm and cold > 0.2
    assert (out.double() - reference_attention(x, x, x, causal=False)).abs().max() < 1e-5


def test_predicted_memory_forward_is_one_score_matrix_and_the_output():
    from llmbench import kernels
    from llmbench.kernels.problem import AttentionProblem

    p = AttentionProblem(batch=1, heads=8, kv_heads=8, seq=2048, head_dim=64, dtype="fp32",
                         causal=True, mode="fwd", device="cpu")
    impl, eager = kernels.get("compiled"), kernels.get("standard")
    assert impl.predicted_extra_bytes(p) == p.score_bytes + p.q_bytes == 132 * 2**20
    assert impl.predicted_extra_bytes(p) < eager.predicted_extra_bytes(p)
    bwd = AttentionProblem(**{**p.__dict__, "mode": "fwd+bwd"})
    assert impl.predicted_extra_bytes(bwd) == eager.predicted_extra_bytes(bwd)
    # rows before the first key: the zero rows concatenated after the computed ones
    rows = AttentionProblem(**{**p.__dict__, "seq": 300, "seq_k": 100})
    c = rows.computed
    assert impl.predicted_extra_bytes(rows) == max(c.score_bytes + c.q_bytes,
                                                   c.q_bytes + (rows.q_bytes - c.q_bytes)
                                                   + rows.q_bytes)
