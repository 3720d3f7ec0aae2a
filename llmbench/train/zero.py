"""ZeRO's per-rank memory for model states: weights, gradients and optimizer states.

From Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter
Models" (SC 2020), section 5.1: with Ψ parameters on N data-parallel ranks and K bytes of
optimizer state per parameter, each rank holds

    stage 0 (plain data parallelism)      (w + g + K) Ψ
    stage 1 (optimizer states sharded)    (w + g) Ψ + K Ψ / N
    stage 2 (... and gradients)           w Ψ + (g + K) Ψ / N
    stage 3 (... and weights; FSDP)       (w + g + K) Ψ / N

The paper's mixed-precision Adam has w = g = 2 (fp16) and K = 12 (fp32 master weights, m, v):
7.5B parameters on 64 ranks take 120 GB, 31.4 GB, 16.6 GB and 1.9 GB per rank. Activations,
buffers and fragmentation come on top and are measured, not predicted, here.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class StateBytes:
    weights: int  # bytes per parameter
    grads: int
    optimizer: int  # K
    note: str

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer


SCHEMES: dict[str, StateBytes] = {
    "mixed": StateBytes(2, 2, 12, "fp16/bf16 weights and gradients; fp32 master weights, Adam "
                        "m and v (the paper's K = 12)"),
    "fp32": StateBytes(4, 4, 8, "fp32 weights, gradients, Adam m and v"),
    "bf16": StateBytes(2, 2, 4, "bf16 weights, gradients, Adam m and v; no master copy"),
}


def per_rank_parts(weights: float, grads: float, optimizer: float, world_size: int,
                   stage: int) -> tuple[float, float, float]:
    """(weights, gradients, optimizer states) one rank holds under ZeRO `stage`, from their
    unsharded sizes: stage 1 shards the optimizer states, 2 the gradients too, 3 the weights
    too, each over the `world_size` ranks."""
    if stage not in STAGES:
        raise ValueError(f"ZeRO stage must be one of {STAGES}, got {stage}")
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, got {world_size}")
    return (weights / world_size if stage >= 3 else weights,
            grads / world_size if stage >= 2 else grads,
            optimizer / world_size if stage >= 1 else optimizer)


def per_rank_bytes(params: int, world_size: int, stage: int, scheme: str | StateBytes) -> float:
    """Model-state bytes each rank holds under ZeRO `stage` (0: none)."""
    s = SCHEMES[scheme] if isinstance(scheme, str) else scheme
    return sum(per_rank_parts(s.weights * params, s.grads * params, s.optimizer * params,
                              world_size, stage))
