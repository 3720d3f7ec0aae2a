"""torch.nn.functional.scaled_dot_product_attention, pinned to one backend at a time."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmbench.core.errors import CaseUnavailable, one_line
from llmbench.kernels.standard import band_mask

BACKENDS = {
    "sdpa": None,  # torch's own choice of backend
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}


def make(name: str) -> Callable[..., torch.Tensor]:
    backend = BACKENDS[name]

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                  scale: float | None = None, window: int | None = None,
                  **_: object) -> torch.Tensor:
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        gqa = k.shape[1] != q.shape[1]
        mask = None
        if window is not None:  # SDPA has no window: an explicit boolean mask (True = attend)
            mask = ~band_mask(q.shape[2], k.shape[2], causal=True, window=window,
                              device=q.device)
            causal = False
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                  scale=scale, enable_gqa=gqa)
        with warnings.catch_warnings(record=True) as caught, sdpa_kernel(backend):
            warnings.simplefilter("always")
            try:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                      is_causal=causal, scale=scale,
                                                      enable_gqa=gqa)
            except RuntimeError as exc:
                if "No viable backend" not in str(exc):
                    raise
                why = "; ".join(one_line(str(w.message)) for w in caught) or one_line(str(exc))
                raise CaseUnavailable(f"torch refuses {name} for this input: {why}") from None

    attention.__name__ = name.replace("-", "_")
    return attention


def predicted_math_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """The math backend: the score matrix, its softmax, a float mask built from a bool one for
    causal, K/V repeated per query head for GQA, and the output."""
    mask = p.seq * p.seq * (1 + p.elem_bytes) if p.causal else 0
    repeat = p.kv_bytes * (p.groups - 1) if p.groups > 1 else 0
    if p.mode == "fwd":
        return 2 * p.score_bytes + mask + repeat + p.q_bytes
    return 3 * p.score_bytes + mask + 2 * repeat + p.q_bytes + p.grad_bytes


def predicted_fused_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """Fused kernels keep only the output and the log-sum-exp; the backward pass adds the
    gradients, an fp32 dQ accumulator and, for GQA, per-query-head dK/dV before the sum."""
    extra = p.q_bytes + p.lse_bytes
    if p.mode == "fwd+bwd":
        extra += p.grad_bytes + p.q_bytes * 4 // p.elem_bytes + p.lse_bytes
        if p.groups > 1:
            extra += p.kv_bytes * p.groups
    return extra
