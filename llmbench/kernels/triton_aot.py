"""Compile llmbench's Triton kernels ahead of time for a GPU that is not here.

Triton compiles for any target it knows without the device: `triton.compile(ASTSource(...),
target=GPUTarget("cuda", 80, 32))` lowers the kernel to PTX and runs the bundled ptxas, and the
result's metadata says how much shared memory a launch needs, the figure Triton compares with
the device's per-block limit before it launches (and fails with "out of resources" when it is
over). cuobjdump, bundled too, reads the registers per thread and the stack frame (where ptxas
puts spilled registers) from the same binary.

What is compiled comes from `triton_flash_kernels.kernel_launches`, the function the launchers
themselves take their constants and launch options from. A launch also specializes on its
arguments: Triton marks pointers aligned to 16 bytes and integers divisible by 16, and with
those hints it pipelines the loads through shared memory, which can double the shared memory a
tile needs. The compile here gives every pointer, stride and length that hint (the common case:
head dim and sequence lengths multiples of 16), so its figures are those of such a launch, the
largest; only the window size, -1 when there is none, is left without.

Run it in a process whose Triton is not in interpreter mode (TRITON_INTERPRET unset before
Triton is first imported): `compile_kernel` refuses otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Targets llmbench's Triton kernels can be compiled for (the kernel needs compute capability
# 7.5 or newer), by the name the profiles and `--arch` use.
ARCHS: dict[str, tuple[int, int]] = {
    "sm75": (7, 5), "sm80": (8, 0), "sm86": (8, 6), "sm89": (8, 9), "sm90": (9, 0),
    "sm100": (10, 0), "sm120": (12, 0),
}
# Registers one block may hold on every target above (64 K 32-bit registers per SM and block).
REGISTERS_PER_BLOCK = 65536


@dataclass(frozen=True)
class CompiledKernel:
    """What one compiled kernel needs from the device."""

    shared_memory_bytes: int
    registers: int | None  # per thread, as the binary declares them
    stack_frame_bytes: int | None  # per thread; above zero, ptxas spilled registers there
    num_warps: int
    ptxas: str | None  # the ptxas release that built it


def arch_name(cc: tuple[int, int]) -> str:
    return f"sm{cc[0]}{cc[1]}"


def _ensure_compiler_mode() -> None:
    """Under TRITON_INTERPRET=1 the kernels are interpreter objects that cannot be compiled.
    The variable must be gone before Triton is imported: afterwards it is too late."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        if "triton.language" in sys.modules:
            raise RuntimeError("Triton was imported in interpreter mode (TRITON_INTERPRET=1): "
                               "compiling for a GPU target needs a fresh process without it")
        del os.environ["TRITON_INTERPRET"]


def _bundled_tool(name: str) -> Path | None:
    """A binary shipped in Triton's NVIDIA backend (ptxas, cuobjdump)."""
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, stack frame bytes) of the one kernel in `cubin`, read by cuobjdump."""
    tool = _bundled_tool("cuobjdump")
    if tool is None:
        return None, None
    with tempfile.TemporaryDirectory(prefix="llmbench-aot-") as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        try:
            out = subprocess.run([str(tool), "--dump-resource-usage", str(path)],
                                 capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return None, None
    reg = re.search(r"\bREG:(\d+)", out)
    stack = re.search(r"\bSTACK:(\d+)", out)
    return (int(reg.group(1)) if reg else None, int(stack.group(1)) if stack else None)


def _ptxas_release(cc: tuple[int, int]) -> str | None:
    """The CUDA release of the ptxas Triton uses for this target (Triton ships two, one for
    newer targets), or None where this Triton does not say."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            tool = get_ptxas(cc[0] * 10 + cc[1])
        except TypeError:  # older Triton: one ptxas for every target
            tool = get_ptxas()
        found = re.search(r"(?:release )?(\d+\.\d+)", str(getattr(tool, "version", "")))
    except Exception:  # noqa: BLE001 - a version label is not worth failing the compile for
        return None
    return found.group(1) if found else None


def compile_kernel(*, kernel: str, cc: tuple[int, int], dtype: str, head_dim: int,
                   causal: bool, tile: Mapping[str, int], dkdv: Mapping[str, int] | None = None,
                   dq: Mapping[str, int] | None = None, heads: int = 16,
                   kv_heads: int | None = None, window: bool = False,
                   varlen: bool = False) -> CompiledKernel:
    """Compile one of the attention kernels ("fwd", "bwd_delta", "bwd_dkdv", "bwd_dq") exactly
    as a launch for this problem would, for compute capability `cc`."""
    _ensure_compiler_mode()
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from llmbench.kernels import triton_flash_kernels as triton_flash

    launches = triton_flash.kernel_launches(
        dtype=dtype, head_dim=head_dim, heads=heads, kv_heads=kv_heads or heads,
        causal=causal, window=window, varlen=varlen, tile=tile, dkdv=dkdv, dq=dq,
        backward=kernel != "fwd")
    by_name = {launch.name: launch for launch in launches}
    if kernel not in by_name:
        raise ValueError(f"unknown kernel {kernel!r} (one of {', '.join(by_name)})")
    launch = by_name[kernel]
    sig = triton_flash.signature(launch, dtype)
    aligned = {(i,): [["tt.divisibility", 16]] for i, (name, kind) in enumerate(sig.items())
               if kind != "constexpr" and kind != "fp32" and name != "window"}
    source = ASTSource(launch.kernel, sig, constexprs=dict(launch.constexprs), attrs=aligned)
    compiled = triton.compile(source, target=GPUTarget("cuda", cc[0] * 10 + cc[1], 32),
                              options={"num_warps": launch.num_warps,
                                       "num_stages": launch.num_stages})
    registers, stack = _resource_usage(compiled.asm["cubin"])
    return CompiledKernel(shared_memory_bytes=int(compiled.metadata.shared),
                          registers=registers, stack_frame_bytes=stack,
                          num_warps=launch.num_warps,
                          ptxas=_ptxas_release(cc))


def misfit(compiled: CompiledKernel, shared_limit_bytes: int) -> str | None:
    """Why a launch of `compiled` would fail on a device with this per-block shared memory
    limit, or None when it fits."""
    if compiled.shared_memory_bytes > shared_limit_bytes:
        return (f"needs {compiled.shared_memory_bytes:,} B of shared memory per block, the "
                f"target allows {shared_limit_bytes:,} B")
    if compiled.registers is not None:
        regs = compiled.registers * compiled.num_warps * 32
        if regs > REGISTERS_PER_BLOCK:
            return (f"needs {regs:,} registers per block ({compiled.registers} per thread x "
                    f"{compiled.num_warps * 32} threads), the target has {REGISTERS_PER_BLOCK:,}")
    return None
