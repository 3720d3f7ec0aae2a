"""fp64 reference attention, written independently of every implementation under test."""

from __future__ import annotations

import math

import torch


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                        scale: float | None = None, rows: torch.Tensor | None = None,
                        chunk: int = 64, window: int | None = None) -> torch.Tensor:
    """softmax(Q K^T * scale + causal mask) V in fp64, for all query rows or only `rows`.

    Layout (batch, heads, seq, dim); K/V may have fewer heads (GQA) and another length. The
    causal mask is bottom-right aligned: query row i sits at absolute position
    i + seq_k - seq_q and sees keys 0..position; `window`, a left sliding window, narrows that to
    position - window..position (with causal). A row that sees no key (causal, more queries
    than keys) is zeros. Rows are computed `chunk` at a time so that a full-size check needs
    memory for chunk x seq_k scores, not seq x seq_k. Differentiable (no in-place ops on graph
    tensors), for checking gradients at small sizes.
    """
    if window is not None and not causal:
        raise ValueError("a sliding window is a left window: it needs causal=True")
    b, h, s, d = q.shape
    sk = k.shape[2]
    g = h // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    k64 = k.double().repeat_interleave(g, dim=1)
    v64 = v.double().repeat_interleave(g, dim=1)
    rows = torch.arange(s, device=q.device) if rows is None else rows.to(q.device)
    keys = torch.arange(sk, device=q.device)
    outs = []
    for start in range(0, rows.numel(), chunk):
        r = rows[start:start + chunk]
        position = (r + (sk - s))[:, None]
        banned = torch.zeros(r.numel(), sk, dtype=torch.bool, device=q.device)
        if causal:
            banned |= keys[None, :] > position
        if window is not None:
            banned |= keys[None, :] < position - window
        sees = ~banned.all(dim=-1, keepdim=True)  # (rows, 1): False for a row with no key
        scores = (q[:, :, r].double() @ k64.transpose(-2, -1)) * scale
        # A row with no key keeps its scores (a finite softmax) and is zeroed after it.
        scores = scores.masked_fill(banned & sees, float("-inf"))
        outs.append((torch.softmax(scores, dim=-1) * sees) @ v64)
    return torch.cat(outs, dim=2)


def check_rows(seq: int, count: int) -> torch.Tensor:
    """`count` query rows spread evenly over [0, seq), always including the first and last."""
    if count >= seq:
        return torch.arange(seq)
    return torch.linspace(0, seq - 1, count).round().long().unique()
