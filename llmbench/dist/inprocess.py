"""Under a launch that already exists (torchrun, srun): this process is one of the ranks.

Every rank plans the same cases and runs each inline, in lock step with the others; rank 0
alone renders and writes. If a collective fails here, the group cannot go on: the case is
recorded as an error with the first failing rank's reason (read from the ranks' statuses in
the rendezvous store), the remaining cases as not run, and the command exits 1 on every rank,
so the launcher stops the group. A rank that makes no progress for the time-out is reported
by the ranks' watchdogs (`llmbench.dist.watchdog`).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from llmbench.core.benchmark import CasePlan
from llmbench.core.errors import one_line
from llmbench.core.isolate import Outcome, run_inline
from llmbench.dist.launch_env import Launch

FAILURE_WAIT_S = 2.0  # how long to wait for the rank that failed first to say why


class InProcessRanks:
    """A `CaseExecutor` for a process that is itself a rank."""

    def __init__(self, *, launch: Launch, backend: str, device: str, target: str,
                 timeout_s: float) -> None:
        self.launch = launch
        self.backend = backend
        self.device = device
        self.target = target
        self.timeout_s = timeout_s
        self.failure: str | None = None
        self.store: Any = None
        self.watchdog: Any = None
        self._index = 0  # of the case, as LLMBENCH_DIST_FAULT and the statuses count them

    def __enter__(self) -> InProcessRanks:
        from llmbench.dist import group, status
        from llmbench.dist.watchdog import Watchdog

        # Should NCCL's own watchdog abort this rank (SIGABRT), its Python stack is printed.
        faulthandler.enable(file=sys.stderr, all_threads=True)
        os.environ.update(self.launch.env)  # srun: the variables env:// reads

        def watch(store: Any) -> None:  # from the rendezvous on: set-up hangs are watched too
            self.store = store
            status.publish_to(store)
            self.watchdog = Watchdog(store, rank=self.launch.rank,
                                     world_size=self.launch.world_size,
                                     timeout_s=self.timeout_s, backend=self.backend).start()

        # The group waits longer than the watchdog, so that the watchdog's report comes first.
        group.init(backend=self.backend, device=self.device, local_rank=self.launch.local_rank,
                   timeout_s=2 * self.timeout_s + 30, on_store=watch)
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        from llmbench.dist import group, status

        try:
            if exc_type is None and self.failure is None:
                group.finish()
            # otherwise leave without a barrier: the other ranks may be gone
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
            status.publish_to(None)

    def run(self, plan: CasePlan,
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
        from llmbench.dist import group, status

        if self.failure is not None:
            return Outcome("skipped", reason=one_line(f"not run: {self.failure}"))
        t0 = time.monotonic()
        status.report("setup", case=plan.name, index=self._index)
        self._index += 1
        outcome = run_inline(self.target, {"params": plan.params, **plan.run_args},
                             on_progress=on_progress)
        if group.fatal is None:
            return outcome
        status.report("failed", reason=group.fatal)
        self.failure = self._first_failure(plan.name, group.fatal)
        return Outcome("error", reason=self.failure, wall_s=time.monotonic() - t0)

    def _first_failure(self, case: str, mine: str) -> str:
        """The rank that failed first, by the statuses in the store: the others' errors are
        usually only the broken connection it left behind."""
        from llmbench.dist import status
        from llmbench.dist.diagnosis import first_failure

        own = f"rank {self.launch.rank} failed in case {case}: {mine}"
        deadline = time.monotonic() + FAILURE_WAIT_S
        while True:
            statuses = status.read_store(self.store, self.launch.world_size)
            others = [s for r, s in statuses.items()
                      if r != self.launch.rank and s.get("phase") == "failed"]
            if others or time.monotonic() > deadline:
                return first_failure(statuses) or own
            time.sleep(0.1)
