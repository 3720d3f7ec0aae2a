"""llmbench's own FlashAttention-2 in Triton: forward and backward, GQA/MQA, causal masking
that skips fully masked tiles, a left sliding window, key lengths other than query lengths
(KV-cache decoding), and variable-length packed batches.

Forward (Dao 2023, algorithm 1): each program owns BLOCK_M query rows of one (sequence, head)
and walks the key/value tiles it can see, keeping a running maximum and normalizer in base 2
(exp2 with the scale folded into log2(e)); it writes the output and the log-sum-exp. Backward
(algorithm 2) recomputes the probabilities from the log-sum-exp: one kernel per key/value tile
accumulates dK and dV over the query heads of its group (no atomics), one kernel per query tile
accumulates dQ. Each backward pass takes its own tile (`dkdv=`, `dq=`; by default the forward's):
the dK/dV pass holds a key/value tile and walks queries, the dQ pass the other way round, so
their best shapes differ from each other and from the forward's, as in Triton's fused-attention
tutorial.

Queries (s_q) and keys (s_k) may differ in length. Causal masking is aligned bottom-right, as in
flash-attn >= 2.1 and KV-cache decoding: query row i sits at key position i + s_k - s_q and sees
the keys up to it; a window W also drops keys before position - W. A query row that sees no key
(causal with s_q > s_k) outputs zeros and gets zero gradients, as flash-attn's do.

Dense inputs are (batch, heads, seq, dim); packed varlen inputs are (total_tokens, heads, dim)
with cu_seqlens (int32, batch + 1), and optionally separate key lengths (cu_seqlens_k), as
flash_attn_varlen_func takes them. Both reach the same kernels through strides and a
per-sequence start offset. Every offset that multiplies a stride is computed in int64: batch 4 x
32 heads x 131072 tokens x dim 128 is past 2**31 elements. fp32 inputs multiply in IEEE fp32
(tl.dot's input_precision="ieee"), not TF32, so that fp32 runs are measured against the fp32
peak they report; fp16/bf16 take Triton's default.

The tile (block_m, block_n, num_warps, num_stages) comes from the selected profile.
`kernel_launches` lists every kernel a call launches with its constexprs and launch options; the
launchers read it, and so does the ahead-of-time compile check, so what is checked is what runs.
Under TRITON_INTERPRET=1 the kernels run on the CPU (slowly, fp32 only), which is how CI tests
them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import triton

from llmbench.kernels.triton_flash_kernels import (  # noqa: F401 - re-exported
    TILE_KEYS,
    KernelLaunch,
    _bwd_delta_kernel,
    _bwd_dkdv_kernel,
    _bwd_dq_kernel,
    _fwd_kernel,
    _tile,
    _tile_mapping,
    kernel_launches,
    signature,
)

LOG2E = 1.4426950408889634
# The tile of the most recent forward launch (what the profile or an override made it).
last_launch: dict[str, int] = {}
# The tiles of the most recent backward launch: {"dkdv": tile, "dq": tile}.
last_backward_launch: dict[str, dict[str, int]] = {}

_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# ---------------------------------------------------------------------------------- Python


def _strides(t: torch.Tensor, packed: bool) -> tuple[int, int, int]:
    """(batch, head, token) strides in elements; the head dim must be contiguous."""
    if t.stride(-1) != 1:
        raise ValueError("the head dimension must be contiguous")
    if packed:  # (total_tokens, heads, dim)
        return 0, t.stride(1), t.stride(0)
    return t.stride(0), t.stride(1), t.stride(2)  # (batch, heads, seq, dim)


class _Problem:
    """Shapes and launches shared by the forward and backward passes."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 cu_q: torch.Tensor | None, cu_k: torch.Tensor | None, max_q: int | None,
                 max_k: int | None, causal: bool, scale: float | None, window: int | None,
                 tiles: tuple[dict[str, int], dict[str, int] | None, dict[str, int] | None]
                 ) -> None:
        self.packed = cu_q is not None
        rank = 3 if self.packed else 4
        if q.dim() != rank or k.dim() != rank or k.shape != v.shape:
            raise ValueError(f"q, k and v must be {rank}-D, k and v of one shape; got "
                             f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
        if q.shape[-1] != k.shape[-1] or (not self.packed and q.shape[0] != k.shape[0]):
            raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch or "
                             "head dim")
        if not q.dtype == k.dtype == v.dtype or q.dtype not in _DTYPES:
            raise ValueError(f"q, k and v must share one dtype of fp32, fp16 or bf16, got "
                             f"{q.dtype}, {k.dtype}, {v.dtype}")
        self.heads, self.kv_heads, self.dim = q.shape[1], k.shape[1], q.shape[-1]
        if self.packed:
            self.batch = cu_q.numel() - 1
            self.seq_q, self.seq_k = int(max_q), int(max_k)
        else:
            self.batch, self.seq_q, self.seq_k = q.shape[0], q.shape[2], k.shape[2]
        self.window = -1 if window is None else int(window)
        self.scale = 1.0 / math.sqrt(self.dim) if scale is None else float(scale)
        tile, dkdv, dq = tiles
        self.launches = {launch.name: launch for launch in kernel_launches(
            dtype=_DTYPES[q.dtype], head_dim=self.dim, heads=self.heads, kv_heads=self.kv_heads,
            causal=causal, window=window is not None, varlen=self.packed, tile=tile, dkdv=dkdv,
            dq=dq)}
        dummy = torch.zeros(1, dtype=torch.int32, device=q.device)
        self.cu_q = cu_q if self.packed else dummy
        self.cu_k = cu_k if self.packed else dummy

    def grid(self, name: str, seq: int, per: str, heads: int) -> tuple[int, int]:
        """(tiles along `seq` of the launch's `per` block, batch x heads)."""
        return triton.cdiv(seq, self.launches[name].constexprs[per]), self.batch * heads


