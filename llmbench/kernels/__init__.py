"""Attention implementations behind one signature, and what each needs to run.

Every implementation is `fn(q, k, v, *, causal, scale, block_m=..., block_n=...) -> out`, with
tensors in its `layout`: "bhsd" (batch, heads, seq, dim; torch SDPA's) or "bshd" (flash-attn's).
This module imports no torch: the CLI checks names and availability before loading anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from llmbench.kernels.problem import AttentionProblem

Reason = Callable[[AttentionProblem], "str | None"]


def _never(p: AttentionProblem) -> str | None:
    return None


def _cc(p: AttentionProblem) -> str:
    return ".".join(map(str, p.compute_capability)) if p.compute_capability else "unknown"


def _cuda_only(what: str) -> Reason:
    def reason(p: AttentionProblem) -> str | None:
        return None if p.device == "cuda" else f"{what} runs only on CUDA GPUs"
    return reason


def _sdpa_flash(p: AttentionProblem) -> str | None:
    if p.device != "cuda":
        return None  # torch has a CPU flash kernel
    if (p.compute_capability or (0, 0)) < (8, 0):
        return (f"torch's flash backend needs compute capability >= 8.0, this GPU is {_cc(p)}: "
                "use sdpa-efficient or tiled")
    if p.dtype == "fp32":
        return "torch's flash backend on CUDA takes fp16/bf16 only"
    return None


def _sdpa_efficient(p: AttentionProblem) -> str | None:
    if p.device != "cuda":
        return "SDPA's memory-efficient backend runs only on CUDA GPUs"
    if (p.compute_capability or (0, 0)) < (5, 0):
        return f"SDPA's memory-efficient backend needs compute capability >= 5.0, not {_cc(p)}"
    return None


def _sdpa_cudnn(p: AttentionProblem) -> str | None:
    if p.device != "cuda":
        return "SDPA's cuDNN backend runs only on CUDA GPUs"
    if (p.compute_capability or (0, 0)) < (8, 0):
        return f"SDPA's cuDNN backend needs compute capability >= 8.0, this GPU is {_cc(p)}"
    if p.dtype == "fp32":
        return "SDPA's cuDNN backend takes fp16/bf16 only"
    return None


def _flash_attn(p: AttentionProblem) -> str | None:
    if p.device != "cuda":
        return "flash-attn runs only on NVIDIA GPUs"
    if importlib.util.find_spec("flash_attn") is None:
        return "flash_attn is not installed (pip install 'llmbench[flash]' on a CUDA machine)"
    if (p.compute_capability or (0, 0)) < (8, 0):
        return (f"flash-attn 2 needs compute capability >= 8.0, this GPU is {_cc(p)}: "
                "use sdpa-efficient or tiled")
    if p.dtype == "fp32":
        return "flash-attn takes fp16/bf16 only"
    return None


def _flash_attn_shape(p: AttentionProblem) -> str | None:
    if p.head_dim > 256:
        return f"flash-attn supports head dims up to 256, got {p.head_dim}"
    return None


def interpreting() -> bool:
    """Triton kernels run through Triton's interpreter on the CPU (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def use_interpreter(enabled: bool) -> None:
    """In a case's own process, before anything imports triton: Triton's interpreter when the
    case asks for it (`--interpret` reaches the case in its payload; planning changes no
    environment)."""
    if enabled:
        os.environ["TRITON_INTERPRET"] = "1"


def _compiles(p: AttentionProblem) -> str | None:
    """Why torch.compile cannot build kernels here: Inductor needs a C++ compiler on a CPU,
    and Triton (compute capability >= 7.0) on a GPU."""
    if p.device == "cpu":
        compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            return ("torch.compile builds C++ on a CPU: no C++ compiler found (g++, c++ or "
                    "clang++ on PATH, or $CXX)")
        return None
    if importlib.util.find_spec("triton") is None:
        return "torch.compile generates Triton kernels on a GPU: triton is not installed"
    if (p.compute_capability or (7, 0)) < (7, 0):
        return f"torch.compile's Triton kernels need compute capability >= 7.0, not {_cc(p)}"
    return None


