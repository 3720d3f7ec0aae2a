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
