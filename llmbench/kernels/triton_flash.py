"""llmbench's own FlashAttention-2 in Triton: forward and backward, GQA/MQA, causal masking
that skips fully masked tiles, a left sliding window, and variable-length packed batches.

Forward (Dao 2023, algorithm 1): each program owns BLOCK_M query rows of one (sequence, head)
and walks the key/value tiles it can see, keeping a running maximum and normalizer in base 2
(exp2 with the scale folded into log2(e)); it writes the output and the log-sum-exp. Backward
(algorithm 2) recomputes the probabilities from the log-sum-exp: one kernel per key/value tile
accumulates dK and dV over the query heads of its group (no atomics), one kernel per query tile
accumulates dQ.

Dense inputs are (batch, heads, seq, dim); packed varlen inputs are (total_tokens, heads, dim)
with cu_seqlens (int32, batch + 1), as flash_attn_varlen_func takes them. Both reach the same
kernels through strides and a per-sequence start offset. The tile (block_m, block_n,
num_warps, num_stages) comes from the selected profile. Under TRITON_INTERPRET=1 the kernels run
on the CPU (slowly, fp32 only), which is how CI tests them.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# The tile of the most recent forward launch (what the profile or an override made it).
last_launch: dict[str, int] = {}


@triton.jit
def _seq_bounds(CU, b, SEQ, VARLEN: tl.constexpr):
    if VARLEN:
        start = tl.load(CU + b)
        seqlen = tl.load(CU + b + 1) - start
    else:
        start = 0
        seqlen = SEQ
    return start, seqlen


@triton.jit
def _fwd_kernel(Q, K, V, OUT, LSE, CU, scale_log2,
                sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sob, soh, sos, slb,
                SEQ, WINDOW,
                H: tl.constexpr, GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr,
                CAUSAL: tl.constexpr, VARLEN: tl.constexpr, HAS_WINDOW: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start, seqlen = _seq_bounds(CU, b, SEQ, VARLEN)
    if pid_m * BLOCK_M < seqlen:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = offs_m < seqlen
        d_mask = offs_d < HEAD_DIM
        q_ptrs = Q + b * sqb + h * sqh + (start + offs_m[:, None]) * sqs + offs_d[None, :]
        q = tl.load(q_ptrs, mask=m_mask[:, None] & d_mask[None, :], other=0.0)
        k_base = K + b * skb + (h // GROUPS) * skh
        v_base = V + b * svb + (h // GROUPS) * svh
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        lo = 0
        hi = seqlen
        if CAUSAL:
            hi = tl.minimum(seqlen, (pid_m + 1) * BLOCK_M)  # later tiles are fully masked
        if HAS_WINDOW:
            lo = (tl.maximum(0, pid_m * BLOCK_M - WINDOW) // BLOCK_N) * BLOCK_N
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            n_mask = cols < seqlen
            kv_mask = n_mask[:, None] & d_mask[None, :]
            k = tl.load(k_base + (start + cols[:, None]) * sks + offs_d[None, :], mask=kv_mask,
                        other=0.0)
            qk = tl.dot(q, tl.trans(k)) * scale_log2
            keep = n_mask[None, :]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= cols[None, :])
            if HAS_WINDOW:
                keep = keep & (cols[None, :] >= offs_m[:, None] - WINDOW)
            qk = tl.where(keep, qk, float("-inf"))
            m_ij = tl.maximum(m_i, tl.max(qk, 1))
            # A row may see no key in this tile (window): keep exp2 away from -inf - -inf.
            m_safe = tl.where(m_ij == float("-inf"), 0.0, m_ij)
            p = tl.exp2(qk - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + (start + cols[:, None]) * svs + offs_d[None, :], mask=kv_mask,
                        other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_ij
        l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows past the sequence: never stored
        acc = acc / l_i[:, None]
        o_ptrs = OUT + b * sob + h * soh + (start + offs_m[:, None]) * sos + offs_d[None, :]
        tl.store(o_ptrs, acc.to(OUT.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])
        tl.store(LSE + pid_bh * slb + offs_m, m_i + tl.log2(l_i), mask=m_mask)


@triton.jit
def _bwd_delta_kernel(OUT, DO, DELTA, CU, sob, soh, sos, sdb, sdh, sds, slb, SEQ,
                      H: tl.constexpr, HEAD_DIM: tl.constexpr, VARLEN: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """D_i = rowsum(dO_i * O_i), the softmax Jacobian's correction term."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start, seqlen = _seq_bounds(CU, b, SEQ, VARLEN)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < seqlen)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(OUT + b * sob + h * soh + (start + offs_m[:, None]) * sos + offs_d[None, :],
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + b * sdb + h * sdh + (start + offs_m[:, None]) * sds + offs_d[None, :],
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh * slb + offs_m, tl.sum(o * do, 1), mask=offs_m < seqlen)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, CU, scale, scale_log2,
                     sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sdb, sdh, sds, slb, SEQ,
                     WINDOW, H: tl.constexpr, GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr,
                     CAUSAL: tl.constexpr, VARLEN: tl.constexpr, HAS_WINDOW: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bk = tl.program_id(1)
    KVH = H // GROUPS
    b = pid_bk // KVH
    kvh = pid_bk % KVH
    start, seqlen = _seq_bounds(CU, b, SEQ, VARLEN)
    if pid_n * BLOCK_N < seqlen:
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        n_mask = cols < seqlen
        d_mask = offs_d < HEAD_DIM
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(K + b * skb + kvh * skh + (start + cols[:, None]) * sks + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        v = tl.load(V + b * svb + kvh * svh + (start + cols[:, None]) * svs + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        lo = 0
        hi = seqlen
        if CAUSAL:
            lo = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M  # earlier queries see none of it
        if HAS_WINDOW:
            hi = tl.minimum(seqlen, (pid_n + 1) * BLOCK_N + WINDOW)
        for g in range(GROUPS):  # every query head that shares this key/value head
            h = kvh * GROUPS + g
            bh = b * H + h
            for start_m in range(lo, hi, BLOCK_M):
                rows = start_m + offs_m
                m_mask = rows < seqlen
                q_mask = m_mask[:, None] & d_mask[None, :]
                q = tl.load(Q + b * sqb + h * sqh + (start + rows[:, None]) * sqs
                            + offs_d[None, :], mask=q_mask, other=0.0)
                do = tl.load(DO + b * sdb + h * sdh + (start + rows[:, None]) * sds
                             + offs_d[None, :], mask=q_mask, other=0.0)
                lse = tl.load(LSE + bh * slb + rows, mask=m_mask, other=0.0)
                delta = tl.load(DELTA + bh * slb + rows, mask=m_mask, other=0.0)
                qk = tl.dot(q, tl.trans(k)) * scale_log2
                keep = m_mask[:, None] & n_mask[None, :]
                if CAUSAL:
                    keep = keep & (rows[:, None] >= cols[None, :])
                if HAS_WINDOW:
                    keep = keep & (cols[None, :] >= rows[:, None] - WINDOW)
                p = tl.where(keep, tl.exp2(qk - lse[:, None]), 0.0)
                dv += tl.dot(tl.trans(p.to(do.dtype)), do)
                dp = tl.dot(do, tl.trans(v))
                ds = p * (dp - delta[:, None])
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
        dk = dk * scale
        tl.store(DK + b * skb + kvh * skh + (start + cols[:, None]) * sks + offs_d[None, :],
                 dk.to(DK.dtype.element_ty), mask=kv_mask)
        tl.store(DV + b * svb + kvh * svh + (start + cols[:, None]) * svs + offs_d[None, :],
                 dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, CU, scale, scale_log2,
                   sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sdb, sdh, sds, slb, SEQ,
                   WINDOW, H: tl.constexpr, GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr,
                   CAUSAL: tl.constexpr, VARLEN: tl.constexpr, HAS_WINDOW: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start, seqlen = _seq_bounds(CU, b, SEQ, VARLEN)
    if pid_m * BLOCK_M < seqlen:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = rows < seqlen
        d_mask = offs_d < HEAD_DIM
        q_mask = m_mask[:, None] & d_mask[None, :]
        q = tl.load(Q + b * sqb + h * sqh + (start + rows[:, None]) * sqs + offs_d[None, :],
                    mask=q_mask, other=0.0)
        do = tl.load(DO + b * sdb + h * sdh + (start + rows[:, None]) * sds + offs_d[None, :],
                     mask=q_mask, other=0.0)
        lse = tl.load(LSE + pid_bh * slb + rows, mask=m_mask, other=0.0)
        delta = tl.load(DELTA + pid_bh * slb + rows, mask=m_mask, other=0.0)
        k_base = K + b * skb + (h // GROUPS) * skh
        v_base = V + b * svb + (h // GROUPS) * svh
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        lo = 0
        hi = seqlen
        if CAUSAL:
            hi = tl.minimum(seqlen, (pid_m + 1) * BLOCK_M)
        if HAS_WINDOW:
            lo = (tl.maximum(0, pid_m * BLOCK_M - WINDOW) // BLOCK_N) * BLOCK_N
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            n_mask = cols < seqlen
            kv_mask = n_mask[:, None] & d_mask[None, :]
            k = tl.load(k_base + (start + cols[:, None]) * sks + offs_d[None, :], mask=kv_mask,
                        other=0.0)
            v = tl.load(v_base + (start + cols[:, None]) * svs + offs_d[None, :], mask=kv_mask,
                        other=0.0)
            qk = tl.dot(q, tl.trans(k)) * scale_log2
            keep = m_mask[:, None] & n_mask[None, :]
            if CAUSAL:
                keep = keep & (rows[:, None] >= cols[None, :])
            if HAS_WINDOW:
                keep = keep & (cols[None, :] >= rows[:, None] - WINDOW)
            p = tl.where(keep, tl.exp2(qk - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k)
        dq = dq * scale
        tl.store(DQ + b * sqb + h * sqh + (start + rows[:, None]) * sqs + offs_d[None, :],
                 dq.to(DQ.dtype.element_ty), mask=q_mask)


# ---------------------------------------------------------------------------------- Python


def _strides(t: torch.Tensor, packed: bool) -> tuple[int, int, int]:
    """(batch, head, token) strides in elements; the head dim must be contiguous."""
    if t.stride(-1) != 1:
        raise ValueError("the head dimension must be contiguous")
    if packed:  # (total_tokens, heads, dim)
        return 0, t.stride(1), t.stride(0)
    return t.stride(0), t.stride(1), t.stride(2)  # (batch, heads, seq, dim)


class _Problem:
    """Shapes and launch settings shared by the forward and backward launches."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor | None,
                 max_seqlen: int | None, causal: bool, scale: float | None, window: int | None,
                 block_m: int, block_n: int, num_warps: int, num_stages: int) -> None:
        self.packed = cu_seqlens is not None
        if self.packed:
            self.batch = cu_seqlens.numel() - 1
            self.heads, self.kv_heads, self.dim = q.shape[1], k.shape[1], q.shape[2]
            self.seq = int(max_seqlen)
        else:
            self.batch, self.heads, self.seq, self.dim = q.shape
            self.kv_heads = k.shape[1]
        if self.heads % self.kv_heads:
            raise ValueError(f"kv heads {self.kv_heads} do not divide heads {self.heads}")
        if window is not None and not causal:
            raise ValueError("a sliding window is a left window: it needs causal=True")
        self.groups = self.heads // self.kv_heads
        self.causal = causal
        self.window = -1 if window is None else int(window)
        self.scale = 1.0 / math.sqrt(self.dim) if scale is None else float(scale)
        self.block_m, self.block_n = block_m, block_n
        self.block_d = max(16, triton.next_power_of_2(self.dim))
        self.launch = {"num_warps": num_warps, "num_stages": num_stages}
        self.cu = cu_seqlens if self.packed else torch.zeros(1, dtype=torch.int32,
                                                             device=q.device)

    def flags(self) -> dict[str, object]:
        return {"HEAD_DIM": self.dim, "CAUSAL": self.causal, "VARLEN": self.packed,
                "HAS_WINDOW": self.window >= 0, "BLOCK_D": self.block_d}


def _forward(q, k, v, p: _Problem) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    last_launch.update(block_m=p.block_m, block_n=p.block_n, **p.launch)
    out = torch.empty_like(q)
    lse = torch.empty((p.batch * p.heads, p.seq), device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(p.seq, p.block_m), p.batch * p.heads)
    _fwd_kernel[grid](q, k, v, out, lse, p.cu, p.scale * LOG2E,
                      *_strides(q, p.packed), *_strides(k, p.packed), *_strides(v, p.packed),
                      *_strides(out, p.packed), lse.stride(0), p.seq, p.window,
                      H=p.heads, GROUPS=p.groups, BLOCK_M=p.block_m, BLOCK_N=p.block_n,
                      **p.flags(), **p.launch)
    return out, lse


def _backward(do, q, k, v, out, lse, p: _Problem):  # noqa: ANN001, ANN202
    do = do.contiguous()
    delta = torch.empty_like(lse)
    grid_m = (triton.cdiv(p.seq, p.block_m), p.batch * p.heads)
    _bwd_delta_kernel[grid_m](out, do, delta, p.cu, *_strides(out, p.packed),
                              *_strides(do, p.packed), lse.stride(0), p.seq, H=p.heads,
                              HEAD_DIM=p.dim, VARLEN=p.packed, BLOCK_M=p.block_m,
                              BLOCK_D=p.block_d)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = (p.cu, p.scale, p.scale * LOG2E, *_strides(q, p.packed), *_strides(k, p.packed),
              *_strides(v, p.packed), *_strides(do, p.packed), lse.stride(0), p.seq, p.window)
    tiles = {"H": p.heads, "GROUPS": p.groups, "BLOCK_M": p.block_m, "BLOCK_N": p.block_n,
             **p.flags(), **p.launch}
    _bwd_dkdv_kernel[(triton.cdiv(p.seq, p.block_n), p.batch * p.kv_heads)](
        q, k, v, do, lse, delta, dk, dv, *common, **tiles)
    _bwd_dq_kernel[grid_m](q, k, v, do, lse, delta, dq, *common, **tiles)
    return dq, dk, dv


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, causal, scale, window, tile):  # noqa: ANN001
        p = _Problem(q, k, cu_seqlens, max_seqlen, causal, scale, window, *tile)
        out, lse = _forward(q, k, v, p)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.problem = p
        return out

    @staticmethod
    def backward(ctx, do):  # noqa: ANN001
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, out, lse, ctx.problem)
        return dq, dk, dv, None, None, None, None, None, None


def _tile(block_m: int, block_n: int, num_warps: int, num_stages: int) -> tuple[int, ...]:
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {value}")
    if num_stages < 1 or num_warps < 1 or num_warps & (num_warps - 1):
        raise ValueError(f"num_warps must be a power of two and num_stages >= 1, got "
                         f"{num_warps} and {num_stages}")
    return block_m, block_n, num_warps, num_stages


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                     scale: float | None = None, window: int | None = None, block_m: int = 64,
                     block_n: int = 64, num_warps: int = 4, num_stages: int = 2,
                     **_: object) -> torch.Tensor:
    """q (batch, heads, seq, dim); k, v (batch, kv_heads, seq, dim). Differentiable."""
    return _TritonAttention.apply(q, k, v, None, None, causal, scale, window,
                                  _tile(block_m, block_n, num_warps, num_stages))


def triton_varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            cu_seqlens: torch.Tensor, max_seqlen: int, *, causal: bool,
                            scale: float | None = None, window: int | None = None,
                            block_m: int = 64, block_n: int = 64, num_warps: int = 4,
                            num_stages: int = 2, **_: object) -> torch.Tensor:
    """Packed sequences: q (total, heads, dim), k/v (total, kv_heads, dim), cu_seqlens int32
    (batch + 1) of cumulative lengths, like flash_attn_varlen_func. Differentiable."""
    if cu_seqlens.dtype != torch.int32:
        raise ValueError("cu_seqlens must be int32")
    return _TritonAttention.apply(q, k, v, cu_seqlens, max_seqlen, causal, scale, window,
                                  _tile(block_m, block_n, num_warps, num_stages))
