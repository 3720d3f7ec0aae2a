"""`--trace DIR` and `--memory-snapshot DIR`: one more call of a case's timed function, after
its timing, under torch.profiler (or with the CUDA caching allocator's history recorded).

The runner adds a request (`request`) to each case's outermost payload under `KEY`; the one
place that calls case functions (`core.isolate`, through `call_case`) takes it out before the
case function sees the payload, keeps it in force while the case runs, and adds what was found
to the case's value under `KEY`, which the runner moves into `CaseResult.trace`.

`timing.measure` calls `after_timing(fn, device)` once its samples are taken and its figures
computed; benchmarks that time with their own loops call it once after their loop and after
every figure an extra call would change. Only the first call of a case does anything, so the
traced call is an extra one: the timed samples and the memory figures never include it.
Without a request nothing happens and nothing is imported (torch.profiler included).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench.core.errors import UsageError, one_line

KEY = "_llmbench_trace"  # reserved: in a case's payload (the request) and value (what it found)
TOP = 10  # operators kept per case, by self time
MAX_ENTRIES = 100_000  # allocator events a memory snapshot keeps


# ---------------------------------------------------------------------------- the runner's side


def writable_dir(path: str | Path, flag: str) -> Path:
    """`path` created if need be and checked writable (a file is made and removed there), as an
    absolute path; a one-line UsageError naming `flag`, the path and the OS's reason if not."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".llmbench-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there: "
                         f"{exc.strerror or exc}") from None
    return path.resolve()


def check_dir(path: str | Path, flag: str) -> None:
    """`writable_dir`'s verdict without making anything (suite validation): the nearest
    existing ancestor of `path` must be a directory this process may write to."""
    path = Path(path).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: cannot write there: {os.strerror(errno.ENOTDIR)}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write there: {os.strerror(errno.EACCES)}")


def check_snapshot_device(device: str) -> None:
    """--memory-snapshot records the CUDA caching allocator: bad input on any other device."""
    if device != "cuda":
        raise UsageError(f"--memory-snapshot: the caching allocator's history is CUDA-only "
                         f"(this run is on {device})")


def stem(name: str) -> str:
    """A case name as a file name: `standard/seq=2048/fwd` -> `standard_seq=2048_fwd`."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("._") or "case"


def stems(names: Iterable[str]) -> list[str]:
    """`stem` of each name, made unique within the run (`-2`, `-3`, ... on a clash)."""
    seen: set[str] = set()
    out = []
    for name in names:
        base = candidate = stem(name)
        n = 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{base}-{n}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def request(name: str, *, trace_dir: Path | None, snapshot_dir: Path | None) -> dict[str, Any]:
    """What a case's payload carries under `KEY` (plain strings: it travels as JSON to ranks);
    `name`: the case's file name (`stems`)."""
    return {"name": stem(name), "trace_dir": str(trace_dir) if trace_dir else None,
            "memory_snapshot_dir": str(snapshot_dir) if snapshot_dir else None}


# ---------------------------------------------------------------------------- the case's side


@dataclass
class _Case:
    request: dict[str, Any]
    found: dict[str, Any] | None = None
    done: bool = False


_current: _Case | None = None


def call_case(fn: Callable[[Any], Any], payload: Any) -> Any:
    """`fn(payload)`, with the request the payload carries under `KEY` (if any) taken out and
    in force while it runs; what the case's traced call found is added to its value (a dict)
    under `KEY`."""
    global _current
    if not isinstance(payload, dict) or KEY not in payload:
        return fn(payload)
    payload = dict(payload)
    case = _Case(payload.pop(KEY))
    outer, _current = _current, case
    try:
        value = fn(payload)
    finally:
        _current = outer
    if case.found and isinstance(value, dict):
        value = {**value, KEY: case.found}
    return value


