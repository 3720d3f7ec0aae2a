"""The Triton kernels of llmbench's FlashAttention-2 (see `llmbench.kernels.triton_flash`, which
launches them from PyTorch), and `kernel_launches`: every kernel a call launches, with its
constexprs and launch options.

This module imports Triton but not torch, so that compiling the kernels ahead of time for a GPU
target (`llmbench.kernels.triton_aot`, one process per kernel) does not pay for importing torch.
"""


from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import triton
import triton.language as tl

TILE_KEYS = ("block_m", "block_n", "num_warps", "num_stages")
# The delta pre-kernel's tile: D = rowsum(dO * O) reads two (32 x head dim) tiles per program and
# has no loop to pipeline or tile to tune; 32 rows over 4 warps keep both in registers on every
# target (a 128-row, 8-warp program spills on sm_100).
DELTA_TILE = {"block_m": 32, "block_n": 32, "num_warps": 4, "num_stages": 1}


@triton.jit
def _bounds(CU, b, seq, VARLEN: tl.constexpr):
    """(first token as int64, length) of sequence b: token offsets built on it are 64-bit."""
    if VARLEN:
        first = tl.load(CU + b)
        length = tl.load(CU + b + 1) - first
        start = first.to(tl.int64)
    else:
        start = tl.full([], 0, tl.int64)
        length = seq
    return start, length


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr):
    """a @ b with fp32 accumulation: "ieee" (fp32 inputs) multiplies in IEEE fp32, not TF32;
    "default" leaves tl.dot's default, which 16-bit inputs ignore anyway."""
    if DOT_PRECISION == "ieee":
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


