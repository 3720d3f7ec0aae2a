"""Learning-rate schedules as multipliers of the base lr, one value per optimizer step.

The same formulas as Hugging Face transformers' get_constant_schedule_with_warmup,
get_linear_schedule_with_warmup and get_cosine_with_min_lr_schedule_with_warmup (min_lr_rate),
so a curve printed here is the curve a Trainer run would follow. Warm-up is linear from 0.
"""

from __future__ import annotations

import math
from typing import Literal

Kind = Literal["cosine", "linear", "constant"]
KINDS: tuple[str, ...] = ("cosine", "linear", "constant")


def multiplier(step: int, *, kind: Kind, warmup: int, total: int, min_lr_ratio: float = 0.0,
               num_cycles: float = 0.5) -> float:
    """The factor applied to the base lr at optimizer step `step` (0-based)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    if kind == "cosine":
        progress = float(step - warmup) / float(max(1, total - warmup))
        factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        return max(0.0, factor * (1 - min_lr_ratio) + min_lr_ratio)
    raise ValueError(f"unknown schedule {kind!r} (choose from {', '.join(KINDS)})")


def curve(*, kind: Kind, lr: float, warmup: int, total: int, min_lr_ratio: float = 0.0,
          num_cycles: float = 0.5) -> list[float]:
    """lr at steps 0..total (inclusive)."""
    return [lr * multiplier(s, kind=kind, warmup=warmup, total=total, min_lr_ratio=min_lr_ratio,
                            num_cycles=num_cycles) for s in range(total + 1)]


def lambda_lr(optimizer, **kwargs):  # noqa: ANN001, ANN201
    """A torch LambdaLR following `multiplier`."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: multiplier(s, **kwargs))
