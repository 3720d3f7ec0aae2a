"""FlexAttention (`torch.nn.attention.flex_attention`): attention whose mask is a function of
(batch, head, query index, key index), compiled by Inductor (Triton kernels on a GPU, C++ on a
CPU) into a fused kernel that skips the key blocks the mask leaves empty.

The mask is turned into a `BlockMask` (which key blocks each query block must visit, and which
of them are partly masked) before the call. Users build it once per shape (or per batch, for
packed sequences), so a call here takes a prebuilt one (`block_mask`, cached per shape) and its
creation is measured apart (`build_block_mask`). The masks are the ones every llmbench
implementation uses: causal bottom-right aligned (query i sits at position i + s_k - s_q), a
left sliding window of W keys before the diagonal, nothing masked without them (no BlockMask:
full attention), and for packed variable-length batches the document mask (a query sees only
keys of its own sequence, causal and windowed within it). GQA/MQA: `enable_gqa`.

torch 2.13 has no FlexAttention backward on a CPU (it raises NotImplementedError);
`backward_refusal` asks torch, so the case is unavailable with torch's reason.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from llmbench.kernels.compiled import compile_fn
from llmbench.kernels.standard import require_causal_window, skip_keyless_rows

_MASKS: dict[tuple[Any, ...], BlockMask | None] = {}


def _compiled(device: torch.device) -> Callable[..., Any]:
    """The compiled flex_attention for `device`. On a CPU every shape compiles on its own
    (dynamic=False): with torch 2.13, once TorchDynamo turned to dynamic shapes (a second
    shape in the process), Inductor's C++ FlexAttention template generated code that does
    not build (an undeclared `cur_kvSplitSize2`)."""
    return compile_fn("flex", flex_attention, dynamic=False if device.type == "cpu" else None)


def band_mask_mod(offset: int, *, causal: bool, window: int | None) -> Callable[..., Any]:
    """The mask of one dense problem: True where query q_idx may attend key kv_idx. Query row
    i sits at position i + offset (offset = s_k - s_q, bottom-right alignment)."""
    def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        position = q_idx + offset
        allowed = position >= kv_idx if causal else kv_idx >= 0
        if window is not None:
            allowed = allowed & (position - kv_idx <= window)
        return allowed
    return mask_mod


def masks_anything(sq: int, sk: int, *, causal: bool, window: int | None) -> bool:
    """Whether the problem's mask hides any key (as `standard.band_mask`): causal over more
    than one query row, or a window shorter than the keys."""
    return (causal and sq > 1) or (window is not None and sk > window + 1)


def build_block_mask(sq: int, sk: int, *, causal: bool, window: int | None,
                     device: torch.device | str) -> BlockMask | None:
    """A new BlockMask for the problem (what a mask's creation time measures); None when
    nothing is masked."""
    if not masks_anything(sq, sk, causal=causal, window=window):
        return None
    return create_block_mask(band_mask_mod(sk - sq, causal=causal, window=window), None, None,
                             sq, sk, device=device)


def dense_mask_builder(p: Any, device: torch.device | str) -> Callable[[], Any] | None:
    """What builds the BlockMask of a dense problem (its computed rows: those that see a
    key), for timing; None when the problem takes none."""
    c = p.computed
    if not masks_anything(c.seq, c.kv_seq, causal=p.causal, window=p.window):
        return None
    return functools.partial(build_block_mask, c.seq, c.kv_seq, causal=p.causal,
                             window=p.window, device=device)


def varlen_mask_builder(cu_seqlens: torch.Tensor, *, causal: bool,
                        window: int | None) -> Callable[[], Any]:
    """What builds the document mask of a packed batch, for timing."""
    return functools.partial(build_document_mask, cu_seqlens, causal=causal, window=window)


def block_mask(sq: int, sk: int, *, causal: bool, window: int | None,
               device: torch.device | str) -> BlockMask | None:
    """`build_block_mask`, built once per problem and process."""
    key = (sq, sk, causal, window, str(device))
    if key not in _MASKS:
        _MASKS[key] = build_block_mask(sq, sk, causal=causal, window=window, device=device)
    return _MASKS[key]


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float,
          window: int | None) -> torch.Tensor:
    mask = block_mask(q.shape[2], k.shape[2], causal=causal, window=window, device=q.device)
    return _compiled(q.device)(q, k, v, block_mask=mask, scale=scale,
                               enable_gqa=k.shape[1] != q.shape[1])


def flex_attention_fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                      scale: float | None = None, window: int | None = None,
                      **_: object) -> torch.Tensor:
    """q: (batch, heads, seq_q, dim); k, v: (batch, kv_heads, seq_k, dim). Causal bottom-right
    aligned, `window` a left sliding window (with causal); rows that see no key are zeros
    (not computed, as in every llmbench implementation)."""
    require_causal_window(causal, window)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return skip_keyless_rows(_flex, q, k, v, causal=causal, scale=scale, window=window)


def document_mask_mod(cu_seqlens: torch.Tensor, *, causal: bool,
                      window: int | None) -> Callable[..., Any]:
    """The mask of a packed batch: a query sees the keys of its own sequence (cu_seqlens:
    where each starts), causal and windowed within it."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    doc = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device),
                                  lengths)

    def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        allowed = doc[q_idx] == doc[kv_idx]
        if causal:
            allowed = allowed & (q_idx >= kv_idx)
        if window is not None:
            allowed = allowed & (q_idx - kv_idx <= window)
        return allowed
    return mask_mod


