"""One training step of the built-in model, in fp32 or mixed precision, and its pieces."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from llmbench.core.dtypes import NAMES as DTYPE_NAMES
from llmbench.core.dtypes import torch_dtype
from llmbench.models.sizes import build

TORCH_DTYPES = {name: torch_dtype(name) for name in DTYPE_NAMES}


def device_of(name: str) -> torch.device:
    # "cuda" without an index is the current device: cuda:0 in one process, the rank's own GPU
    # in a process group (each rank calls torch.cuda.set_device first).
    return torch.device("cuda" if name == "cuda" else "cpu")


# llmbench's attention names -> transformers' attn_implementation
HF_ATTENTION = {"standard": "eager", "flex": "flex_attention"}


def require_trainable(attention: str, device: str) -> None:
    """`CaseUnavailable` (with torch's reason) when training with `attention` on `device`
    needs a backward pass torch lacks: FlexAttention's on a CPU (torch 2.13)."""
    if attention != "flex":
        return
    from llmbench.core.errors import CaseUnavailable
    from llmbench.kernels.flex import backward_refusal

    refusal = backward_refusal(device)
    if refusal:
        raise CaseUnavailable(f"--attention flex trains through FlexAttention's backward, "
                              f"which torch lacks here: {refusal}")


def build_model(size: str, *, seed: int, device: str, hf_config: str | None = None,
                layers: int | None = None, dtype: str = "fp32", attention: str = "sdpa",
                **overrides: Any) -> torch.nn.Module:
    """The named built-in size, or the Hugging Face architecture `hf_config` (a preset or a
    config.json, models.hf_model), initialised from `seed`, cut to `layers` decoder layers
    when given, its parameters of `dtype`, in training mode on `device`. `attention`: "sdpa",
    "standard" or "flex" (the built-in model's kernel of that name; transformers' "eager" and
    "flex_attention"). Training needs FlexAttention's backward: where torch has none (the CPU,
    torch 2.13), a flex model is `CaseUnavailable` with torch's reason."""
    require_trainable(attention, device)
    torch.manual_seed(seed)
    if hf_config is not None:
        from llmbench.models.hf import load_config
        from llmbench.models.hf_model import build_causal_lm

        model = build_causal_lm(load_config(hf_config, layers=layers),
                                dtype=TORCH_DTYPES[dtype], device=device_of(device),
                                attention=HF_ATTENTION.get(attention, attention))
        return model.train()
    if layers is not None:
        overrides["n_layers"] = layers
    overrides.setdefault("attention", attention)
    return build(size, **overrides).to(device_of(device), TORCH_DTYPES[dtype]).train()


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


class StepResult:
    """What a training step returns: its loss (the sum over micro-batches of loss /
    micro_batches), and with a GradScaler whether the scaler skipped the update and the loss
    scale the step used (`skipped` is False and `scale` None without one).

    They stay on the device until first read: reading one is a device-to-host copy that waits
    for the step's queued work, so read them after the step and outside any timed region. The
    first read fetches all of them at once (one read) and caches them."""

    def __init__(self, loss: torch.Tensor, *, scale: torch.Tensor | float | None = None,
                 skipped: torch.Tensor | bool = False) -> None:
        self._pending: tuple[Any, ...] | None = (loss, scale, skipped)
        self._values: tuple[float, float | None, bool] | None = None

    def _read(self) -> tuple[float, float | None, bool]:
        if self._values is None:
            loss, scale, skipped = self._pending
            device = [t for t in (scale, skipped) if isinstance(t, torch.Tensor)]
            if device:  # one read for all three
                got = torch.stack([loss.double()] + [t.double() for t in device]).tolist()
                loss = got[0]
                if isinstance(scale, torch.Tensor):
                    scale = got[1]
                if isinstance(skipped, torch.Tensor):
                    skipped = got[-1] != 0.0
            else:
                loss = float(loss)
            self._values = (loss, None if scale is None else float(scale), bool(skipped))
            self._pending = None
        return self._values

    @property
    def loss(self) -> float:
        return self._read()[0]

    @property
    def scale(self) -> float | None:
        """The loss scale used for this step."""
        return self._read()[1]

    @property
    def skipped(self) -> bool:
        """The scaler found inf/NaN gradients and skipped the update."""
        return self._read()[2]

    def __repr__(self) -> str:
        if self._values is None:
            return "StepResult(<not read yet>)"
        loss, scale, skipped = self._values
        return f"StepResult(loss={loss!r}, skipped={skipped!r}, scale={scale!r})"


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
    (when the activations autograd keeps are all alive).

    Nothing is read back to the host: the running loss is summed on the device (in float64,
    the sum the Python floats used to make) and the result is read when asked for (see
    `StepResult`). With a GradScaler, its `step` makes the one read of its own (whether the
    gradients hold inf/NaN, which decides whether the optimizer runs); the scale before and
    after are kept as device tensors."""
    optimizer.zero_grad(set_to_none=True)
    total: torch.Tensor | None = None
    for i, part in enumerate(tokens.chunk(micro_batches, dim=0)):
        loss = forward_loss(model, part, precision) / micro_batches
        if on_forward is not None and i == 0:
            on_forward()
        (scaler.scale(loss) if scaler else loss).backward()
        value = loss.detach().double()
        total = value if total is None else total + value
    if scaler is None:
        optimizer.step()
        return StepResult(total)
    # GradScaler has no public accessor for its scale tensor (get_scale() is .item(), a
    # sync); _get_scale_async() returns it (None while scaling is disabled or not started).
    # update() changes it in place, hence the clone before the step.
    before = scaler._get_scale_async()
    if before is None:
        scaler.step(optimizer)
        scaler.update()
        return StepResult(total, scale=float(scaler.get_scale()))  # no tensor: no sync
    before = before.clone()
    scaler.step(optimizer)
    scaler.update()
    return StepResult(total, scale=before, skipped=scaler._get_scale_async() < before)


_HOST_READS = frozenset({torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__,
                         torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist,
                         torch.Tensor.numpy, torch.Tensor.cpu})


def _to_cpu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Tensor.to(...) to a CPU device that waits (not non_blocking)."""
    targets = [a for a in (*args[1:], kwargs.get("device")) if isinstance(a, str | torch.device)]
    flags = [a for a in args[1:] if isinstance(a, bool)]  # to(device, dtype, non_blocking, copy)
    non_blocking = kwargs.get("non_blocking", flags[0] if flags else False)
    return not non_blocking and any(torch.device(t).type == "cpu" for t in targets)


class HostReads(TorchFunctionMode):
    """While active, records the tensor calls that read values into the host: float(),
    int(), bool() (an `if` on a tensor), index(), .item(), .tolist(), .numpy(), .cpu() and a
    blocking .to() a CPU device. On a GPU each of these, on a tensor on the device, is a
    device-to-host copy that waits for all the work queued before it.

    It counts calls, whatever device the tensor is on, so on the CPU it counts what would be
    a read on a GPU where the tensors live on the device. It sees the calls made from Python
    (llmbench's and torch's Python code, such as GradScaler's), not reads made inside torch's
    C++ operators."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    @property
    def count(self) -> int:
        return len(self.calls)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _HOST_READS or (func is torch.Tensor.to and _to_cpu(args, kwargs)):
            self.calls.append(func.__name__)
        return func(*args, **kwargs)


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


def activation_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    tokens: torch.Tensor, *, device: str, precision: Precision | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> tuple[StepResult, int]:
    """One training step that also reads the activation memory: what the forward pass leaves
    for the backward pass (core.memory.HeldMemory, read after the first forward). Gradients
    are freed first, so that freeing them during the step does not offset the baseline."""
    from llmbench.core.memory import HeldMemory

    held = HeldMemory(device)
    seen: list[int] = []
    optimizer.zero_grad(set_to_none=True)
    held.start()
    result = train_step(model, optimizer, tokens, precision=precision, scaler=scaler,
                        on_forward=lambda: seen.append(held.read()))
    return result, seen[0]
