"""FlashAttention in plain PyTorch: tiles of Q, K, V and an online softmax.

Forward (FlashAttention-2, Dao 2023, algorithm 1): for each block of `block_m` query rows, walk
the key/value blocks of `block_n` rows keeping, per row, the running maximum m, the running
normalizer l and an unnormalized accumulator; rescale both by exp(m_old - m_new) when the maximum
grows. Only (block_m x block_n) scores exist at a time, so the extra memory is O(seq), not
O(seq^2). The log-sum-exp m + log(l) is saved for the backward pass, which recomputes each score
tile instead of storing it (algorithm 2). With `causal`, key blocks entirely above the diagonal
are skipped and only blocks that cross it are masked. GQA/MQA: the query heads of a group are
stacked into one tall tile against their shared key/value head. Accumulation follows the input:
fp64 inputs are computed in fp64, every other dtype in fp32.

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


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 inputs are computed in fp64; every other dtype accumulates in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _group_rows(x: torch.Tensor, kvh: int, i0: int, i1: int, dtype: torch.dtype
                ) -> torch.Tensor:
    """(b, h, s, d)[:, :, i0:i1] -> a new (b, kvh, g * (i1 - i0), d) tensor in `dtype`,
    grouped by kv head (one allocation: the caller may work on it in place)."""
    b, h, _, d = x.shape
    rows = x[:, :, i0:i1].to(dtype, memory_format=torch.contiguous_format, copy=True)
    return rows.view(b, kvh, (h // kvh) * (i1 - i0), d)


def _batched(t: torch.Tensor) -> torch.Tensor:
    """(b, kvh, n, m) -> (b * kvh, n, m) for bmm: a view where the strides allow, else a copy
    (so only for inputs; the accumulators are written through `_batched_view`)."""
    return t.reshape(t.shape[0] * t.shape[1], t.shape[2], t.shape[3])


def _batched_view(t: torch.Tensor) -> torch.Tensor:
    """(b, kvh, n, m) -> (b * kvh, n, m), always a view: what is written into it lands in t."""
    return t.view(t.shape[0] * t.shape[1], t.shape[2], t.shape[3])


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
    kvh = k.shape[1]
    acc_dtype = accumulation_dtype(q.dtype)
    out = torch.empty_like(q)
    lse = torch.empty(b, h, s, dtype=acc_dtype, device=q.device)
    out_g = out.view(b, kvh, h // kvh, s, d)
    lse_g = lse.view(b, kvh, h // kvh, s)
    kf, vf = k.to(acc_dtype), v.to(acc_dtype)  # no copy when the inputs are in acc_dtype
    for i0 in range(0, s, block_m):
        i1 = min(i0 + block_m, s)
        acc, row_lse = _forward_rows(q, kf, vf, i0, i1, causal, scale, block_n, window)
        out_g[:, :, :, i0:i1] = acc.view(b, kvh, h // kvh, i1 - i0, d)  # cast to q's dtype
        lse_g[:, :, :, i0:i1] = row_lse.view(b, kvh, h // kvh, i1 - i0)
        del acc, row_lse  # before the next block's are allocated
    return out, lse


def _forward_rows(q: torch.Tensor, kf: torch.Tensor, vf: torch.Tensor, i0: int, i1: int,
                  causal: bool, scale: float, block_n: int, window: int | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One block of query rows against the key/value blocks it sees: the normalized output
    (b, kvh, g * rows, d) and the log-sum-exp, in the accumulation dtype. Each score tile is
    turned into probabilities in place, and P V is added into the accumulator in place."""
    b, _, s, d = q.shape
    kvh, sk = kf.shape[1], kf.shape[2]
    offset = sk - s  # bottom-right: query row i sits at key position i + offset
    qi = _group_rows(q, kvh, i0, i1, kf.dtype).mul_(scale)
    rows = qi.shape[2]
    m = torch.full((b, kvh, rows), float("-inf"), dtype=kf.dtype, device=q.device)
    l = torch.zeros((b, kvh, rows), dtype=kf.dtype, device=q.device)  # noqa: E741 - the paper's
    acc = torch.zeros((b, kvh, rows, d), dtype=kf.dtype, device=q.device)
    # keys past the last row's position are all masked, and those before the first row's window
    j_end = min(i1 + offset, sk) if causal else sk
    j_start = 0 if window is None else max(0, i0 + offset - window) // block_n * block_n
    for j0 in range(j_start, j_end, block_n):
        m, l = _forward_tile(qi, kf, vf, acc, m, l, i0, i1, j0,  # noqa: E741
                             min(j0 + block_n, j_end), causal, window, offset)
    return acc.div_(l.unsqueeze(-1)), m + torch.log(l)


