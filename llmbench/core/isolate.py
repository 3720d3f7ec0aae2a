"""Run one case in a fresh Python process with a time limit, and say how it ended.

The child (`python -m llmbench.core.isolate`) reads the case function's name
("package.module:function") and payload from stdin, calls it, and writes back its value, or the
exception's status and one-line reason, on a pipe. A plain subprocess rather than
multiprocessing's spawn: the caller's __main__ is never re-imported, so this works from
scripts, notebooks and stdin alike. The parent sleeps in select() on that pipe until the child
writes or exits (no busy-waiting). A time-out, a crash, an
out-of-memory kill or an exception becomes an `Outcome` with `status` and `reason`; nothing
here raises except KeyboardInterrupt, after the child is gone.
"""

from __future__ import annotations

import faulthandler
import gc
import importlib
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmbench.core import progress, tracing
from llmbench.core.errors import CaseFailed, CaseSkipped, CaseUnavailable, one_line
from llmbench.core.orphans import die_with_parent

Status = Literal["ok", "oom", "skipped", "unavailable", "error"]

_OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "hip out of memory",
)


@dataclass(frozen=True)
class Outcome:
    status: Status
    value: Any = None
    reason: str | None = None
    detail: str | None = None  # the traceback, or the tail of the child's stderr
    wall_s: float = 0.0


def resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    return getattr(importlib.import_module(module), name)


def classify_exception(exc: BaseException) -> tuple[Status, str]:
    """Map an exception raised by a case to (status, one-line reason)."""
    if isinstance(exc, CaseFailed):
        return exc.status, one_line(str(exc))  # type: ignore[return-value]
    if isinstance(exc, CaseUnavailable):
        return "unavailable", one_line(str(exc))
    if isinstance(exc, CaseSkipped):
        return "skipped", one_line(str(exc))
    if isinstance(exc, MemoryError):
        return "oom", one_line(f"MemoryError: {exc}") or "MemoryError"
    name = type(exc).__name__
    text = str(exc)
    if name == "OutOfMemoryError" or any(m in text.lower() for m in _OOM_MARKERS):
        # torch's CPU allocator prefixes "[enforce fail at alloc_cpu.cpp:..] err == 0." — keep
        # the part that says what was asked for.
        line = text.replace("\n", " ")
        if "DefaultCPUAllocator:" in line:
            line = line[line.index("DefaultCPUAllocator:"):]
        return "oom", one_line(line)
    return "error", one_line(f"{name}: {text}") or name


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Run a case with the objects that exist before it out of the garbage collector's sight
    (gc.freeze): they cannot be the case's garbage, and the measurements collect garbage before
    every memory reading (core.memory), which otherwise walks the whole heap each time; in a
    process holding a test suite's or a user's objects that walk took most of a case's time."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_inline(target: str, payload: Any,
               on_progress: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
    """The same contract as `run_isolated`, in this process (no time limit, no crash safety)."""
    t0 = time.perf_counter()
    try:
        with progress.callback(on_progress), frozen_heap():
            value = tracing.call_case(resolve(target), payload)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
        status, reason = classify_exception(exc)
        return Outcome(status, reason=reason, detail=traceback.format_exc(),
                       wall_s=time.perf_counter() - t0)
    return Outcome("ok", value=value, wall_s=time.perf_counter() - t0)


def _child_main() -> None:
    """The isolated child: `python -m llmbench.core.isolate RESULT_FD PARENT_PID < payload`."""
    result_fd, parent = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent)  # a killed llmbench leaves no case running
    # The parent owns Ctrl-C: it kills us and records what finished.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    target, payload = pickle.load(sys.stdin.buffer)
    try:
        with frozen_heap():
            value = tracing.call_case(resolve(target), payload)
        message: tuple = ("ok", value)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
        status, reason = classify_exception(exc)
        message = (status, reason, traceback.format_exc())
    try:
        data = pickle.dumps(message)
    except Exception as exc:  # the value does not pickle
        data = pickle.dumps(("error", one_line(f"result could not be sent back: {exc}"), ""))
    with os.fdopen(result_fd, "wb") as out:
        out.write(data)