# Over our ~60-line limit on purpose: a @triton.jit kernel is one GPU program whose loop
# structure decides its pipelining, shared memory and registers (the figures `tune
# --compile-only` reports and the tests pin); its shared pieces are already @triton.jit helpers
# (_bounds, _dot), and splitting the rest would only move lines, not logic.
@triton.jit
def _fwd_kernel(Q, K, V, OUT, LSE, CU_Q, CU_K, scale_log2,
                sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sob, soh, sos, slb,
                seq_q, seq_k, window,
                H: tl.constexpr, GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr,
                CAUSAL: tl.constexpr, VARLEN: tl.constexpr, HAS_WINDOW: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start_q, len_q = _bounds(CU_Q, b, seq_q, VARLEN)
    start_k, len_k = _bounds(CU_K, b, seq_k, VARLEN)
    if pid_m * BLOCK_M < len_q:
        shift = len_k - len_q  # bottom-right: query row i sits at key position i + shift
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = offs_m < len_q
        d_mask = offs_d < HEAD_DIM
        b64 = b.to(tl.int64)
        q_ptrs = (Q + b64 * sqb + h.to(tl.int64) * sqh + (start_q + offs_m)[:, None] * sqs
                  + offs_d[None, :])
        q = tl.load(q_ptrs, mask=m_mask[:, None] & d_mask[None, :], other=0.0)
        kvh = (h // GROUPS).to(tl.int64)
        k_base = K + b64 * skb + kvh * skh
        v_base = V + b64 * svb + kvh * svh
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        lo = 0
        hi = len_k
        if CAUSAL:  # later key tiles are fully masked
            hi = tl.minimum(len_k, (pid_m + 1) * BLOCK_M + shift)
        if HAS_WINDOW:  # so are earlier ones
            lo = (tl.maximum(0, pid_m * BLOCK_M + shift - window) // BLOCK_N) * BLOCK_N
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            n_mask = cols < len_k
            kv_mask = n_mask[:, None] & d_mask[None, :]
            k = tl.load(k_base + (start_k + cols)[:, None] * sks + offs_d[None, :],
                        mask=kv_mask, other=0.0)
            qk = _dot(q, tl.trans(k), DOT_PRECISION) * scale_log2
            keep = n_mask[None, :]
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + shift)
            if HAS_WINDOW:
                keep = keep & (cols[None, :] >= offs_m[:, None] + shift - window)
            qk = tl.where(keep, qk, float("-inf"))
            m_ij = tl.maximum(m_i, tl.max(qk, 1))
            # A row may see no key in this tile (window): keep exp2 away from -inf - -inf.
            m_safe = tl.where(m_ij == float("-inf"), 0.0, m_ij)
            p = tl.exp2(qk - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + (start_k + cols)[:, None] * svs + offs_d[None, :],
                        mask=kv_mask, other=0.0)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_PRECISION)
            m_i = m_ij
        # A row that saw no key (causal, s_q > s_k; or past the sequence, never stored) outputs
        # zeros, and its log-sum-exp is +inf so that the backward's exp2(qk - lse) is 0.
        seen = l_i > 0.0
        l_safe = tl.where(seen, l_i, 1.0)
        acc = acc / l_safe[:, None]
        o_ptrs = (OUT + b64 * sob + h.to(tl.int64) * soh + (start_q + offs_m)[:, None] * sos
                  + offs_d[None, :])
        tl.store(o_ptrs, acc.to(OUT.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])
        lse = tl.where(seen, m_i + tl.log2(l_safe), float("inf"))
        tl.store(LSE + pid_bh.to(tl.int64) * slb + offs_m, lse, mask=m_mask)


@triton.jit
def _bwd_delta_kernel(OUT, DO, DELTA, CU_Q, sob, soh, sos, sdb, sdh, sds, slb, seq_q,
                      H: tl.constexpr, HEAD_DIM: tl.constexpr, VARLEN: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """D_i = rowsum(dO_i * O_i), the softmax Jacobian's correction term."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    start_q, len_q = _bounds(CU_Q, pid_bh // H, seq_q, VARLEN)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < len_q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    tokens = (start_q + offs_m)[:, None]
    o = tl.load(OUT + b * sob + h * soh + tokens * sos + offs_d[None, :], mask=mask,
                other=0.0).to(tl.float32)
    do = tl.load(DO + b * sdb + h * sdh + tokens * sds + offs_d[None, :], mask=mask,
                 other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh.to(tl.int64) * slb + offs_m, tl.sum(o * do, 1), mask=offs_m < len_q)


# Over ~60 lines on purpose: see _fwd_kernel.
@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, CU_Q, CU_K, scale, scale_log2,
                     sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sdb, sdh, sds, slb,
                     seq_q, seq_k, window,
                     H: tl.constexpr, GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr,
                     CAUSAL: tl.constexpr, VARLEN: tl.constexpr, HAS_WINDOW: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     DOT_PRECISION: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bk = tl.program_id(1)
    KVH = H // GROUPS
    b = pid_bk // KVH
    kvh = pid_bk % KVH
    start_q, len_q = _bounds(CU_Q, b, seq_q, VARLEN)
    start_k, len_k = _bounds(CU_K, b, seq_k, VARLEN)
    if pid_n * BLOCK_N < len_k:
        shift = len_k - len_q  # bottom-right: query row i sits at key position i + shift
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        n_mask = cols < len_k
        d_mask = offs_d < HEAD_DIM
        kv_mask = n_mask[:, None] & d_mask[None, :]
        b64 = b.to(tl.int64)
        tokens_k = (start_k + cols)[:, None]
        k_offs = b64 * skb + kvh.to(tl.int64) * skh + tokens_k * sks + offs_d[None, :]
        v_offs = b64 * svb + kvh.to(tl.int64) * svh + tokens_k * svs + offs_d[None, :]
        k = tl.load(K + k_offs, mask=kv_mask, other=0.0)
        v = tl.load(V + v_offs, mask=kv_mask, other=0.0)
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        lo = 0
        hi = len_q
        if CAUSAL:  # earlier queries see none of this key tile
            lo = (tl.maximum(0, pid_n * BLOCK_N - shift) // BLOCK_M) * BLOCK_M
        if HAS_WINDOW:  # later ones have left it behind
            hi = tl.minimum(len_q, (pid_n + 1) * BLOCK_N + window - shift)
        for g in range(GROUPS):  # every query head that shares this key/value head
            h = kvh * GROUPS + g
            bh = (b * H + h).to(tl.int64)
            q_head = Q + b64 * sqb + h.to(tl.int64) * sqh
            do_head = DO + b64 * sdb + h.to(tl.int64) * sdh
            for start_m in range(lo, hi, BLOCK_M):
                rows = start_m + offs_m
                m_mask = rows < len_q
                q_mask = m_mask[:, None] & d_mask[None, :]
                tokens = (start_q + rows)[:, None]
                q = tl.load(q_head + tokens * sqs + offs_d[None, :], mask=q_mask, other=0.0)
                do = tl.load(do_head + tokens * sds + offs_d[None, :], mask=q_mask, other=0.0)
                lse = tl.load(LSE + bh * slb + rows, mask=m_mask, other=0.0)
                delta = tl.load(DELTA + bh * slb + rows, mask=m_mask, other=0.0)
                qk = _dot(q, tl.trans(k), DOT_PRECISION) * scale_log2
                keep = m_mask[:, None] & n_mask[None, :]
                if CAUSAL:
                    keep = keep & (cols[None, :] <= rows[:, None] + shift)
                if HAS_WINDOW:
                    keep = keep & (cols[None, :] >= rows[:, None] + shift - window)
                p = tl.where(keep, tl.exp2(qk - lse[:, None]), 0.0)
                dv += _dot(tl.trans(p.to(do.dtype)), do, DOT_PRECISION)
                dp = _dot(do, tl.trans(v), DOT_PRECISION)
                ds = p * (dp - delta[:, None])
                dk += _dot(tl.trans(ds.to(q.dtype)), q, DOT_PRECISION)
        dk = dk * scale
        tl.store(DK + k_offs, dk.to(DK.dtype.element_ty), mask=kv_mask)
        tl.store(DV + v_offs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, CU_Q, CU_K, scale, scale_log2,
                   sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sdb, sdh, sds, slb,
                   seq_q, seq_k, window,
                   H: tl.constexpr, GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr,
                   CAUSAL: tl.constexpr, VARLEN: tl.constexpr, HAS_WINDOW: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   DOT_PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start_q, len_q = _bounds(CU_Q, b, seq_q, VARLEN)
    start_k, len_k = _bounds(CU_K, b, seq_k, VARLEN)
    if pid_m * BLOCK_M < len_q:
        shift = len_k - len_q  # bottom-right: query row i sits at key position i + shift
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = rows < len_q
        d_mask = offs_d < HEAD_DIM
        q_mask = m_mask[:, None] & d_mask[None, :]
        b64 = b.to(tl.int64)
        tokens = (start_q + rows)[:, None]
        q_offs = b64 * sqb + h.to(tl.int64) * sqh + tokens * sqs + offs_d[None, :]
        q = tl.load(Q + q_offs, mask=q_mask, other=0.0)
        do = tl.load(DO + b64 * sdb + h.to(tl.int64) * sdh + tokens * sds + offs_d[None, :],
                     mask=q_mask, other=0.0)
        lse = tl.load(LSE + pid_bh.to(tl.int64) * slb + rows, mask=m_mask, other=0.0)
        delta = tl.load(DELTA + pid_bh.to(tl.int64) * slb + rows, mask=m_mask, other=0.0)
        kvh = (h // GROUPS).to(tl.int64)
        k_base = K + b64 * skb + kvh * skh
        v_base = V + b64 * svb + kvh * svh
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        lo = 0
        hi = len_k
        if CAUSAL:
            hi = tl.minimum(len_k, (pid_m + 1) * BLOCK_M + shift)
        if HAS_WINDOW:
            lo = (tl.maximum(0, pid_m * BLOCK_M + shift - window) // BLOCK_N) * BLOCK_N
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            n_mask = cols < len_k
            kv_mask = n_mask[:, None] & d_mask[None, :]
            k = tl.load(k_base + (start_k + cols)[:, None] * sks + offs_d[None, :],
                        mask=kv_mask, other=0.0)
            v = tl.load(v_base + (start_k + cols)[:, None] * svs + offs_d[None, :],
                        mask=kv_mask, other=0.0)
            qk = _dot(q, tl.trans(k), DOT_PRECISION) * scale_log2
            keep = m_mask[:, None] & n_mask[None, :]
            if CAUSAL:
                keep = keep & (cols[None, :] <= rows[:, None] + shift)
            if HAS_WINDOW:
                keep = keep & (cols[None, :] >= rows[:, None] + shift - window)
            p = tl.where(keep, tl.exp2(qk - lse[:, None]), 0.0)
            dp = _dot(do, tl.trans(v), DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dq += _dot(ds.to(k.dtype), k, DOT_PRECISION)
        dq = dq * scale
        tl.store(DQ + q_offs, dq.to(DQ.dtype.element_ty), mask=q_mask)


# ------------------------------------------------------------------- what gets launched


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel as a launcher launches it: the @triton.jit function, every tl.constexpr
    argument by name, and the launch options. `kernel_launches` makes them; the launchers and
    the ahead-of-time compile check both read them."""

    name: str  # "fwd", "bwd_delta", "bwd_dkdv", "bwd_dq"
    kernel: Any
    constexprs: dict[str, int | bool | str]
    num_warps: int
    num_stages: int


@functools.cache
def _constexpr_names(kernel: Any) -> tuple[str, ...]:
    """The kernel's tl.constexpr parameters (JITFunction and the interpreter's wrapper alike);
    cached, since every call of the launchers asks."""
    params = inspect.signature(getattr(kernel, "fn", kernel)).parameters
    return tuple(name for name, p in params.items() if "constexpr" in str(p.annotation))


def _tile(block_m: int, block_n: int, num_warps: int, num_stages: int,
          what: str = "") -> dict[str, int]:
    prefix = f"{what}: " if what else ""
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{prefix}{name} must be a power of two >= 16, got {value}")
    if num_stages < 1 or num_warps < 1 or num_warps & (num_warps - 1):
        raise ValueError(f"{prefix}num_warps must be a power of two and num_stages >= 1, got "
                         f"{num_warps} and {num_stages}")
    return {"block_m": block_m, "block_n": block_n, "num_warps": num_warps,
            "num_stages": num_stages}


def _tile_mapping(what: str, tile: Mapping[str, int]) -> dict[str, int]:
    """A {block_m, block_n, num_warps, num_stages} mapping of ints, checked like the forward's."""
    if (not isinstance(tile, Mapping) or set(tile) != set(TILE_KEYS)
            or not all(isinstance(tile[k], int) and not isinstance(tile[k], bool)
                       for k in TILE_KEYS)):
        raise ValueError(f"{what} must be a mapping with the keys {', '.join(TILE_KEYS)} "
                         f"(ints), got {tile!r}")
    return _tile(*(tile[k] for k in TILE_KEYS), what=what)


def kernel_launches(*, dtype: str, head_dim: int, heads: int, kv_heads: int, causal: bool,
                    window: bool, varlen: bool, tile: Mapping[str, int],
                    dkdv: Mapping[str, int] | None = None, dq: Mapping[str, int] | None = None,
                    backward: bool = True) -> list[KernelLaunch]:
    """Every kernel a call launches, in launch order: "fwd", then with `backward` "bwd_delta",
    "bwd_dkdv" and "bwd_dq". `dtype` is "fp32", "fp16" or "bf16"; `window` says whether a
    sliding window is on (its size is a runtime argument); `tile`, `dkdv` and `dq` are
    {block_m, block_n, num_warps, num_stages} (dkdv/dq None: the forward tile); the delta
    pre-kernel always takes DELTA_TILE. Sequence lengths are runtime arguments, so one list
    serves every length."""
    if dtype not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"dtype must be fp32, fp16 or bf16, got {dtype!r}")
    if heads < 1 or kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"kv heads {kv_heads} do not divide heads {heads}")
    if window and not causal:
        raise ValueError("a sliding window is a left window: it needs causal=True")
    fwd_tile = _tile_mapping("tile", tile)
    dkdv_tile = fwd_tile if dkdv is None else _tile_mapping("dkdv", dkdv)
    dq_tile = fwd_tile if dq is None else _tile_mapping("dq", dq)
    values: dict[str, int | bool | str] = {
        "H": heads, "GROUPS": heads // kv_heads, "HEAD_DIM": head_dim, "CAUSAL": causal,
        "VARLEN": varlen, "HAS_WINDOW": window,
        "BLOCK_D": max(16, triton.next_power_of_2(head_dim)),
        "DOT_PRECISION": "ieee" if dtype == "fp32" else "default"}

    def launch(name: str, kernel: Any, t: Mapping[str, int]) -> KernelLaunch:
        known = {**values, "BLOCK_M": t["block_m"], "BLOCK_N": t["block_n"]}
        return KernelLaunch(name, kernel, {n: known[n] for n in _constexpr_names(kernel)},
                            t["num_warps"], t["num_stages"])

    launches = [launch("fwd", _fwd_kernel, fwd_tile)]
    if backward:
        launches += [launch("bwd_delta", _bwd_delta_kernel, DELTA_TILE),
                     launch("bwd_dkdv", _bwd_dkdv_kernel, dkdv_tile),
                     launch("bwd_dq", _bwd_dq_kernel, dq_tile)]
    return launches


# Pointer arguments that are not of the input dtype, and float scalars; every other upper-case
# non-constexpr argument is a tensor of the input dtype, every lower-case one an int32 scalar.
_POINTERS = {"LSE": "*fp32", "DELTA": "*fp32", "CU_Q": "*i32", "CU_K": "*i32"}
_FLOATS = ("scale", "scale_log2")


def signature(launch: KernelLaunch, dtype: str) -> dict[str, str]:
    """Triton's signature of `launch` for ASTSource: "*bf16"/"*fp16"/"*fp32" for the tensors of
    the input dtype, "*fp32" for LSE/DELTA, "*i32" for cu_seqlens, "fp32" for the scales,
    "i32" for strides and lengths, "constexpr" for every constexpr."""
    if dtype not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"dtype must be fp32, fp16 or bf16, got {dtype!r}")
    sig = {}
    for name in launch.kernel.arg_names:
        if name in launch.constexprs:
            sig[name] = "constexpr"
        elif name in _POINTERS:
            sig[name] = _POINTERS[name]
        elif name in _FLOATS:
            sig[name] = "fp32"
        elif name.isupper():
            sig[name] = f"*{dtype}"
        else:
            sig[name] = "i32"
    return sig
