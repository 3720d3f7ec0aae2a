"""What a benchmark module provides to the shared runner."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from llmbench.core.declare import COMMON, Metric, PlotSpec, find
from llmbench.core.hardware import HardwareInfo
from llmbench.core.profiles import Profile
from llmbench.core.results import CaseResult

C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True)
class CasePlan:
    """One case as planned in the parent, before it runs."""

    name: str
    params: dict[str, Any]  # what identifies the case; recorded in the results
    run_args: dict[str, Any] = field(default_factory=dict)  # settings sent along, not recorded
    predicted_memory_bytes: int | None = None  # what the case adds above its inputs
    required_memory_bytes: int | None = None  # inputs + predicted: checked against free memory
    unavailable: str | None = None  # set when the case cannot run here; it is then not run
    target: str | None = None  # "module:function" running this case; None: the bench's own

    def payload(self) -> dict[str, Any]:
        """What the case function receives."""
        return {"params": self.params, **self.run_args}


@dataclass(frozen=True)
class PlanContext:
    hw: HardwareInfo
    profile: Profile
    device: str


# Shared groups of run options a benchmark's command offers (cli.options defines them once).
RUN_OPTIONS = ("max_time", "profile", "timeout", "isolate")


class Benchmark(ABC, Generic[C]):
    """One benchmark, declared once: the registry (`llmbench.benches`) finds every subclass
    with a `name` in the modules of `llmbench.benches`; the command line, suite validation,
    the renderer, the plot and `compare` all read this declaration.

    `help` is the command's help: a one-line summary, a blank line, then what a user should
    know. The command's options are the config's fields that carry an `Opt`, then the shared
    `run_options` (--max-time for configs with a `timing` field, --profile, --timeout,
    --isolate), --trace and --memory-snapshot (every command) and the output options every
    command has (--json, --format, -q, --fail-on).
    """

    name: ClassVar[str]
    help: ClassVar[str]
    config_type: ClassVar[type[BaseModel]]
    # The command's words when they are not just the name ("tune attention").
    command: ClassVar[tuple[str, ...]] = ()
    group_help: ClassVar[str] = ""  # the help of the first word's group, for such commands
    run_options: ClassVar[tuple[str, ...]] = RUN_OPTIONS
    # What the cases report (core.declare.COMMON adds time_ms and the GPU's state).
    metrics: ClassVar[tuple[Metric, ...]] = ()
    # "package.module:function" rendering a document as tables, (doc, console) -> None; None:
    # the generic table of params and declared metrics (llmbench.report.generic).
    renderer: ClassVar[str | None] = None
    # A plot: "module:function" (doc -> [(title, png)]), a PlotSpec, or None with `no_plot`
    # saying why there is nothing to draw.
    plot: ClassVar[str | PlotSpec | None] = None
    no_plot: ClassVar[str | None] = None
    # True: the cases run on the ranks of a process group (llmbench.dist).
    distributed: ClassVar[bool] = False
    # A case's params and the document's summary as typed models: what the renderers and plots
    # read (`llmbench.benches.params_of`, `summary_of`). Under LLMBENCH_STRICT_METRICS=1 the
    # runner checks every case and summary against them.
    params_type: ClassVar[type[BaseModel] | None] = None
    summary_type: ClassVar[type[BaseModel] | None] = None
    # "package.module:function" that runs one case in the (isolated) child. It receives
    # {"params": ..., **run_args} and returns the case's metrics as a dict.
    case_target: ClassVar[str]
    # False for benchmarks that only read or compute small tables (no timing, no memory): a
    # process per case would cost more than the case.
    isolated: ClassVar[bool] = True

    def resolve(self, config: C, hw: HardwareInfo) -> C:
        """Fill automatic fields (device, dtype) and check the config against this machine."""
        return config

    def device_of(self, config: C, hw: HardwareInfo) -> str:
        return getattr(config, "device", None) or hw.device

    @abstractmethod
    def plan(self, config: C, ctx: PlanContext) -> list[CasePlan]:
        """The cases to run, in order."""

    def summarize(self, config: C, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        """Figures derived across cases: per-case comparisons and a document-level summary."""
        return cases, {}

    def jobs(self, config: C) -> int | None:
        """Isolated cases to run at once (for cases that time nothing); None: one by one."""
        return None

    def finish(self, config: C, document: Any) -> str | None:
        """Runs once the results are written and shown (a command's further use of them, such
        as tune's --write-profile); returns a line for the user, or None."""
        return None

    @classmethod
    def words(cls) -> tuple[str, ...]:
        return cls.command or (cls.name,)

    @classmethod
    def metric(cls, name: str) -> Metric | None:
        """The declaration of metric `name` (the benchmark's own, then the common ones)."""
        return find((*cls.metrics, *COMMON), name)