def _cgroup_oom_kills() -> int | None:
    """The kernel's count of OOM kills in our cgroup (v2 memory.events, v1 oom_control)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[0] == "0" or "memory" in parts[1].split(",")):
            rel = parts[2].lstrip("/")
            candidates += [Path("/sys/fs/cgroup") / rel / "memory.events",
                           Path("/sys/fs/cgroup/memory") / rel / "memory.oom_control"]
    candidates += [Path("/sys/fs/cgroup/memory.events"),
                   Path("/sys/fs/cgroup/memory/memory.oom_control")]
    for path in candidates:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        except OSError:
            continue
    return None


def _tail(path: str, limit: int = 2000) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


def _last_line(text: str) -> str:
    """The most telling line of a dead child's stderr: a fatal error if any, else the last."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("Fatal Python error")]
    return (fatal or lines or [""])[-1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_until_eof(fd: int, deadline: float, progress_fd: int | None = None,
                    on_progress: Callable[[dict[str, Any]], None] | None = None,
                    cancel: threading.Event | None = None) -> bytes | None:
    """Read the child's result pipe until EOF (the child exited or closed it), or None on
    time-out or once `cancel` is set, passing progress lines to `on_progress` meanwhile.
    select() sleeps in the kernel: no busy-waiting (with `cancel`, it wakes every 0.2 s to
    look at the event)."""
    chunks = []
    pending = b""
    watched = [fd] + ([progress_fd] if progress_fd is not None else [])
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (cancel is not None and cancel.is_set()):
            return None
        wait = remaining if cancel is None else min(remaining, 0.2)
        ready, _, _ = select.select(watched, [], [], wait)
        if not ready:
            if cancel is not None and time.monotonic() < deadline:
                continue
            return None
        if progress_fd is not None and progress_fd in ready:
            data = os.read(progress_fd, 1 << 16)
            if not data:
                watched.remove(progress_fd)
                progress_fd = None
            else:
                events, pending = progress.parse_lines(pending + data)
                for event in events:
                    if on_progress is not None:
                        on_progress(event)
        if fd in ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def child_environment() -> dict[str, str]:
    """This process's environment, set so that a child Python imports what we can: llmbench
    itself and the case's module."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([root, *paths]))
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def _child_env(progress_fd: int) -> dict[str, str]:
    env = child_environment()
    env[progress.ENV] = str(progress_fd)
    return env


def run_isolated(target: str, payload: Any, *, timeout_s: float,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 cancel: threading.Event | None = None) -> Outcome:
    """Run `target(payload)` in a fresh Python process; never raises but for KeyboardInterrupt.
    Setting `cancel` (from another thread) kills the child and ends the case as an error."""
    read_fd, write_fd = os.pipe()
    progress_read, progress_write = os.pipe()
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in the finally below
        prefix="llmbench-case-", suffix=".log", delete=False)
    oom_before = _cgroup_oom_kills()
    t0 = time.monotonic()
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmbench.core.isolate", str(write_fd), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=log, stderr=log,
            pass_fds=(write_fd, progress_write), env=_child_env(progress_write), close_fds=True)
        os.close(write_fd)
        write_fd = -1
        os.close(progress_write)
        progress_write = -1
        try:
            proc.stdin.write(pickle.dumps((target, payload)))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once; its exit status says why
        data = _read_until_eof(read_fd, t0 + timeout_s, progress_read, on_progress, cancel)
        if data is None:
            _stop(proc)
            reason = ("cancelled (killed)" if cancel is not None and cancel.is_set()
                      else f"timed out after {timeout_s:g} s (killed)")
            return Outcome("error", reason=reason, detail=_tail(log.name),
                           wall_s=time.monotonic() - t0)
        try:
            exitcode = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _stop(proc)
            exitcode = proc.returncode
        wall = time.monotonic() - t0
        if data:
            message = pickle.loads(data)
            if message[0] == "ok":
                return Outcome("ok", value=message[1], wall_s=wall)
            return Outcome(message[0], reason=message[1], detail=message[2], wall_s=wall)
        return _death(exitcode, _tail(log.name), oom_before, wall)
    except KeyboardInterrupt:
        if proc is not None:
            _stop(proc)
        raise
    finally:
        for fd in (read_fd, progress_read, write_fd, progress_write):
            if fd >= 0:
                os.close(fd)
        log.close()
        try:
            os.unlink(log.name)
        except OSError:
            pass


def _death(exitcode: int | None, log: str, oom_before: int | None, wall: float) -> Outcome:
    last = _last_line(log)
    if exitcode is not None and exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        oom_after = _cgroup_oom_kills()
        if sig == "SIGKILL":
            if oom_before is not None and oom_after is not None and oom_after > oom_before:
                return Outcome("oom", reason="killed by the kernel's out-of-memory killer",
                               detail=log, wall_s=wall)
            return Outcome("oom", reason="killed by SIGKILL, most likely the out-of-memory "
                           "killer", detail=log, wall_s=wall)
        reason = f"crashed: killed by {sig}" + (f" ({last})" if last else "")
        return Outcome("error", reason=one_line(reason), detail=log, wall_s=wall)
    reason = f"exited with code {exitcode} without a result" + (f" ({last})" if last else "")
    return Outcome("error", reason=one_line(reason), detail=log, wall_s=wall)


if __name__ == "__main__":
    _child_main()
