"""The optimizers `llmbench optim` compares, and what each should hold per parameter.

Measured state bytes come from the optimizer's real state tensors; `analytic_state_bytes`
predicts the same figure from the parameters' shapes and dtypes, so the two can be compared
exactly. torch keeps optimizer state in the parameter's dtype, plus a 4-byte float32 `step`
scalar per parameter tensor for Adam, AdamW and Adafactor.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable
from dataclasses import dataclass

from llmbench.core.errors import UsageError

STEP_BYTES = 4  # torch's per-parameter `step` counter: a float32 scalar tensor


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    summary: str
    elementwise_states: int  # state tensors shaped like the parameter (Adafactor: see below)
    step_counter: bool  # a float32 `step` scalar per parameter tensor
    rule: str  # the per-parameter rule users know, for fp32 states

    def unavailable(self) -> str | None:
        if self.name == "adam8bit" and importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed (pip install bitsandbytes)"
        if self.name == "adafactor":
            import torch

            if not hasattr(torch.optim, "Adafactor"):
                return f"torch {torch.__version__} has no torch.optim.Adafactor (2.5+)"
        return None

    def build(self, params: Iterable, *, lr: float, weight_decay: float = 0.0):  # noqa: ANN201
        import torch

        params = list(params)
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
        if self.name == "sgd-momentum":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
        if self.name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        if self.name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        if self.name == "lion":
            from llmbench.train.lion import Lion

            return Lion(params, lr=lr, weight_decay=weight_decay)
        if self.name == "adafactor":
            return torch.optim.Adafactor(params, lr=lr, weight_decay=weight_decay)
        if self.name == "adam8bit":
            import bitsandbytes as bnb

            return bnb.optim.Adam8bit(params, lr=lr, weight_decay=weight_decay)
        raise AssertionError(self.name)


OPTIMIZERS: dict[str, OptimizerSpec] = {s.name: s for s in [
    OptimizerSpec("sgd", "torch SGD, no momentum", 0, False, "0 B/param"),
    OptimizerSpec("sgd-momentum", "torch SGD, momentum 0.9", 1, False,
                  "4 B/param: momentum"),
    OptimizerSpec("adam", "torch Adam (L2 decay, if any, added to the gradient)", 2, True,
                  "8 B/param: exp_avg + exp_avg_sq"),
    OptimizerSpec("adamw", "torch AdamW (decoupled weight decay)", 2, True,
                  "8 B/param: exp_avg + exp_avg_sq"),
    OptimizerSpec("lion", "llmbench's Lion: sign of interpolated momentum", 1, False,
                  "4 B/param: momentum"),
    OptimizerSpec("adafactor", "torch Adafactor: factored second moment", 0, True,
                  "rows + columns per matrix (about 0 B/param)"),
    OptimizerSpec("adam8bit", "bitsandbytes Adam8bit: 8-bit block-quantized states", 2, True,
                  "about 2 B/param + block scales"),
]}


def get(name: str) -> OptimizerSpec:
    if name not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name]


def _adafactor_state_elements(shape: tuple[int, ...]) -> int:
    """torch Adafactor: a matrix (or higher) keeps a row and a column second-moment vector
    (the last two dims factored); a vector keeps a full second moment."""
    if len(shape) < 2:
        return math.prod(shape)
    lead = math.prod(shape[:-2])
    return lead * (shape[-2] + shape[-1])


def analytic_state_bytes(name: str, shapes: Iterable[tuple[tuple[int, ...], int]]) -> int | None:
    """Expected optimizer-state bytes for parameters given as (shape, element size) pairs.
    None for adam8bit, whose block layout depends on the bitsandbytes version."""
    spec = get(name)
    if name == "adam8bit":
        return None
    total = 0
    for shape, elem in shapes:
        if name == "adafactor":
            total += _adafactor_state_elements(tuple(shape)) * elem
        else:
            total += spec.elementwise_states * math.prod(shape) * elem
        if spec.step_counter:
            total += STEP_BYTES
    return total


def measured_state_bytes(optimizer, params) -> tuple[int, int]:  # noqa: ANN001
    """(all state bytes, bytes of state tensors shaped like their parameter), counted from the
    optimizer's state tensors (each storage once)."""
    import torch

    seen: set[int] = set()
    total = elementwise = 0
    for p in params:
        for value in optimizer.state.get(p, {}).values():
            if not isinstance(value, torch.Tensor):
                continue
            storage = value.untyped_storage()
            if storage.data_ptr() in seen and storage.nbytes():
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
            if value.shape == p.shape:
                elementwise += storage.nbytes()
    return total, elementwise


