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
    def keyless_rows(self) -> int:
        """Leading query rows that see no key: causal with more queries than keys, the first
        seq - seq_k rows sit before key 0 (bottom-right alignment). Every implementation outputs
        zeros for them without computing them."""
        return max(0, self.seq - self.kv_seq) if self.causal else 0

    @property
    def computed(self) -> AttentionProblem:
        """The problem the implementations compute: the rows that see a key, against every
        key (the problem itself when every row sees one)."""
        return self.with_seq(self.seq - self.keyless_rows) if self.keyless_rows else self

    @property
    def spread_bytes(self) -> int:
        """K (or V) spread to every query head: batch * heads * seq_k * head_dim * bytes, the
        copy an unfused GQA/MQA implementation makes of each, and the size of its gradient."""
        return self.batch * self.heads * self.kv_seq * self.head_dim * self.elem_bytes

    @property
    def grad_bytes(self) -> int:
        return self.q_bytes + self.kv_bytes if self.mode == "fwd+bwd" else 0

    def with_seq(self, seq: int) -> AttentionProblem:
        return _replace(self, seq=seq)


def _replace(p: AttentionProblem, **changes: object) -> AttentionProblem:
    from dataclasses import replace

    return replace(p, **changes)


def _causal_pairs(rows: int, window: int | None) -> float:
    """Pairs of the causal rows at positions 0..rows-1, the diagonal counted half: position p
    counts min(p, W) + 1/2 keys (W infinite without a window), rows^2 / 2 in all without one."""
    if rows <= 0:
        return 0.0
    if window is None or window >= rows - 1:
        return rows * rows / 2
    # positions 0..W count p + 1/2, (W + 1)^2 / 2 together; the others W + 1/2 each
    return (window + 1) ** 2 / 2 + (rows - window - 1) * (window + 0.5)


def attended_pairs(seq: int, *, causal: bool, window: int | None = None,
                   seq_k: int | None = None) -> float:
    """(query, key) pairs a call counts, one rule for every shape: all seq * seq_k without a
    mask; with the causal mask (bottom-right aligned: query row i sits at position
    i + seq_k - seq), the area of the seq x seq_k matrix on the causal side of the diagonal,
    that is every key a row sees with the one on its own diagonal counted half. A square causal
    problem is then exactly half the full matrix, seq^2 / 2, as flash-attn's benchmarks count
    causal FLOPs (so TFLOP/s compare with published figures); a decoding row (seq 1) counts
    seq_k - 1/2, and a chunk of seq <= seq_k queries seq * seq_k - seq^2 / 2, as flash-attn's
    (hopper) benchmark counts those; rows at negative positions (more queries than keys) see
    no key and count nothing, so seq > seq_k gives seq_k^2 / 2. A left window W applies the
    same rule to the band: a row at position p counts min(p, W) + 1/2, so a window as long as
    the keys gives the causal figure exactly. Varlen batches count each sequence so."""
    sk = seq if seq_k is None else seq_k
    if not causal and window is None:
        return float(seq * sk)
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
    """Forward 4 * batch * heads * head_dim * attended pairs (`attended_pairs`: seq * seq_k,
    half the matrix when causal and square, the diagonal counted half in every causal or
    windowed shape); backward 2.5x forward (so forward + backward is 3.5x)."""
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
