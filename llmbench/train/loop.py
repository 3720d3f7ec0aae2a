"""One training step of the built-in model, in fp32 or mixed precision, and its pieces."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from llmbench.models.sizes import build

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                "fp64": torch.float64}


def device_of(name: str) -> torch.device:
    # "cuda" without an index is the current device: cuda:0 in one process, the rank's own GPU
    # in a process group (each rank calls torch.cuda.set_device first).
    return torch.device("cuda" if name == "cuda" else "cpu")


def build_model(size: str, *, seed: int, device: str, **overrides: Any) -> torch.nn.Module:
    """The named size, initialised from `seed`, in training mode on `device`."""
    torch.manual_seed(seed)
    return build(size, **overrides).to(device_of(device)).train()


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: predict tokens[:, 1:] from tokens[:, :-1]."""
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())


@dataclass(frozen=True)
class Precision:
    """fp32, or autocast to fp16 (with dynamic loss scaling) or bf16 (without)."""

    name: str  # "fp32" | "fp16" | "bf16"
    device: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.name == "fp32" else TORCH_DTYPES[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_of(self.device).type, dtype=self.autocast_dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(device_of(self.device).type)


@dataclass
class StepResult:
    loss: float
    skipped: bool = False  # the scaler found inf/NaN gradients and skipped the update
    scale: float | None = None  # the loss scale used for this step


def forward_loss(model: torch.nn.Module, tokens: torch.Tensor,
                 precision: Precision | None = None) -> torch.Tensor:
    with precision.autocast() if precision else contextlib.nullcontext():
        return lm_loss(model, tokens)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor,
               *, precision: Precision | None = None, scaler: torch.amp.GradScaler | None = None,
               micro_batches: int = 1,
               on_forward: Callable[[], object] | None = None) -> StepResult:
    """Forward, loss, backward and optimizer step; with `micro_batches` > 1, the batch is split
    and the gradients of the (loss / micro_batches) of each part are accumulated first.
    `on_forward` is called once, after the first forward pass and before its backward pass
    (when the activations autograd keeps are all alive)."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, part in enumerate(tokens.chunk(micro_batches, dim=0)):
        loss = forward_loss(model, part, precision) / micro_batches
        if on_forward is not None and i == 0:
            on_forward()
        (scaler.scale(loss) if scaler else loss).backward()
        total += float(loss.detach())
    if scaler is None:
        optimizer.step()
        return StepResult(total)
    scale = float(scaler.get_scale())
    scaler.step(optimizer)
    scaler.update()
    return StepResult(total, skipped=float(scaler.get_scale()) < scale, scale=scale)


def gradients(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def gradient_bytes(model: torch.nn.Module) -> int:
    return sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()
               if p.grad is not None)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
