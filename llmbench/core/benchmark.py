"""What a benchmark module provides to the shared runner."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

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


class Benchmark(ABC, Generic[C]):
    name: ClassVar[str]
    config_type: ClassVar[type[BaseModel]]
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
