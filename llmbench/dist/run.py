"""Run a distributed benchmark: as the launcher of N local ranks, or as one rank of a launch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmbench.core.benchmark import Benchmark, CasePlan
from llmbench.core.results import ResultDocument
from llmbench.core.runner import Interrupted, Progress, RunOptions, run_benchmark
from llmbench.dist.launch_env import existing_launch


@dataclass(frozen=True)
class DistributedRun:
    document: ResultDocument
    is_main: bool  # rank 0, or the launcher: the one process that renders and writes
    failure: str | None = None  # why the group stopped early (the run then exits 1)
    log_path: Path | None = None  # torchrun's log, kept when the group failed
    interrupted: bool = False


def run_distributed(bench: Benchmark, config: BaseModel, *, options: RunOptions,
                    progress: Progress | None = None) -> DistributedRun:
    launch = existing_launch()
    is_main = launch is None or launch.is_main
    made: list[Any] = []

    def executor(bench: Benchmark, config: Any, plans: list[CasePlan], device: str) -> Any:
        if launch is not None:
            from llmbench.dist.inprocess import InProcessRanks

            made.append(InProcessRanks(launch=launch, backend=config.backend, device=device,
                                       target=bench.case_target, timeout_s=options.timeout_s))
        else:
            from llmbench.dist.torchrun import TorchrunGroup

            made.append(TorchrunGroup(nproc=config.nproc, backend=config.backend, device=device,
                                      target=bench.case_target, plans=plans,
                                      timeout_s=options.timeout_s))
        return made[-1]

    interrupted = False
    try:
        doc = run_benchmark(bench, config, options=options,
                            progress=progress if is_main else None, executor=executor)
    except Interrupted as exc:
        doc, interrupted = exc.document, True
    failure = made[0].failure if made else None
    log = getattr(made[0], "log_path", None) if made and failure else None
    return DistributedRun(doc, is_main, failure, log, interrupted)
