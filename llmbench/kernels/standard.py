"""The textbook attention: softmax(Q K^T / sqrt(d) + mask) V, materializing the score matrix.

GQA/MQA natively: the query heads that share a key/value head are grouped along a new axis, so
K and V are broadcast, not copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def require_causal_window(causal: bool, window: int | None) -> None:
    """A sliding window here is a left window over a causal mask (flash-attn's (W, 0)); without
    causal it would mean something else in each implementation, so every one refuses it."""
    if window is not None and not causal:
        raise ValueError("a sliding window is a left window: it needs causal=True")


def keyless_rows(sq: int, sk: int, *, causal: bool) -> int:
    """Leading query rows that see no key: bottom-right aligned, a causal mask over more queries
    than keys puts the first sq - sk rows before key 0. Their output is zeros."""
    return max(0, sq - sk) if causal else 0


def band_mask(sq: int, sk: int, *, causal: bool, window: int | None,
              device: torch.device) -> torch.Tensor | None:
    """True where a query may NOT attend, bottom-right aligned: query row i sits at position
    i + sk - sq and, causal, sees keys 0..position; with a left window W, position - W..
    position. None when nothing is masked (no mask; causal over a single query row, which sees
    every key; a window as long as the keys)."""
    offset = sk - sq
    causal_masks = causal and sq > 1
    window_masks = window is not None and sk > window + 1
    if not causal_masks and not window_masks:
        return None
    mask = torch.zeros(sq, sk, dtype=torch.bool, device=device)
    if causal:
        mask |= torch.ones(sq, sk, dtype=torch.bool, device=device).triu(offset + 1)
    if window is not None:
        mask |= torch.ones(sq, sk, dtype=torch.bool, device=device).tril(offset - window - 1)
    return mask


def skip_keyless_rows(attend: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor,
                      v: torch.Tensor, *, causal: bool, **kw: Any) -> torch.Tensor:
    """`attend(q, k, v, causal=causal, **kw)` for the rows that see a key, zeros for the leading
    rows that see none (causal with more queries than keys), which then get no gradient. The
    rows left are square with the keys, so any top-left causal mask is also bottom-right."""
    skip = keyless_rows(q.shape[2], k.shape[2], causal=causal)
    if not skip:
        return attend(q, k, v, causal=causal, **kw)
    out = attend(q[:, :, skip:], k, v, causal=causal, **kw)
    return torch.cat([out.new_zeros(*out.shape[:2], skip, out.shape[3]), out], dim=2)


def standard_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                       scale: float | None = None, window: int | None = None,
                       **_: object) -> torch.Tensor:
    """q: (batch, heads, seq_q, dim); k, v: (batch, kv_heads, seq_k, dim). Causal is bottom-right
    aligned (query i sees keys 0..i + seq_k - seq_q); `window`: each query also sees at most
    `window` earlier keys (a left sliding window, with causal). Rows that see no key are 0."""
    require_causal_window(causal, window)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return skip_keyless_rows(_standard, q, k, v, causal=causal, scale=scale, window=window)


def _standard(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float,
              window: int | None) -> torch.Tensor:
    b, h, sq, d = q.shape
    kvh, sk = k.shape[1], k.shape[2]
    g = h // kvh
    qg = q.view(b, kvh, g, sq, d)
    # (Q * scale) K^T equals Q K^T * scale and allocates a q-sized temporary, not a second
    # score matrix.
    scores = torch.matmul(qg * scale, k.unsqueeze(2).transpose(-2, -1))  # (b, kvh, g, sq, sk)
    mask = band_mask(sq, sk, causal=causal, window=window, device=q.device)
    if mask is not None:
        scores.masked_fill_(mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v.unsqueeze(2)).view(b, h, sq, d)


def predicted_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """Scores and probabilities (two score matrices, seq x seq_k), the bool mask, the scaled
    product and the output; forward + backward keeps the probabilities and allocates two more
    score-sized gradients."""
    if p.mode == "fwd":
        return 2 * p.score_bytes + p.mask_elements + p.q_bytes
    return 3 * p.score_bytes + p.mask_elements + p.q_bytes + p.grad_bytes
