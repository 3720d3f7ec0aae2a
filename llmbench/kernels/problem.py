"""The attention problem every implementation solves, and the formulas we report for it.

Pure data, no torch: the CLI validates and plans with it before anything heavy is imported.

Queries and keys may differ in length (decoding one token against a KV cache, a chunk of a
prefill after the cached part). The causal mask is then bottom-right aligned, as flash-attn's
(>= 2.1): query row i sits at absolute position i + (seq_k - seq) and sees keys 0..position;
with a left window W, keys position - W..position. With more queries than keys, the first
seq - seq_k rows see no key at all: their output is zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmbench.core.units import DTYPE_BYTES

Mode = Literal["fwd", "fwd+bwd"]


@dataclass(frozen=True)
class AttentionProblem:
    batch: int
    heads: int
    kv_heads: int
    seq: int
    head_dim: int
    dtype: str  # "fp32" | "fp16" | "bf16"
    causal: bool
    mode: Mode
    device: str  # "cpu" | "cuda"
    compute_capability: tuple[int, int] | None = None
    window: int | None = None  # a left sliding window (with causal)
    seq_k: int | None = None  # keys (and values) per sequence; None: seq
    interpret: bool = False  # Triton kernels through Triton's interpreter (--interpret)

    @property
    def kv_seq(self) -> int:
        """The key/value length: `seq_k`, or `seq` when the problem is square."""
        return self.seq if self.seq_k is None else self.seq_k

    @property
    def groups(self) -> int:
        """Query heads per key/value head (1: MHA, heads: MQA)."""
        return self.heads // self.kv_heads

    @property
    def elem_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def q_bytes(self) -> int:
        return self.batch * self.heads * self.seq * self.head_dim * self.elem_bytes

    @property
    def kv_bytes(self) -> int:
        """K and V together."""
        return 2 * self.batch * self.kv_heads * self.kv_seq * self.head_dim * self.elem_bytes

    @property
    def input_bytes(self) -> int:
        """q, k, v, and the output gradient when the backward pass runs."""
        dout = self.q_bytes if self.mode == "fwd+bwd" else 0
        return self.q_bytes + self.kv_bytes + dout

    @property
    def score_bytes(self) -> int:
        """One materialized score matrix: batch * heads * seq * seq_k * bytes per element."""
        return self.batch * self.heads * self.seq * self.kv_seq * self.elem_bytes

    @property
    def mask_elements(self) -> int:
        """Elements of the boolean mask an unfused implementation builds: seq * seq_k when it
        masks anything (causal over more than one query row, or a window shorter than the keys),
        else 0."""
        masks = (self.causal and self.seq > 1) or (
            self.window is not None and self.kv_seq > self.window + 1)
        return self.seq * self.kv_seq if masks else 0

    @property
    def lse_bytes(self) -> int:
        return self.batch * self.heads * self.seq * 4

    @property
    def grad_bytes(self) -> int:
        return self.q_bytes + self.kv_bytes if self.mode == "fwd+bwd" else 0

    def with_seq(self, seq: int) -> AttentionProblem:
        return _replace(self, seq=seq)


def _replace(p: AttentionProblem, **changes: object) -> AttentionProblem:
    from dataclasses import replace

    return replace(p, **changes)


def _causal_pairs(rows: int, window: int | None) -> float:
    """Pairs of the causal rows at positions 0..rows-1: position p sees min(p, W) + 1 keys."""
    if rows <= 0:
        return 0.0
    if window is None or window >= rows - 1:
        return rows * (rows + 1) / 2
    # positions 0..W see p + 1 keys; the remaining ones see W + 1 each
    return (window + 1) * (window + 2) / 2 + (rows - window - 1) * (window + 1)


def attended_pairs(seq: int, *, causal: bool, window: int | None = None,
                   seq_k: int | None = None) -> float:
    """(query, key) pairs that take part: seq * seq_k; causal and square, seq^2 / 2 (the
    convention the README documents); otherwise counted exactly with the bottom-right
    alignment: query row i at position i + seq_k - seq sees min(position, W) + 1 keys (W
    infinite without a window), and rows at negative positions none."""
    sk = seq if seq_k is None else seq_k
    if not causal and window is None:
        return float(seq * sk)
    if sk == seq and window is None:
        return seq * seq / 2
    first = max(0, sk - seq)  # the position of the first query row that sees a key
    return _causal_pairs(sk, window) - _causal_pairs(first, window)


# Forward + backward FLOPs over forward FLOPs: the backward pass is 2.5x the forward.
FWD_BWD_FLOPS_FACTOR = 3.5


def pairs_flops(pairs: float, *, heads: int, head_dim: int, batch: int = 1) -> float:
    """Forward FLOPs of attending `pairs` (query, key) pairs per sequence and head:
    4 * batch * heads * head_dim * pairs (QK^T and PV, a multiply-add each)."""
    return 4.0 * batch * heads * head_dim * pairs


def mode_flops(forward: float, mode: Mode) -> float:
    """The FLOPs of a call in `mode` from its forward FLOPs (fwd+bwd: 3.5x)."""
    return forward * (FWD_BWD_FLOPS_FACTOR if mode == "fwd+bwd" else 1.0)


def attention_flops(p: AttentionProblem) -> float:
    """Forward 4 * batch * heads * head_dim * attended pairs (seq^2, halved when causal and
    square; counted exactly with a window or seq_k != seq); backward 2.5x forward (so forward
    + backward is 3.5x)."""
    fwd = pairs_flops(attended_pairs(p.seq, causal=p.causal, window=p.window, seq_k=p.kv_seq),
                      heads=p.heads, head_dim=p.head_dim, batch=p.batch)
    return mode_flops(fwd, p.mode)


def attention_bytes(p: AttentionProblem, *, materializes: bool) -> int:
    """Bytes a call must move to and from memory, the roofline's denominator: a lower bound,
    each tensor counted once per pass that writes or reads it, caches assumed to hold nothing
    between operations (true for the seq x seq matrices at the lengths that matter).

    Fused kernels (FlashAttention and kin): the forward reads Q, K, V and writes O (and the
    row log-sum-exp, when a backward follows); the backward reads Q, K, V, O, dO and the
    log-sum-exp and writes dQ, dK, dV. K and V re-read per query tile are not counted (they
    come from cache when the tile's K/V fit), so a fused kernel's intensity is an upper bound.

    Unfused (`materializes`: standard, SDPA's math backend) add the seq x seq_k matrices the
    algorithm materializes: the forward writes the scores S and reads them into the softmax,
    writes the probabilities P and reads them into P V (4 matrices) and reads the boolean mask
    when it masks; the backward reads P for dV, writes and reads dP, reads P again in the
    softmax backward, writes dS and reads it for dQ and for dK (7 matrices), and reads the
    mask again. The eager programs add passes of their own that this leaves out, so their
    real traffic is higher still: standard's scaled-Q temporary and in-place masking pass
    (S read and written once more), the math backend's scaled Q and K, its fp32 additive mask
    and, for GQA, K and V copied out to every query head."""
    q, kv, o, lse = p.q_bytes, p.kv_bytes, p.q_bytes, p.lse_bytes
    backward = p.mode == "fwd+bwd"
    if not materializes:
        fwd = q + kv + o + (lse if backward else 0)
        bwd = (q + kv + o + o + lse) + (q + kv)  # reads Q, K, V, O, dO, LSE; writes dQ, dK, dV
    else:
        s, mask = p.score_bytes, p.mask_elements  # a bool mask: one byte an element
        fwd = q + kv + o + 4 * s + mask
        bwd = (q + kv + o) + 7 * s + mask + (q + kv)  # reads Q, K, V, dO; writes dQ, dK, dV
    return fwd + (bwd if backward else 0)
