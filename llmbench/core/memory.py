"""Peak memory of one call, measured rather than estimated.

GPU: the CUDA caching allocator's peak statistics (bytes held by tensors), minus what was
allocated before the call.

CPU on Linux: the process's resident-set high-water mark. Writing "5" to /proc/self/clear_refs
resets VmHWM to the current RSS, so after the call `VmHWM - RSS before` is the call's own peak,
counted in pages the kernel really backed. Before that, glibc's malloc_trim(0) hands the free
pages malloc keeps back to the kernel, so memory the call reuses from an earlier call's frees
is counted too, not hidden in the baseline. Elsewhere, `ru_maxrss` minus the RSS before the call,
which is right in a fresh isolated process whose largest moment is the call itself.
"""

from __future__ import annotations

import gc
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class PeakMemory:
    peak_bytes: int
    method: str  # "cuda-allocator" | "rss-hwm" | "ru_maxrss"


def _status_bytes(key: str) -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def rss_bytes() -> int | None:
    """Current resident set size of this process."""
    value = _status_bytes("VmRSS")
    if value is not None:
        return value
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _glibc() -> Any:
    """glibc through ctypes, or False where there is none."""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
            _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _libc = False
    return _libc


def _malloc_trim() -> None:
    """Return malloc's free pages to the kernel (glibc only; elsewhere a no-op)."""
    if _glibc():
        _libc.malloc_trim(0)


_libc = None
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


def rss_follows_tensors(threshold: int = 1 << 20) -> bool:
    """Make this process's resident set follow its live tensors (glibc; False elsewhere):
    every allocation of `threshold` bytes or more gets its own mmap, unmapped when freed, and
    a fixed threshold stops glibc from raising it as large blocks are freed (by default it
    climbs to 32 MiB, so which tensors stay resident after they are freed depends on the
    history, and step peaks vary by tens of % between identical runs). The CPU then reads a
    peak the way a GPU's allocator counts one: live tensors."""
    if not _glibc():
        return False
    return bool(_libc.mallopt(_M_MMAP_THRESHOLD, threshold)
                and _libc.mallopt(_M_TRIM_THRESHOLD, threshold))


def cpu_method() -> str:
    return "rss-hwm" if _reset_hwm() else "ru_maxrss"


def measure_peak(fn: Callable[[], T], *, device: str = "cpu") -> tuple[T, PeakMemory]:
    """Run `fn()` once; return its result and the peak memory it added above the state before."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        return result, PeakMemory(max(0, torch.cuda.max_memory_allocated() - base),
                                  "cuda-allocator")
    _malloc_trim()
    base = rss_bytes() or 0
    if _reset_hwm():
        result = fn()
        peak = (_status_bytes("VmHWM") or 0) - base
        return result, PeakMemory(max(0, peak), "rss-hwm")
    result = fn()
    return result, PeakMemory(max(0, _ru_maxrss_bytes() - base), "ru_maxrss")


def rss_high_water(fn: Callable[[], T]) -> tuple[T, int | None]:
    """Run `fn()`; return its result and the process's absolute resident-set high-water mark
    during it (VmHWM, reset to the current RSS first): everything resident, the RSS before the
    call included, not an increase over it. None where /proc/self/clear_refs cannot reset it."""
    if not _reset_hwm():
        return fn(), None
    result = fn()
    return result, _status_bytes("VmHWM")


class HeldMemory:
    """Memory still held at a point, relative to a baseline: `start()`, run, `read()`.

    Used for activation memory: the bytes autograd keeps between the forward pass and the
    backward pass. GPU: allocated bytes. CPU: RSS, with malloc's free pages handed back to the
    kernel before both reads, so only live allocations count.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.base = 0

    def _now(self) -> int:
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            return int(torch.cuda.memory_allocated())
        _malloc_trim()
        return rss_bytes() or 0

    def start(self) -> None:
        self.base = self._now()

    def read(self) -> int:
        return max(0, self._now() - self.base)


def tensor_bytes(*tensors: Any) -> int:
    """Bytes held by the given tensors' storage (views of one storage counted once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def warm_then_peak(step: Callable[[], T], *, device: str,
                   before: Callable[[], None] | None = None
                   ) -> tuple[T, PeakMemory, list[float] | None]:
    """The first two calls of a case's protocol: a warm-up call (first-call allocations and
    kernel selection stay out of the figures), then one call measured for peak memory. Returns
    its output (to check), the peak, and, when a CPU call takes 100 ms or more, that call's
    time as a prior sample for `timing.measure_warmed` (the wall clock around it is good
    enough; the /proc reads cost microseconds). `before()` runs before each call (clearing
    gradients)."""
    from llmbench.core.timing import stopwatch

    if before:
        before()
    step()
    if before:
        before()
    clock = stopwatch(device)
    clock.start()
    out, peak = measure_peak(step, device=device)
    ms = clock.stop_ms()
    return out, peak, [ms] if device == "cpu" and ms >= 100 else None
