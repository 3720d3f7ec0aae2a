"""A rank's own hang detector, for launches of the user's own (torchrun, srun).

Under `--nproc N` the parent watches the ranks. Under a launch of the user's own there is no
parent: without this, a rank stuck in a collective waits for the process group's time-out, and
then NCCL's watchdog aborts it (SIGABRT, "Watchdog caught collective operation timeout") and
the launcher reports a signal, never which rank hung or where. So every rank runs a thread
that follows its own status (`llmbench.dist.status`, published in the rendezvous store):

- after `timeout_s / 2` without progress it publishes the top of its main thread's stack;
- after `timeout_s` it reads every rank's status and stack top from the store, and the
  lowest rank still able to writes the same one-line report as the `--nproc` parent
  (`diagnosis.hang_report`) to stderr; then the rank exits with code 1, and the launcher
  stops the rest.

The process group's own time-out is set longer (2 x timeout + 30 s), so this fires first.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from llmbench.dist import status
from llmbench.dist.diagnosis import Frame, hang_report, short_path

POLL_S = 0.5
REPORTED = "hang/reported"


def main_thread_frame() -> Frame | None:
    """The innermost Python frame of the main thread."""
    frame = sys._current_frames().get(threading.main_thread().ident)  # noqa: SLF001
    if frame is None:
        return None
    return short_path(frame.f_code.co_filename), frame.f_lineno, frame.f_code.co_name


class Watchdog:
    """Start with `start()`; `stop()` when the rank leaves the group."""

    def __init__(self, store: Any, *, rank: int, world_size: int, timeout_s: float,
                 backend: str | None = None, poll_s: float = POLL_S,
                 exit: Callable[[int], None] = os._exit) -> None:
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.backend = backend
        self.poll_s = poll_s
        self._exit = exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmbench-watchdog",
                                        daemon=True)
        self.report: str | None = None  # set when it fired

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        published_for = None
        while not self._stop.wait(self.poll_s):
            now = status.current()
            since = now.get("time")
            if since is None or now.get("phase") in ("finished", "failed"):
                continue
            idle = time.time() - since
            if idle > self.timeout_s / 2 and published_for != since:
                self._publish_frame()
                published_for = since
            if idle > self.timeout_s:
                self._fire(idle)
                return

    def _publish_frame(self) -> None:
        frame = main_thread_frame()
        try:
            self.store.set(f"frame/{self.rank}", json.dumps(frame))
        except Exception:  # noqa: BLE001 - the store may be gone: the report says less
            pass

    def _fire(self, idle: float) -> None:
        self._publish_frame()
        # Give the others a moment to publish theirs (they stalled at about the same time).
        deadline = time.monotonic() + min(2.0, self.timeout_s)
        while time.monotonic() < deadline:
            if len(status.read_store(self.store, self.world_size, "frame")) == self.world_size:
                break
            time.sleep(0.1)
        statuses = status.read_store(self.store, self.world_size)
        frames = {r: tuple(f) for r, f in
                  status.read_store(self.store, self.world_size, "frame").items() if f}
        self.report = hang_report(statuses, frames, self.world_size, idle, self.backend)
        # The lowest rank reports; a higher one only if no lower one did within its turn.
        time.sleep(0.2 * self.rank)
        if not self._already_reported():
            sys.stderr.write(f"llmbench: error: {self.report}\n")
            sys.stderr.flush()
            try:
                self.store.set(REPORTED, str(self.rank))
            except Exception:  # noqa: BLE001
                pass
        status.report("failed", reason=f"hung: {self.report}")
        self._exit(1)

    def _already_reported(self) -> bool:
        try:
            return bool(self.store.check([REPORTED]))
        except Exception:  # noqa: BLE001
            return False
