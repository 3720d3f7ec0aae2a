"""Live progress from inside a case (a training loop's step and loss) to the parent's display,
and the plain lines a run prints on a stderr that is not a terminal.

In an isolated child, `report()` writes one JSON line to the file descriptor named by
$LLMBENCH_PROGRESS_FD, which the parent reads while it waits; run inline, it calls the callback
the runner installed. Without either it does nothing, so library code can always call it.

Plain lines (no progress bar: stderr is a file or a CI log): one per finished case
(`finished_line`, its median in the tables' units), and while a case runs, every
`HEARTBEAT_S` seconds a line saying it still runs and for how long (`Heartbeat`), so a case
of a minute shows it is alive. They go where the caller sends them (stderr); `-q` shows none.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from llmbench.core.units import format_ms, format_seconds

ENV = "LLMBENCH_PROGRESS_FD"
HEARTBEAT_S = 15.0  # seconds between "still running" lines
_callback: Callable[[dict[str, Any]], None] | None = None


def report(**fields: Any) -> None:
    if _callback is not None:
        _callback(fields)
        return
    fd = os.environ.get(ENV)
    if fd is None:
        return
    try:
        os.write(int(fd), (json.dumps(fields, default=float) + "\n").encode())
    except OSError:
        pass  # the parent stopped listening; progress is best-effort


@contextlib.contextmanager
def callback(fn: Callable[[dict[str, Any]], None] | None) -> Iterator[None]:
    """Route `report()` calls made in this process to `fn` while the block runs."""
    global _callback
    previous, _callback = _callback, fn
    try:
        yield
    finally:
        _callback = previous


def parse_lines(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Complete JSON lines from `buffer`, and the unfinished rest."""
    *lines, rest = buffer.split(b"\n")
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out, rest


# ------------------------------------------------------------------ plain lines


def finished_line(done: int, total: int, result: Any) -> str:
    """'[3/8] standard/seq=8192: ok median 14.4 s', or the status and its reason."""
    stats = result.time()
    detail = f" median {format_ms(stats.median)}" if stats else (
        f" ({result.reason})" if result.reason else "")
    return f"[{done}/{total}] {result.name}: {result.status}{detail}"


def still_running_line(label: str, elapsed_s: float) -> str:
    """'  still running: attention standard/seq=8192 (45 s)'."""
    return f"  still running: {label} ({format_seconds(elapsed_s)})"


class Heartbeat:
    """While a case runs, `emit(still_running_line(...))` every `every_s` seconds (default
    `HEARTBEAT_S`) from a daemon thread; `stop()` (or the next `start`) ends it. Nothing is
    emitted for a case that finishes within `every_s`. `emit` must be safe to call from another
    thread (rich's Console is)."""

    def __init__(self, emit: Callable[[str], None], every_s: float | None = None,
                 prefix: str = "") -> None:
        self.emit = emit
        self.every_s = HEARTBEAT_S if every_s is None else every_s
        self.prefix = prefix  # e.g. the benchmark's name, before the case's
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self.stop()
        stop, t0 = threading.Event(), time.monotonic()
        label = f"{self.prefix} {name}" if self.prefix else name

        def beat() -> None:
            while not stop.wait(self.every_s):
                try:
                    self.emit(still_running_line(label, time.monotonic() - t0))
                except Exception:  # noqa: BLE001 - best-effort, like report(): stderr went away
                    return

        thread = threading.Thread(target=beat, name="llmbench-heartbeat", daemon=True)
        thread.start()  # started before it is published: stop() may come from another thread
        self._stop, self._thread = stop, thread

    def stop(self) -> None:
        stop, thread = self._stop, self._thread
        self._stop = self._thread = None
        if stop is not None:
            stop.set()
        if (thread is not None and thread is not threading.current_thread()
                and thread.ident is not None):
            thread.join(timeout=5)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