def _forward_tile(qi: torch.Tensor, kf: torch.Tensor, vf: torch.Tensor, acc: torch.Tensor,
                  m: torch.Tensor, norm: torch.Tensor, i0: int, i1: int, j0: int, j1: int,
                  causal: bool, window: int | None, offset: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One (query block, key block) tile of the online softmax: adds P V into `acc` in place
    and returns the new running maximum m and normalizer l. Its score tile dies with the
    call."""
    g = qi.shape[2] // (i1 - i0)
    p = qi @ kf[:, :, j0:j1].transpose(-2, -1)  # scores, (b, kvh, rows, j1 - j0)
    if _needs_mask(i0, i1, j0, j1, causal, window, offset):
        p.masked_fill_(_mask(i0, i1, j0, j1, g, window, offset, qi.device), float("-inf"))
    m_new = torch.maximum(m, p.amax(dim=-1))
    # A row may see no key in this tile (window): keep exp away from -inf - -inf.
    m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
    p.sub_(m_safe.unsqueeze(-1)).exp_()  # the probabilities, unnormalized
    alpha = torch.exp(m - m_safe)
    acc.mul_(alpha.unsqueeze(-1))
    _batched_view(acc).baddbmm_(_batched(p), _batched(vf[:, :, j0:j1]))
    return m_new, norm * alpha + p.sum(dim=-1)


def _backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float, block_m: int,
              block_n: int, window: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, h, s, d = q.shape
    kvh, sk = k.shape[1], k.shape[2]
    g = h // kvh
    acc_dtype = lse.dtype
    # D_i = rowsum(dO_i * O_i): the softmax Jacobian's correction term, block_m rows at a time.
    delta = torch.empty(b, h, s, dtype=acc_dtype, device=q.device)
    for i0 in range(0, s, block_m):
        rows = slice(i0, min(i0 + block_m, s))
        delta[:, :, rows] = (do[:, :, rows].to(acc_dtype) * out[:, :, rows]).sum(dim=-1)
    dq = torch.zeros(b, kvh, g, s, d, dtype=acc_dtype, device=q.device)
    dk = torch.zeros(b, kvh, sk, d, dtype=acc_dtype, device=q.device)
    dv = torch.zeros(b, kvh, sk, d, dtype=acc_dtype, device=q.device)
    kf, vf = k.to(acc_dtype), v.to(acc_dtype)
    for j0 in range(0, sk, block_n):
        j1 = min(j0 + block_n, sk)
        _backward_keys(do, q, kf, vf, lse, delta, dq, dk, dv, j0, j1, causal, scale, block_m,
                       window)
    return (dq.view(b, h, s, d).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype))


def _backward_keys(do: torch.Tensor, q: torch.Tensor, kf: torch.Tensor, vf: torch.Tensor,
                   lse: torch.Tensor, delta: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor,
                   dv: torch.Tensor, j0: int, j1: int, causal: bool, scale: float,
                   block_m: int, window: int | None) -> None:
    """One key/value block against the query blocks that see it: adds into dq, writes its rows
    of dk and dv. Probabilities and dS are computed in place in their score tiles."""
    b, h, s, d = q.shape
    kvh, sk = kf.shape[1], kf.shape[2]
    g = h // kvh
    offset = sk - s
    kj, vj = kf[:, :, j0:j1], vf[:, :, j0:j1]
    dkj, dvj = dk[:, :, j0:j1], dv[:, :, j0:j1]
    lse_g = lse.view(b, kvh, g, s)
    delta_g = delta.view(b, kvh, g, s)
    # Query rows at positions before j0 see none of this block (causal); rows more than
    # `window` past its last key see none either.
    first = max(0, j0 - offset) // block_m * block_m if causal else 0
    last = s if window is None else min(s, j1 + window - offset)
    for i0 in range(first, last, block_m):
        _backward_tile(do, q, kj, vj, lse_g, delta_g, dq, dkj, dvj, i0, min(i0 + block_m, s),
                       j0, j1, causal, scale, window, offset)


def _backward_tile(do: torch.Tensor, q: torch.Tensor, kj: torch.Tensor, vj: torch.Tensor,
                   lse_g: torch.Tensor, delta_g: torch.Tensor, dq: torch.Tensor,
                   dkj: torch.Tensor, dvj: torch.Tensor, i0: int, i1: int, j0: int, j1: int,
                   causal: bool, scale: float, window: int | None, offset: int) -> None:
    """One (query block, key block) tile of the backward pass: recomputes P from the
    log-sum-exp, adds into dv, dq and dk. Its tiles (P, then dP turned into dS in place) die
    with the call."""
    b, kvh, g, _ = lse_g.shape
    n = i1 - i0
    d = q.shape[-1]
    qi = _group_rows(q, kvh, i0, i1, kj.dtype)
    doi = _group_rows(do, kvh, i0, i1, kj.dtype)
    p = (qi @ kj.transpose(-2, -1)).mul_(scale)  # scores, then probabilities in place
    if _needs_mask(i0, i1, j0, j1, causal, window, offset):
        p.masked_fill_(_mask(i0, i1, j0, j1, g, window, offset, q.device), float("-inf"))
    p.sub_(lse_g[:, :, :, i0:i1].reshape(b, kvh, g * n).unsqueeze(-1)).exp_()
    _batched_view(dvj).baddbmm_(_batched(p).transpose(-2, -1), _batched(doi))
    ds = doi @ vj.transpose(-2, -1)  # dP, then dS in place
    ds.sub_(delta_g[:, :, :, i0:i1].reshape(b, kvh, g * n).unsqueeze(-1)).mul_(p)
    del p
    dq[:, :, :, i0:i1] += (ds @ kj).mul_(scale).view(b, kvh, g, n, d)
    _batched_view(dkj).baddbmm_(_batched(ds).transpose(-2, -1), _batched(qi), alpha=scale)


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
    """Peak bytes above the inputs, phase by phase, from what torch allocates (traced with
    torch.profiler's memory events). With Qr, Q, Z, KV as in `standard.predicted_extra_bytes`
    (r = the rows that see a key), a = the accumulation dtype's bytes (8 for fp64, else 4),
    tm = min(block_m, r) query rows and tn = min(block_n, s_k) keys a tile:

        L  = b*h*r*a        the log-sum-exp (and the backward's D = rowsum(dO * O))
        U  = 2*KV*a/e       K and V in the accumulation dtype, when the inputs are not in it
        Qt = b*h*tm*d*a     a block of Q (scaled) or dO, and the output accumulator
        T  = b*h*tm*tn*a    a score tile (probabilities, then dP and dS, made in place)
        V  = b*h*tm*a       one per-row vector (running max, normalizer, ...)
        Mt = g*tm*tn (x2 with a window) + 8*g*tm: a tile's mask, when the problem masks

    Forward: max(Qr + L + U + 2Qt + 2V + T + max(Mt, 6V), Qr + Z + Q (the zero rows)).
    Forward + backward, with O = Q (+ Qr, the rows' own saved output, when there are zero
    rows), G = Qr when dO of the rows is a copy (there are zero rows) and the gradient
    accumulators dQ, dK, dV in the accumulation dtype, Dq = (Qr + 2KV)*a/e:
        max(the forward's,  Qr + L + Z + Q (zero rows),
            O + 2L + G + Dq + U + 2Qt + 2T + V   a block of Q and dO, P and dS,
            O + 2L + G + Dq + U + Qr + 2KV       the gradients cast back (fp16/bf16),
            2Q + 2KV + Qr                        the zero rows' dQ)."""
    bm = tile.block_m if tile else DEFAULT_BLOCK_M
    bn = tile.block_n if tile else DEFAULT_BLOCK_N
    c = p.computed
    e = p.elem_bytes
    a = 8 if e == 8 else 4
    qr, q, kv, rows = c.q_bytes, p.q_bytes, p.kv_bytes // 2, c.seq
    z = q - qr
    tm, tn = min(bm, rows), min(bn, p.kv_seq)
    lse = c.batch * c.heads * rows * a
    up = 0 if e == a else 2 * kv * a // e
    heads = c.batch * c.heads
    qt, t, v = heads * tm * p.head_dim * a, heads * tm * tn * a, heads * tm * a
    masks = c.mask_elements > 0
    mt = (p.groups * tm * tn * (2 if p.window is not None else 1) + 8 * p.groups * tm
          if masks else 0)
    forward = qr + lse + up + 2 * qt + 2 * v + t + max(mt, 6 * v)
    if p.mode == "fwd":
        return max(forward, qr + z + q if z else 0)
    o = q + (qr if z else 0)
    g = qr if z else 0
    dq = (qr + 2 * kv) * a // e
    base = o + 2 * lse + g + dq + up
    phases = [forward, base + 2 * qt + 2 * t + v]
    if e != a:
        phases.append(base + qr + 2 * kv)
    if z:
        phases += [qr + lse + z + q, 2 * q + 2 * kv + qr]
    return max(phases)