def _torch_version() -> tuple[int, int]:
    from importlib.metadata import version

    major, minor = version("torch").split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _flex(p: AttentionProblem) -> str | None:
    torch_version = _torch_version()
    if torch_version < (2, 5):
        major, minor = torch_version
        return f"FlexAttention is in torch >= 2.5, this is torch {major}.{minor}"
    why = _compiles(p)
    if why or p.mode != "fwd+bwd":
        return why
    from llmbench.kernels.flex import backward_refusal  # asks torch (imports it)

    refusal = backward_refusal(p.device)
    return f"no FlexAttention backward here: {refusal}; time --mode fwd" if refusal else None


def _triton(p: AttentionProblem) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'llmbench[triton]')"
    if p.device != "cuda":
        if not (p.interpret or interpreting()):
            return ("Triton kernels need a GPU; --interpret (TRITON_INTERPRET=1) runs them on "
                    "the CPU through Triton's interpreter, slowly")
        if p.dtype != "fp32":
            return "Triton's interpreter computes in fp32 only (numpy has no bf16)"
        return None
    if (p.compute_capability or (0, 0)) < (7, 5):
        return f"llmbench's Triton kernel needs compute capability >= 7.5, not {_cc(p)}"
    return None


def _triton_shape(p: AttentionProblem) -> str | None:
    if p.head_dim > 256:
        return f"llmbench's Triton kernel supports head dims up to 256, got {p.head_dim}"
    return None


