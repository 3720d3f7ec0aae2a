"""The attention problem every implementation solves, and the formulas we report for it.

Pure data, no torch: the CLI validates and plans with it before anything heavy is imported.
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
        return 2 * self.batch * self.kv_heads * self.seq * self.head_dim * self.elem_bytes

    @property
    def input_bytes(self) -> int:
        """q, k, v, and the output gradient when the backward pass runs."""
        dout = self.q_bytes if self.mode == "fwd+bwd" else 0
        return self.q_bytes + self.kv_bytes + dout

    @property
    def score_bytes(self) -> int:
        """One materialized score matrix: batch * heads * seq^2 * bytes per element."""
        return self.batch * self.heads * self.seq * self.seq * self.elem_bytes

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


def attended_pairs(seq: int, *, causal: bool, window: int | None = None) -> float:
    """(query, key) pairs that take part: seq^2; causal, seq^2 / 2 (DESIGN.md's convention);
    with a left window W, exactly sum over i of min(i, W) + 1."""
    if window is not None:
        w = min(window, seq - 1)
        # rows 0..w see i + 1 keys; the remaining rows see w + 1 each
        return (w + 1) * (w + 2) / 2 + (seq - w - 1) * (w + 1)
    return seq * seq / 2 if causal else float(seq * seq)


def attention_flops(p: AttentionProblem) -> float:
    """DESIGN.md: forward 4 * batch * seq^2 * heads * head_dim, halved when causal (a left
    window counts its pairs exactly); backward 2.5x forward (so forward + backward is 3.5x)."""
    fwd = 4.0 * p.batch * p.heads * p.head_dim * attended_pairs(p.seq, causal=p.causal,
                                                                 window=p.window)
    return fwd * (3.5 if p.mode == "fwd+bwd" else 1.0)
