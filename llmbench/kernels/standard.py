"""The textbook attention: softmax(Q K^T / sqrt(d) + mask) V, materializing the score matrix.

GQA/MQA natively: the query heads that share a key/value head are grouped along a new axis, so
K and V are broadcast, not copied.
"""

from __future__ import annotations

import math

import torch


def band_mask(sq: int, sk: int, *, causal: bool, window: int | None,
              device: torch.device) -> torch.Tensor | None:
    """True where a query may NOT attend: above the diagonal (causal, top-left aligned) and,
    with a left window W, more than W keys back. None when nothing is masked."""
    if not causal and window is None:
        return None
    mask = torch.ones(sq, sk, dtype=torch.bool, device=device).triu(1)
    if window is not None:
        mask |= torch.ones(sq, sk, dtype=torch.bool, device=device).tril(-window - 1)
    return mask


def standard_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                       scale: float | None = None, window: int | None = None,
                       **_: object) -> torch.Tensor:
    """q: (batch, heads, seq_q, dim); k, v: (batch, kv_heads, seq_k, dim). `window`: each
    query also sees at most `window` earlier keys (a left sliding window, with causal)."""
    b, h, sq, d = q.shape
    kvh, sk = k.shape[1], k.shape[2]
    g = h // kvh
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qg = q.view(b, kvh, g, sq, d)
    # (Q * scale) K^T equals Q K^T * scale and allocates a q-sized temporary, not a second
    # score matrix.
    scores = torch.matmul(qg * scale, k.unsqueeze(2).transpose(-2, -1))  # (b, kvh, g, sq, sk)
    # Top-left aligned, as SDPA's is_causal: query i sees keys 0..i (i - window..i).
    mask = band_mask(sq, sk, causal=causal, window=window, device=q.device)
    if mask is not None:
        scores.masked_fill_(mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v.unsqueeze(2)).view(b, h, sq, d)


def predicted_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """Scores and probabilities (two score matrices), the bool mask, the scaled product and the
    output; forward + backward keeps the probabilities and allocates two more score-sized
    gradients."""
    mask = p.seq * p.seq if p.causal else 0
    if p.mode == "fwd":
        return 2 * p.score_bytes + mask + p.q_bytes
    return 3 * p.score_bytes + mask + p.q_bytes + p.grad_bytes