@dataclass(frozen=True)
class AttentionImpl:
    name: str
    summary: str
    memory: Literal["O(seq^2)", "O(seq)", "varies"]
    layout: Literal["bhsd", "bshd"]
    target: str  # "module:attr" of the function (or of a factory, with `factory_arg`)
    predict: str  # "module:function(problem, tile) -> extra bytes above the inputs"
    device_reason: Reason = _never  # why it cannot run on this device / install
    shape_reason: Reason = _never  # why it cannot take this input (bad input when asked for)
    factory_arg: str | None = None
    uses_tile: bool = False
    in_default_sweep: bool = True  # `llmbench attention` without --impl runs it
    window: bool = True  # takes a left sliding window (window=W)
    varlen: str | None = None  # "module:function" of its packed (cu_seqlens) form, if any
    compiles: bool = False  # its first call compiles it (measured apart: compile_ms)
    # "module" with dense_mask_builder(problem, device) and varlen_mask_builder(cu_seqlens,
    # causal, window): what builds the mask it takes (its creation timed apart: mask_ms)
    mask_builder: str | None = None

    @property
    def materializes(self) -> bool:
        """Writes the seq x seq scores and probabilities to memory (the roofline's traffic)."""
        return self.memory == "O(seq^2)"

    def unavailable(self, p: AttentionProblem) -> str | None:
        return self.shape_reason(p) or self.device_reason(p)

    def load(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        return obj(self.factory_arg) if self.factory_arg else obj

    def load_varlen(self) -> Callable[..., Any]:
        module, _, attr = (self.varlen or "").partition(":")
        return getattr(importlib.import_module(module), attr)

    def mask_builders(self) -> Any:
        """The module whose functions build this implementation's masks (`mask_builder`)."""
        return importlib.import_module(self.mask_builder) if self.mask_builder else None

    def predicted_extra_bytes(self, p: AttentionProblem, tile: Any = None) -> int:
        module, _, attr = self.predict.partition(":")
        return int(getattr(importlib.import_module(module), attr)(p, tile))


_K = "llmbench.kernels"
IMPLS: dict[str, AttentionImpl] = {
    impl.name: impl
    for impl in [
        AttentionImpl("standard", "eager QK^T, mask, softmax, @V (materializes seq x seq)",
                      "O(seq^2)", "bhsd", f"{_K}.standard:standard_attention",
                      f"{_K}.standard:predicted_extra_bytes"),
        AttentionImpl("sdpa", "torch SDPA, backend chosen by torch", "varies", "bhsd",
                      f"{_K}.sdpa:make", f"{_K}.sdpa:predicted_sdpa_extra_bytes",
                      factory_arg="sdpa", in_default_sweep=False),
        AttentionImpl("sdpa-flash", "torch SDPA, FlashAttention backend", "O(seq)", "bhsd",
                      f"{_K}.sdpa:make", f"{_K}.sdpa:predicted_sdpa_extra_bytes",
                      device_reason=_sdpa_flash, factory_arg="sdpa-flash", window=False),
        AttentionImpl("sdpa-efficient", "torch SDPA, memory-efficient (xFormers) backend",
                      "O(seq)", "bhsd", f"{_K}.sdpa:make",
                      f"{_K}.sdpa:predicted_fused_extra_bytes",
                      device_reason=_sdpa_efficient, factory_arg="sdpa-efficient"),
        AttentionImpl("sdpa-cudnn", "torch SDPA, cuDNN backend", "O(seq)", "bhsd",
                      f"{_K}.sdpa:make", f"{_K}.sdpa:predicted_fused_extra_bytes",
                      device_reason=_sdpa_cudnn, factory_arg="sdpa-cudnn", window=False),
        AttentionImpl("sdpa-math", "torch SDPA, math backend (the unfused reference)",
                      "O(seq^2)", "bhsd", f"{_K}.sdpa:make",
                      f"{_K}.sdpa:predicted_math_extra_bytes", factory_arg="sdpa-math"),
        AttentionImpl("flash-attn", "the flash-attn package, flash_attn_func", "O(seq)",
                      "bshd", f"{_K}.flash_attn:flash_attention",
                      f"{_K}.sdpa:predicted_fused_extra_bytes",
                      device_reason=_flash_attn, shape_reason=_flash_attn_shape,
                      varlen=f"{_K}.flash_attn:flash_varlen_attention"),
        AttentionImpl("compiled", "standard attention under torch.compile (Inductor)",
                      "varies", "bhsd", f"{_K}.compiled:compiled_attention",
                      f"{_K}.compiled:predicted_extra_bytes", device_reason=_compiles,
                      compiles=True, in_default_sweep=False),
        AttentionImpl("flex", "torch FlexAttention, compiled, with a block mask", "O(seq)",
                      "bhsd", f"{_K}.flex:flex_attention_fn", f"{_K}.flex:predicted_extra_bytes",
                      device_reason=_flex, compiles=True, mask_builder=f"{_K}.flex",
                      in_default_sweep=False,
                      varlen=f"{_K}.flex:flex_varlen_attention"),
        AttentionImpl("tiled", "llmbench's pure-PyTorch FlashAttention (tiles from the profile)",
                      "O(seq)", "bhsd", f"{_K}.tiled:tiled_attention",
                      f"{_K}.tiled:predicted_extra_bytes", uses_tile=True),
        AttentionImpl("triton", "llmbench's FlashAttention-2 in Triton (tiles from the profile)",
                      "O(seq)", "bhsd", f"{_K}.triton_flash:triton_attention",
                      f"{_K}.sdpa:predicted_fused_extra_bytes", device_reason=_triton,
                      shape_reason=_triton_shape, uses_tile=True,
                      varlen=f"{_K}.triton_flash:triton_varlen_attention"),
    ]
}


def names() -> list[str]:
    return list(IMPLS)


def default_names() -> list[str]:
    """What `llmbench attention` runs when no --impl is given: every pinned implementation."""
    return [name for name, impl in IMPLS.items() if impl.in_default_sweep]


def get(name: str) -> AttentionImpl:
    return IMPLS[name]
