"""Attention under torch.compile: the textbook attention compiled (`compiled`), and what every
compiled implementation shares (FlexAttention, `kernels.flex`, is one too).

A compiled implementation's first call compiles it: TorchDynamo traces the Python function
into a graph and Inductor generates and builds its kernels (C++ with OpenMP on a CPU, Triton on
a GPU). A case measures that first call apart (`cold_compile`: a fresh Inductor cache and
TorchDynamo's state reset, so nothing compiled before, in this process or on disk, is reused)
and times the calls after it as any other implementation.

Each compiled function is made once per process and shared (tests call them at several
shapes). TorchDynamo recompiles for each new shape or mask until its recompile limit, after
which it would quietly run the Python code eagerly: `compile_fn` raises that limit to
RECOMPILE_LIMIT and makes reaching it an error, so a figure labelled compiled never comes from
eager code.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from llmbench.kernels.standard import standard_attention

_COMPILED: dict[tuple[str, bool | None], Callable[..., Any]] = {}
RECOMPILE_LIMIT = 64


def compile_fn(name: str, fn: Callable[..., Any], *, dynamic: bool | None = None
               ) -> Callable[..., Any]:
    """`torch.compile(fn, dynamic=dynamic)`, made once per process under `name`; reaching
    TorchDynamo's recompile limit (at least RECOMPILE_LIMIT) raises instead of falling back
    to eager code."""
    key = (name, dynamic)
    if key not in _COMPILED:
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        config.fail_on_recompile_limit_hit = True
        _COMPILED[key] = torch.compile(fn, dynamic=dynamic)
    return _COMPILED[key]


@contextlib.contextmanager
def cold_compile() -> Iterator[None]:
    """Compilation as in a fresh process with empty caches: TorchDynamo's compiled code
    dropped and Inductor (and Triton) caching into a new temporary folder, removed after."""
    from torch._inductor.utils import fresh_cache

    torch._dynamo.reset()
    with fresh_cache():
        yield
    torch._dynamo.reset()


def compiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                       scale: float | None = None, window: int | None = None,
                       **_: object) -> torch.Tensor:
    """`standard.standard_attention` under torch.compile (default mode): what a user gets by
    compiling the textbook code. Same signature and masks (bottom-right causal, left window,
    GQA by broadcasting, keyless rows zero)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return compile_fn("standard", standard_attention)(q, k, v, causal=causal, scale=scale,
                                                      window=window)


def predicted_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """Forward: one score matrix and the output of the rows that see a key, S + Qr (with S, Qr,
    Z, Q as in `standard.predicted_extra_bytes`), and the zero rows concatenated (Qr + Z + Q)
    when there are any: Inductor computes the mask inside its kernels and fuses the softmax
    into one pass over the scores, where eager standard holds the scores, the probabilities
    and a boolean mask. Measured with the benchmark's resident set (torch 2.13, CPU): 132 MiB
    at b1 h8 seq 2048 d64 (S + Qr = 132 MiB), 2.43 MiB at seq 256 (2.5 MiB); torch's profiler
    does not see the allocations of Inductor's C++ wrapper, so these are not checked against
    it. Forward + backward: the eager program's peak, an upper bound (20.1 MiB measured against
    27.2 MiB at seq 512)."""
    from llmbench.kernels.standard import predicted_extra_bytes as eager

    if p.mode == "fwd+bwd":
        return eager(p, tile)
    c = p.computed
    qr, q = c.q_bytes, p.q_bytes
    z = q - qr
    return max(c.score_bytes + qr, qr + z + q if z else 0)
