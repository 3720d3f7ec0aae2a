"""The textbook attention: softmax(Q K^T / sqrt(d) + mask) V, materializing the score matrix.

GQA/MQA: the query heads that share a key/value head are grouped along a new axis and K, V
broadcast along it. torch.matmul materializes that broadcast: it copies K (for QK^T) and V
(for PV) out to every query head unless the batch dims fold into a view (batch * kv_heads
== 1), and the backward pass computes dK and dV per query head before summing them over the
group (`predicted_extra_bytes` counts both).
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


def matmul_copies_group(p) -> bool:  # noqa: ANN001 - AttentionProblem
    """Does torch.matmul copy K (and V) to every query head? It broadcasts the (b, kv_heads, 1)
    batch dims of K against Q's (b, kv_heads, g) by expand + reshape to one batch dim; the
    reshape is a view only when the stride-0 group axis has nothing of size > 1 before it
    (g == 1, or batch * kv_heads == 1), else it copies (torch 2.13, aten's matmul)."""
    return p.groups > 1 and p.batch * p.kv_heads > 1


def predicted_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """Peak bytes above the inputs, phase by phase, from what torch allocates (each tensor
    traced with torch.profiler's memory events, torch 2.13; the CUDA caching allocator counts
    the same tensors; on a CPU, fp16/bf16 matmuls add oneDNN's own temporaries, not counted).
    r = the query rows that see a key (all of them unless causal with more queries than keys;
    the others are zeros, concatenated after), e = bytes per element:

        S  = b*h*r*s_k*e   one score matrix           M  = r*s_k (bool mask; 0 when unmasked)
        Qr = b*h*r*d*e     scaled Q, the r rows' output  Q = b*h*s_q*d*e, Z = Q - Qr (zero rows)
        KV = b*kv_heads*s_k*d*e  K or V, dK or dV      Xg = b*h*s_k*d*e  K or V per query head
        X  = Xg if torch.matmul copies K and V to the query heads (GQA/MQA, `matmul_copies_group`)
             else 0

    Forward: max(2S + M + X + Qr [scores, probabilities, mask, V's copy, output],
                 Qr + Z + Q [the zero rows concatenated, when there are any]).
    Forward + backward, with A = Qr + 2X + M + S + Q kept for the backward (scaled Q, the K and
    V copies, mask, probabilities, output):
        max(2S + M + 2X + 2Qr   the forward's peak
            A + Qr + Z          the zero rows concatenated
            A + Xg + S (+ KV when the group is broadcast without a copy)  dV per head, dP
            A - X + KV + 2S     dV, dP, dS
            A - X - M + KV + Qr + Xg   dS, dQ (scaled), dK per head
            Q + 2KV + Qr + Xg   dK per head summed over the group
            Q + 2KV + 2Qr       dQ
            2Q + 2KV + Qr       dQ of the zero rows, when there are any)."""
    c = p.computed
    s, m, qr, q, kv = c.score_bytes, c.mask_elements, c.q_bytes, p.q_bytes, p.kv_bytes // 2
    xg = p.spread_bytes
    x = xg if matmul_copies_group(p) else 0
    z = q - qr
    if p.mode == "fwd":
        return max(2 * s + m + x + qr, qr + z + q if z else 0)
    a = qr + 2 * x + m + s + q
    phases = [2 * s + m + 2 * x + 2 * qr,
              a + xg + s + (kv if p.groups > 1 and not x else 0),
              a - x + kv + 2 * s,
              a - x - m + kv + qr + xg,
              q + 2 * kv + qr + xg,
              q + 2 * kv + 2 * qr]
    if z:
        phases += [a + qr + z, 2 * q + 2 * kv + qr]
    return max(phases)