def _tile_of(launch: KernelLaunch) -> dict[str, int]:
    """The launch's tile as the profiles spell it (what last_launch reports)."""
    return {"block_m": launch.constexprs["BLOCK_M"], "block_n": launch.constexprs["BLOCK_N"],
            "num_warps": launch.num_warps, "num_stages": launch.num_stages}


def _launch(launch: KernelLaunch, grid: tuple[int, int], *args: object) -> None:
    """The one place a kernel starts: with its KernelLaunch's constexprs and options."""
    launch.kernel[grid](*args, **launch.constexprs, num_warps=launch.num_warps,
                        num_stages=launch.num_stages)


def _forward(q, k, v, p: _Problem) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    last_launch.update(_tile_of(p.launches["fwd"]))
    out = torch.empty_like(q)
    lse = torch.empty((p.batch * p.heads, p.seq_q), device=q.device, dtype=torch.float32)
    _launch(p.launches["fwd"], p.grid("fwd", p.seq_q, "BLOCK_M", p.heads),
            q, k, v, out, lse, p.cu_q, p.cu_k, p.scale * LOG2E,
            *_strides(q, p.packed), *_strides(k, p.packed), *_strides(v, p.packed),
            *_strides(out, p.packed), lse.stride(0), p.seq_q, p.seq_k, p.window)
    return out, lse


