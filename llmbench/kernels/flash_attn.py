"""Adapter for the flash-attn package (Dao-AILab/flash-attention), imported only when used.

flash_attn_func takes (batch, seq, heads, head_dim) tensors in fp16/bf16 on an sm80+ GPU and
handles GQA/MQA natively (the number of query heads must be a multiple of the key/value heads).
"""

from __future__ import annotations

import torch

from llmbench.core.errors import CaseUnavailable


def _load():  # noqa: ANN202
    try:
        from flash_attn import flash_attn_func
    except Exception as exc:  # ImportError, or an undefined CUDA symbol from a mismatched build
        raise CaseUnavailable(f"flash_attn does not import: {type(exc).__name__}: {exc}") from None
    return flash_attn_func


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                    scale: float | None = None, window: int | None = None,
                    **_: object) -> torch.Tensor:
    """q: (batch, seq, heads, dim); k, v: (batch, seq, kv_heads, dim) -- the package's layout."""
    size = (-1, -1) if window is None else (window, 0)
    return _load()(q, k, v, causal=causal, softmax_scale=scale, window_size=size)


def flash_varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           cu_seqlens: torch.Tensor, max_seqlen: int, *, causal: bool,
                           scale: float | None = None, window: int | None = None,
                           **_: object) -> torch.Tensor:
    """Packed (total, heads, dim) tensors and int32 cu_seqlens: flash_attn_varlen_func."""
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception as exc:
        raise CaseUnavailable(f"flash_attn does not import: {type(exc).__name__}: {exc}") \
            from None
    size = (-1, -1) if window is None else (window, 0)
    return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                  causal=causal, softmax_scale=scale, window_size=size)