def after_timing(fn: Callable[[], object], device: str = "cpu") -> None:
    """Once a case's timing is done: one more call of `fn` under torch.profiler (--trace) and
    one with the CUDA allocator's history recorded (--memory-snapshot). Does nothing without a
    request, or after the case's first traced call. A profiler that fails is recorded in the
    trace's `error`, not as the case's failure; `fn` is still called (ranks stay in step)."""
    case = _current
    if case is None or case.done:
        return
    case.done = True
    req, found = case.request, {}
    name = req["name"] + _rank_suffix()
    try:
        if req.get("trace_dir"):
            found.update(_profiled(fn, device, Path(req["trace_dir"]) / f"{name}.json"))
        if req.get("memory_snapshot_dir") and device == "cuda":
            found.update(_snapshot(fn, Path(req["memory_snapshot_dir"]) / f"{name}.pickle"))
    except Exception as exc:  # noqa: BLE001 - the case's own figures are already taken
        found["error"] = one_line(f"the traced call failed: {type(exc).__name__}: {exc}")
    case.found = found


def _rank_suffix() -> str:
    """`.rank<R>` in a process of a torch.distributed group, else ''."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return f".rank{dist.get_rank()}"
    except Exception:  # a group being torn down
        pass
    return ""


def _profiled(fn: Callable[[], object], device: str, path: Path) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    prof = profile(activities=activities)
    try:
        prof.start()
    except Exception as exc:  # noqa: BLE001 - no profiler here: the call still happens
        fn()
        return {"error": one_line(f"torch.profiler could not start: {type(exc).__name__}: "
                                  f"{exc}")}
    try:
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3
    finally:
        prof.stop()
    try:
        prof.export_chrome_trace(str(path))  # kineto logs a failure rather than raising it
        written = path.is_file()
        problem = "" if written else "not written"
    except Exception as exc:  # noqa: BLE001 - the figures below are still worth keeping
        written, problem = False, str(exc)
    out: dict[str, Any] = ({"path": str(path)} if written
                           else {"error": one_line(f"could not write {path}: {problem}")})
    return {**out, "wall_ms": wall_ms, **top_ops(prof.key_averages(), device_side=cuda)}


def _self_device_us(event: Any) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):  # torch >= 2.4, older
        value = getattr(event, attr, None)
        if value is not None:
            return float(value)
    return 0.0


def _on_device(event: Any) -> bool:
    """An entry of the device's own (a kernel, a copy), not a CPU operator."""
    kind = getattr(event, "device_type", None)
    return kind is not None and str(getattr(kind, "name", kind)).split(".")[-1] != "CPU"


def top_ops(events: Iterable[Any], *, device_side: bool, n: int = TOP) -> dict[str, Any]:
    """The `n` operators (on a GPU: kernels and copies) with the most self time in the traced
    call, from torch.profiler's `key_averages()`, each with its calls, self time in ms and its
    share of the sum of every entry's self time. On a GPU the device-side entries are ranked by
    their device time (a CPU operator's self device time repeats its kernels'); without any,
    the CPU operators by their CPU time."""
    events = list(events)
    rows: list[tuple[str, int, float]] = []
    ranked_by = "self_cpu"
    if device_side:
        rows = [(e.key, int(e.count), _self_device_us(e)) for e in events if _on_device(e)]
        ranked_by = "self_device"
        if not any(t > 0 for *_, t in rows):
            rows, ranked_by = [], "self_cpu"
    if not rows:
        rows = [(e.key, int(e.count), float(e.self_cpu_time_total)) for e in events
                if not _on_device(e)]
    total = sum(max(t, 0.0) for *_, t in rows)
    rows.sort(key=lambda r: -r[2])
    return {"ranked_by": ranked_by, "self_total_ms": total / 1e3,
            "top": [{"name": name, "calls": calls, "self_ms": t / 1e3,
                     "pct": 100.0 * t / total if total > 0 else 0.0}
                    for name, calls, t in rows[:n]]}


def _snapshot(fn: Callable[[], object], path: Path) -> dict[str, Any]:
    """One call with the caching allocator's history recorded, dumped for pytorch.org/memory_viz."""
    import torch

    torch.cuda.synchronize()
    try:
        torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES)
    except Exception as exc:  # noqa: BLE001
        fn()
        return {"memory_snapshot_error": one_line(f"{type(exc).__name__}: {exc}")}
    try:
        fn()
        torch.cuda.synchronize()
        torch.cuda.memory._dump_snapshot(str(path))
    except Exception as exc:  # noqa: BLE001
        return {"memory_snapshot_error": one_line(f"{type(exc).__name__}: {exc}")}
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    return {"memory_snapshot": str(path)}
