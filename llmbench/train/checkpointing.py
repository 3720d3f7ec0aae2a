"""Activation-checkpointing policies as segments of layers for Transformer.set_checkpointing.

- none: keep every activation.
- every: each layer is a segment: its input is kept, its internals are recomputed.
- every-k: every k-th layer (0, k, 2k, ...) is checkpointed on its own.
- sqrt: ceil(sqrt(L))-layer segments (Chen et al. 2016): about sqrt(L) segment inputs are kept
  and one segment's internals exist at a time during backward, so memory grows as O(sqrt(L)).
"""

from __future__ import annotations

import math

POLICIES = ("none", "every", "every-k", "sqrt")


def segments(policy: str, n_layers: int, every: int = 2) -> list[tuple[int, int]]:
    if policy == "none":
        return []
    if policy == "every":
        return [(i, i + 1) for i in range(n_layers)]
    if policy == "every-k":
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        return [(i, i + 1) for i in range(0, n_layers, every)]
    if policy == "sqrt":
        size = math.ceil(math.sqrt(n_layers))
        return [(i, min(i + size, n_layers)) for i in range(0, n_layers, size)]
    raise ValueError(f"unknown checkpointing policy {policy!r} (choose from {', '.join(POLICIES)})")
