"""Adapter for the flash-attn package (Dao-AILab/flash-attention), imported only when used.

flash_attn_func takes (batch, seq, heads, head_dim) tensors in fp16/bf16 on an sm80+ GPU and
handles GQA/MQA natively (the number of query heads must be a multiple of the key/value heads).

Since flash-attn 2.1 its `causal=True` (and `window_size=(W, 0)`) is bottom-right aligned when
seqlen_q != seqlen_k: query row i sits at position i + seqlen_k - seqlen_q and sees keys
0..position, and a row that sees no key outputs zeros. That is the alignment of every llmbench
implementation, so the flag is passed through as is. Before 2.1 the mask was top-left aligned:
such a version is refused for causal problems with seqlen_q != seqlen_k.
"""

from __future__ import annotations

import re

import torch

from llmbench.core.errors import CaseUnavailable


def _load():  # noqa: ANN202
    try:
        from flash_attn import flash_attn_func
    except Exception as exc:  # ImportError, or an undefined CUDA symbol from a mismatched build
        raise CaseUnavailable(f"flash_attn does not import: {type(exc).__name__}: {exc}") from None
    return flash_attn_func


def _check_alignment(sq: int, sk: int, causal: bool) -> None:
    """flash-attn before 2.1 aligns a causal mask top-left when seqlen_q != seqlen_k."""
    if not causal or sq == sk:
        return
    import flash_attn

    version = getattr(flash_attn, "__version__", "0")
    if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < (2, 1):
        raise CaseUnavailable(f"flash-attn {version} aligns the causal mask top-left when "
                              "seqlen_q != seqlen_k; llmbench needs >= 2.1 (bottom-right)")


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                    scale: float | None = None, window: int | None = None,
                    **_: object) -> torch.Tensor:
    """q: (batch, seq_q, heads, dim); k, v: (batch, seq_k, kv_heads, dim) -- the package's
    layout. Causal (and the window) bottom-right aligned, as in every llmbench implementation."""
    fn = _load()
    _check_alignment(q.shape[1], k.shape[1], causal)
    size = (-1, -1) if window is None else (window, 0)
    return fn(q, k, v, causal=causal, softmax_scale=scale, window_size=size)


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
