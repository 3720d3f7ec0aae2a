"""FlashAttention in plain PyTorch: tiles of Q, K, V and an online softmax.

Forward (FlashAttention-2, Dao 2023, algorithm 1): for each block of `block_m` query rows, walk
the key/value blocks of `block_n` rows keeping, per row, the running maximum m, the running
normalizer l and an unnormalized accumulator; rescale both by exp(m_old - m_new) when the maximum
grows. Only (block_m x block_n) scores exist at a time, so the extra memory is O(seq), not
O(seq^2). The log-sum-exp m + log(l) is saved for the backward pass, which recomputes each score
tile instead of storing it (algorithm 2). With `causal`, key blocks entirely above the diagonal
are skipped and only blocks that cross it are masked. GQA/MQA: the query heads of a group are
stacked into one tall tile against their shared key/value head. Accumulation is in fp32.

Queries and keys may differ in length; the causal diagonal is then bottom-right aligned: query
row i sits at position i + seq_k - seq_q and sees keys 0..position (position - window..position
with a left window). Leading rows that see no key (more queries than keys) are not computed:
their output is zeros.
"""

from __future__ import annotations

import math

import torch

from llmbench.kernels.standard import skip_keyless_rows

DEFAULT_BLOCK_M = 128
DEFAULT_BLOCK_N = 128


def _group_rows(x: torch.Tensor, kvh: int, i0: int, i1: int) -> torch.Tensor:
    """(b, h, s, d)[:, :, i0:i1] -> (b, kvh, g * (i1 - i0), d) in fp32, grouped by kv head."""
    b, h, _, d = x.shape
    g = h // kvh
    return x[:, :, i0:i1].float().reshape(b, kvh, g * (i1 - i0), d)


def _mask(i0: int, i1: int, j0: int, j1: int, g: int, window: int | None, offset: int,
          device: torch.device) -> torch.Tensor:
    """True where the query may not attend: after its position i + offset (causal) or more than
    `window` back."""
    rows = torch.arange(i0 + offset, i1 + offset, device=device).repeat(g)  # heads stacked
    cols = torch.arange(j0, j1, device=device)
    masked = cols[None, :] > rows[:, None]
    if window is not None:
        masked |= cols[None, :] < rows[:, None] - window
    return masked


def _needs_mask(i0: int, i1: int, j0: int, j1: int, causal: bool, window: int | None,
                offset: int) -> bool:
    """Does the (query i0..i1, key j0..j1) tile cross the diagonal or the window's edge? Query
    row i sits at position i + offset."""
    crosses_diagonal = causal and j1 - 1 > i0 + offset
    crosses_window = window is not None and j0 < i1 - 1 + offset - window
    return crosses_diagonal or crosses_window


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
             block_m: int, block_n: int, window: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, s, d = q.shape
    kvh, sk = k.shape[1], k.shape[2]
    g = h // kvh
    offset = sk - s  # bottom-right: query row i sits at key position i + offset
    out = torch.empty_like(q)
    lse = torch.empty(b, h, s, dtype=torch.float32, device=q.device)
    out_g = out.view(b, kvh, g, s, d)
    lse_g = lse.view(b, kvh, g, s)
    kf, vf = k.float(), v.float()
    for i0 in range(0, s, block_m):
        i1 = min(i0 + block_m, s)
        qi = _group_rows(q, kvh, i0, i1) * scale
        rows = qi.shape[2]
        m = torch.full((b, kvh, rows), float("-inf"), device=q.device)
        l = torch.zeros((b, kvh, rows), device=q.device)  # noqa: E741 - the paper's name
        acc = torch.zeros((b, kvh, rows, d), device=q.device)
        # keys past the last row's position are all masked, and those before the first row's
        # window
        j_end = min(i1 + offset, sk) if causal else sk
        j_start = 0 if window is None else max(0, i0 + offset - window) // block_n * block_n
        for j0 in range(j_start, j_end, block_n):
            j1 = min(j0 + block_n, j_end)
            scores = qi @ kf[:, :, j0:j1].transpose(-2, -1)  # (b, kvh, rows, j1 - j0)
            if _needs_mask(i0, i1, j0, j1, causal, window, offset):
                scores.masked_fill_(_mask(i0, i1, j0, j1, g, window, offset, q.device),
                                    float("-inf"))
            m_new = torch.maximum(m, scores.amax(dim=-1))
            # A row may see no key in this tile (window): keep exp away from -inf - -inf.
            m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(scores - m_safe.unsqueeze(-1))
            alpha = torch.exp(m - m_safe)
            l = l * alpha + p.sum(dim=-1)  # noqa: E741
            acc = acc * alpha.unsqueeze(-1) + p @ vf[:, :, j0:j1]
            m = m_new
        out_g[:, :, :, i0:i1] = (acc / l.unsqueeze(-1)).view(b, kvh, g, i1 - i0, d).to(q.dtype)
        lse_g[:, :, :, i0:i1] = (m + torch.log(l)).view(b, kvh, g, i1 - i0)
    return out, lse


