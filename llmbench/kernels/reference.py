"""fp64 reference attention, written independently of every implementation under test."""

from __future__ import annotations

import math

import torch


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                        scale: float | None = None, rows: torch.Tensor | None = None,
                        chunk: int = 64, window: int | None = None) -> torch.Tensor:
    """softmax(Q K^T * scale + causal mask) V in fp64, for all query rows or only `rows`.

    Layout (batch, heads, seq, dim); K/V may have fewer heads (GQA). Rows are computed `chunk`
    at a time so that a full-size check needs memory for chunk x seq scores, not seq x seq.
    Differentiable (no in-place ops on graph tensors), for checking gradients at small sizes.
    `window`: a left sliding window (query i sees keys i - window .. i, with causal).
    """
    b, h, s, d = q.shape
    g = h // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    k64 = k.double().repeat_interleave(g, dim=1)
    v64 = v.double().repeat_interleave(g, dim=1)
    rows = torch.arange(s, device=q.device) if rows is None else rows.to(q.device)
    keys = torch.arange(k.shape[2], device=q.device)
    outs = []
    for start in range(0, rows.numel(), chunk):
        r = rows[start:start + chunk]
        scores = (q[:, :, r].double() @ k64.transpose(-2, -1)) * scale
        if causal:
            scores = scores.masked_fill(keys[None, :] > r[:, None], float("-inf"))
        if window is not None:
            scores = scores.masked_fill(keys[None, :] < r[:, None] - window, float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ v64)
    return torch.cat(outs, dim=2)


def check_rows(seq: int, count: int) -> torch.Tensor:
    """`count` query rows spread evenly over [0, seq), always including the first and last."""
    if count >= seq:
        return torch.arange(seq)
    return torch.linspace(0, seq - 1, count).round().long().unique()