def _with_grad_buffer(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, an empty gradient of t's strides): the backward kernels write each gradient with
    its input's strides. A view empty_like cannot match (a slice of a KV cache) is copied
    contiguous first."""
    grad = torch.empty_like(t)
    if grad.stride() != t.stride():
        t = t.contiguous()
        grad = torch.empty_like(t)
    return t, grad


def _backward(do, q, k, v, out, lse, p: _Problem):  # noqa: ANN001, ANN202
    last_backward_launch.clear()
    last_backward_launch.update(dkdv=_tile_of(p.launches["bwd_dkdv"]),
                                dq=_tile_of(p.launches["bwd_dq"]))
    do = do.contiguous()
    delta = torch.empty_like(lse)
    _launch(p.launches["bwd_delta"], p.grid("bwd_delta", p.seq_q, "BLOCK_M", p.heads),
            out, do, delta, p.cu_q, *_strides(out, p.packed), *_strides(do, p.packed),
            lse.stride(0), p.seq_q)
    (q, dq), (k, dk), (v, dv) = (_with_grad_buffer(t) for t in (q, k, v))
    common = (p.cu_q, p.cu_k, p.scale, p.scale * LOG2E, *_strides(q, p.packed),
              *_strides(k, p.packed), *_strides(v, p.packed), *_strides(do, p.packed),
              lse.stride(0), p.seq_q, p.seq_k, p.window)
    _launch(p.launches["bwd_dkdv"], p.grid("bwd_dkdv", p.seq_k, "BLOCK_N", p.kv_heads),
            q, k, v, do, lse, delta, dk, dv, *common)
    _launch(p.launches["bwd_dq"], p.grid("bwd_dq", p.seq_q, "BLOCK_M", p.heads),
            q, k, v, do, lse, delta, dq, *common)
    return dq, dk, dv


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window,  # noqa: ANN001
                tiles):
        p = _Problem(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window, tiles)
        out, lse = _forward(q, k, v, p)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.problem = p
        return out

    @staticmethod
    def backward(ctx, do):  # noqa: ANN001
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, out, lse, ctx.problem)
        return dq, dk, dv, None, None, None, None, None, None, None, None


def _tiles(block_m: int, block_n: int, num_warps: int, num_stages: int,
           dkdv: Mapping[str, int] | None, dq: Mapping[str, int] | None
           ) -> tuple[dict[str, int], dict[str, int] | None, dict[str, int] | None]:
    return (_tile(block_m, block_n, num_warps, num_stages),
            None if dkdv is None else _tile_mapping("dkdv", dkdv),
            None if dq is None else _tile_mapping("dq", dq))


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                     scale: float | None = None, window: int | None = None, block_m: int = 64,
                     block_n: int = 64, num_warps: int = 4, num_stages: int = 2,
                     dkdv: Mapping[str, int] | None = None, dq: Mapping[str, int] | None = None,
                     **_: object) -> torch.Tensor:
    """q (batch, heads, s_q, dim); k, v (batch, kv_heads, s_k, dim), s_k and s_q any lengths
    (causal aligned bottom-right). `dkdv`/`dq`: the backward passes' tiles
    {block_m, block_n, num_warps, num_stages}, None for the forward's. Differentiable."""
    return _TritonAttention.apply(q, k, v, None, None, None, None, causal, scale, window,
                                  _tiles(block_m, block_n, num_warps, num_stages, dkdv, dq))


def triton_varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            cu_seqlens: torch.Tensor, max_seqlen: int, *, causal: bool,
                            scale: float | None = None, window: int | None = None,
                            block_m: int = 64, block_n: int = 64, num_warps: int = 4,
                            num_stages: int = 2, dkdv: Mapping[str, int] | None = None,
                            dq: Mapping[str, int] | None = None,
                            cu_seqlens_k: torch.Tensor | None = None,
                            max_seqlen_k: int | None = None, **_: object) -> torch.Tensor:
    """Packed sequences: q (total, heads, dim), k/v (total_k, kv_heads, dim), cu_seqlens int32
    (batch + 1) of cumulative lengths, like flash_attn_varlen_func; keys share the query lengths
    unless cu_seqlens_k and max_seqlen_k give theirs (causal aligned bottom-right per sequence).
    `dkdv`/`dq` as in triton_attention. Differentiable."""
    if (cu_seqlens_k is None) != (max_seqlen_k is None):
        raise ValueError("give both cu_seqlens_k and max_seqlen_k, or neither")
    if cu_seqlens_k is None:
        cu_seqlens_k, max_seqlen_k = cu_seqlens, max_seqlen
    for name, cu in (("cu_seqlens", cu_seqlens), ("cu_seqlens_k", cu_seqlens_k)):
        if cu.dtype != torch.int32:
            raise ValueError(f"{name} must be int32")
    if cu_seqlens_k.shape != cu_seqlens.shape:
        raise ValueError(f"cu_seqlens_k {tuple(cu_seqlens_k.shape)} and cu_seqlens "
                         f"{tuple(cu_seqlens.shape)} must hold one entry per sequence + 1")
    return _TritonAttention.apply(q, k, v, cu_seqlens, cu_seqlens_k, max_seqlen, max_seqlen_k,
                                  causal, scale, window,
                                  _tiles(block_m, block_n, num_warps, num_stages, dkdv, dq))