def _backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float, block_m: int,
              block_n: int, window: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, h, s, d = q.shape
    kvh, sk = k.shape[1], k.shape[2]
    g = h // kvh
    offset = sk - s
    # D_i = rowsum(dO_i * O_i): the softmax Jacobian's correction term.
    delta = (do.float() * out.float()).sum(dim=-1)  # (b, h, s)
    dq = torch.zeros(b, kvh, g, s, d, device=q.device)
    dk = torch.zeros(b, kvh, sk, d, device=q.device)
    dv = torch.zeros(b, kvh, sk, d, device=q.device)
    kf, vf = k.float(), v.float()
    lse_g = lse.view(b, kvh, g, s)
    delta_g = delta.view(b, kvh, g, s)
    for j0 in range(0, sk, block_n):
        j1 = min(j0 + block_n, sk)
        kj, vj = kf[:, :, j0:j1], vf[:, :, j0:j1]
        dkj = torch.zeros_like(kj)
        dvj = torch.zeros_like(vj)
        # Query rows at positions before j0 see none of this block (causal); rows more than
        # `window` past its last key see none either.
        first = max(0, j0 - offset) // block_m * block_m if causal else 0
        last = s if window is None else min(s, j1 + window - offset)
        for i0 in range(first, last, block_m):
            i1 = min(i0 + block_m, s)
            n = i1 - i0
            qi = _group_rows(q, kvh, i0, i1)
            doi = _group_rows(do, kvh, i0, i1)
            scores = (qi @ kj.transpose(-2, -1)) * scale
            if _needs_mask(i0, i1, j0, j1, causal, window, offset):
                scores.masked_fill_(_mask(i0, i1, j0, j1, g, window, offset, q.device),
                                    float("-inf"))
            lse_i = lse_g[:, :, :, i0:i1].reshape(b, kvh, g * n)
            p = torch.exp(scores - lse_i.unsqueeze(-1))
            dvj += p.transpose(-2, -1) @ doi
            dp = doi @ vj.transpose(-2, -1)
            ds = p * (dp - delta_g[:, :, :, i0:i1].reshape(b, kvh, g * n).unsqueeze(-1))
            dq[:, :, :, i0:i1] += (ds @ kj).view(b, kvh, g, n, d) * scale
            dkj += (ds.transpose(-2, -1) @ qi) * scale
        dk[:, :, j0:j1] = dkj
        dv[:, :, j0:j1] = dvj
    return (dq.view(b, h, s, d).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype))


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_m, block_n, window):  # noqa: ANN001
        out, lse = _forward(q, k, v, causal, scale, block_m, block_n, window)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (causal, scale, block_m, block_n, window)
        return out

    @staticmethod
    def backward(ctx, do):  # noqa: ANN001
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do.contiguous(), q, k, v, out, lse, *ctx.args)
        return dq, dk, dv, None, None, None, None, None


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                    scale: float | None = None, block_m: int = DEFAULT_BLOCK_M,
                    block_n: int = DEFAULT_BLOCK_N, window: int | None = None,
                    **_: object) -> torch.Tensor:
    """q: (batch, heads, seq_q, dim); k, v: (batch, kv_heads, seq_k, dim). Exact, O(seq) memory.
    Causal is bottom-right aligned (query i sees keys 0..i + seq_k - seq_q); `window`: a left
    sliding window (with causal); tiles wholly outside it are skipped."""
    if window is not None and not causal:
        raise ValueError("a sliding window is a left window: it needs causal=True")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return skip_keyless_rows(_tiled, q, k, v, causal=causal, scale=scale, block_m=block_m,
                             block_n=block_n, window=window)


def _tiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float,
           block_m: int, block_n: int, window: int | None) -> torch.Tensor:
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _TiledAttention.apply(q, k, v, causal, scale, block_m, block_n, window)
    return _forward(q, k, v, causal, scale, block_m, block_n, window)[0]


def predicted_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem, tile
    """Output, log-sum-exp, fp32 copies of K and V when the inputs are not fp32, and a few
    score tiles; the backward pass adds fp32 gradient accumulators."""
    bm = tile.block_m if tile else DEFAULT_BLOCK_M
    bn = tile.block_n if tile else DEFAULT_BLOCK_N
    rows = p.batch * p.heads * min(bm, p.seq)
    tiles = 4 * rows * min(bn, p.kv_seq) * 4 + 3 * rows * p.head_dim * 4
    upcast = 0 if p.dtype == "fp32" else p.kv_bytes * 4 // p.elem_bytes
    extra = p.q_bytes + p.lse_bytes + upcast + tiles
    if p.mode == "fwd+bwd":
        extra += p.grad_bytes * 4 // p.elem_bytes + p.lse_bytes + p.grad_bytes
    return extra