def build_document_mask(cu_seqlens: torch.Tensor, *, causal: bool,
                        window: int | None) -> BlockMask:
    """A new BlockMask for a packed batch (what a varlen step builds per batch)."""
    total = int(cu_seqlens[-1])
    return create_block_mask(document_mask_mod(cu_seqlens, causal=causal, window=window),
                             None, None, total, total, device=cu_seqlens.device)


def flex_varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          cu_seqlens: torch.Tensor, max_seqlen: int, *, causal: bool,
                          scale: float | None = None, window: int | None = None,
                          **_: object) -> torch.Tensor:
    """Packed sequences as flash_attn_varlen_func takes them: q (total, heads, dim), k/v
    (total, kv_heads, dim), cu_seqlens (batch + 1) cumulative lengths; one FlexAttention call
    over the whole pack with the document mask (built once per pack and process)."""
    require_causal_window(causal, window)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    key = ("varlen", tuple(cu_seqlens.tolist()), causal, window, str(q.device))
    if key not in _MASKS:
        _MASKS[key] = build_document_mask(cu_seqlens, causal=causal, window=window)
    qb, kb, vb = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    out = _compiled(q.device)(qb, kb, vb, block_mask=_MASKS[key], scale=scale,
                              enable_gqa=k.shape[1] != q.shape[1])
    return out.squeeze(0).transpose(0, 1)


@functools.cache
def backward_refusal(device: str) -> str | None:
    """torch's refusal of FlexAttention's backward on `device`, or None when it has one: asked
    with a call on tiny tensors that need gradients (the check precedes any compilation)."""
    if device != "cpu":
        return None
    x = torch.zeros(1, 1, 16, 16, requires_grad=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex_attention(x, x, x)
    except NotImplementedError as exc:
        from llmbench.core.errors import one_line

        return f"{one_line(str(exc))} (torch {torch.__version__})"
    return None


def predicted_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """On a GPU, a fused kernel's (`sdpa.predicted_fused_extra_bytes`: the output and the
    log-sum-exp; the backward's gradients). On a CPU, forward only: what torch allocates, twice
    the output of the rows that see a key (traced with torch.profiler, torch 2.13: the output
    and a buffer of the same size, at every shape tried, GQA and windows included), and, when
    rows see no key, the zero rows concatenated as in every implementation (Qr + Z + Q). The
    resident set the CPU benchmark reads grows by about one output (4.2 MiB against 8 MiB at
    b1 h8 seq 2048 d64): the second buffer's pages are not all written. The block mask (a few
    integers per block of 128 x 128) is built before the call and not counted."""
    from llmbench.kernels.sdpa import predicted_fused_extra_bytes

    if p.device != "cpu":
        return predicted_fused_extra_bytes(p)
    qr, q = p.computed.q_bytes, p.q_bytes
    z = q - qr
    return max(2 * qr, qr + z + q if z else 0)
