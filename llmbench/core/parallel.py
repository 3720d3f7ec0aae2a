"""Run a benchmark's cases several at a time, each still in its own process.

For cases that measure nothing about the machine (compiling kernels for a GPU that is not here,
say), running one at a time only wastes the other cores. Each case keeps the isolation of
`run_isolated` (time limit, crash and OOM safety); up to `jobs` of them run at once, started in
plan order, and their outcomes are handed back in plan order, so progress lines and results
read exactly as in a sequential run. Ctrl-C (or any exception) cancels: queued cases never
start and running children are killed within a fraction of a second.

Timed cases must not use this: concurrent cases would disturb each other's figures.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from llmbench.core.isolate import Outcome, run_isolated


class CasePlan(Protocol):
    """What this needs of a planned case (llmbench.core.benchmark.CasePlan has it)."""

    name: str
    unavailable: str | None
    target: str | None

    def payload(self) -> dict[str, Any]: ...


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class ParallelCases:
    """A case executor (see `llmbench.core.runner.CaseExecutor`) for `target` over `plans`."""

    def __init__(self, target: str, plans: list[CasePlan], *, jobs: int, timeout_s: float) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self._target = target  # for plans that do not name their own
        self._plans = [p for p in plans if not p.unavailable]
        self._jobs = jobs
        self._timeout_s = timeout_s
        self._cancel = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[str, Future[Outcome]] = {}

    def __enter__(self) -> ParallelCases:
        names = [p.name for p in self._plans]
        if len(set(names)) != len(names):
            raise ValueError("parallel cases need distinct case names")
        self._pool = ThreadPoolExecutor(max_workers=self._jobs,
                                        thread_name_prefix="llmbench-case")
        for plan in self._plans:
            self._futures[plan.name] = self._pool.submit(
                run_isolated, plan.target or self._target, plan.payload(),
                timeout_s=self._timeout_s, cancel=self._cancel)
        return self

    def run(self, plan: CasePlan,
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
        return self._futures[plan.name].result()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def parallel_executor(jobs: int, timeout_s: float) -> Callable[..., ParallelCases]:
    """The factory `run_benchmark(executor=...)` takes: the benchmark's own case target, its
    plans, `jobs` at a time."""

    def make(bench: Any, config: Any, plans: list[CasePlan], device: str) -> ParallelCases:
        return ParallelCases(bench.case_target, plans, jobs=jobs, timeout_s=timeout_s)

    return make
