"""A whole benchmark in one module, as docs/architecture.md's recipe writes one: the config
with its options, the declaration, and the case. tests/test_registry.py runs it through the
command line built from this declaration alone."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import Metric, Opt, PlotSpec
from llmbench.core.flags import Device, Seed
from llmbench.core.hardware import HardwareInfo, usable_device
from llmbench.core.timing import TimingPolicy


class SquareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sizes: Annotated[list[int], Field(min_length=1), Opt(
        "Elements: 1024 | 1024,4096 | 1024:65536 (doubling).", flag="--size",
        parse="sweep")] = [4096]
    device: Device = None
    seed: Seed = 0
    timing: TimingPolicy = Field(default_factory=lambda: TimingPolicy(max_time_s=0.2))


class SquareBenchmark(Benchmark[SquareConfig]):
    name = "square"
    help = """Squares a vector: time and elements per second.

    The example of the contributor's guide.
    """
    config_type = SquareConfig
    case_target = "tests.example_bench:run_case"
    metrics = (Metric("elements_per_s", "1/s", "higher", "elements squared per second",
                      derived=True),
               Metric("checked_error", "abs", "lower", "max |x*x - x**2|", family="error"))
    plot = PlotSpec(x="size", y=("time_ms",), logx=True)

    def resolve(self, config: SquareConfig, hw: HardwareInfo) -> SquareConfig:
        return config.model_copy(update={"device": usable_device(config.device, hw)})

    def plan(self, config: SquareConfig, ctx: PlanContext) -> list[CasePlan]:
        return [CasePlan(name=f"n={n}", params={"size": n, "device": config.device},
                         run_args={"seed": config.seed, "timing": config.timing.model_dump()})
                for n in config.sizes]


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llmbench.core.timing import TimingPolicy, measure

    torch.manual_seed(payload["seed"])
    x = torch.randn(payload["params"]["size"], device=payload["params"]["device"])
    stats = measure(lambda: x * x, device=payload["params"]["device"],
                    policy=TimingPolicy(**payload["timing"]))
    return {"time_ms": stats, "elements_per_s": x.numel() / (stats.median / 1e3),
            "checked_error": float((x * x - x**2).abs().max())}
