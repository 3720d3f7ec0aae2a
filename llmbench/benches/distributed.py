"""What the benchmarks that run on a torch.distributed process group share (comm, ddp): the
group's knobs in their configs, and checking them against this machine and launch.

Their cases run on every rank in lock step (`llmbench.dist`), so they are timed with a fixed
number of warm-up and timed calls (`lockstep_policy`) rather than adaptive repeats, and they
never ask the runner to check free memory (ranks could disagree): a rank that cannot allocate
tells the others, and the case is recorded as out of memory on all of them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmbench.core.benchmark import Benchmark, C
from llmbench.core.declare import Opt
from llmbench.core.errors import UsageError
from llmbench.core.flags import DEVICE, flag_like
from llmbench.core.hardware import HardwareInfo

Backend = Literal["nccl", "gloo"]


GROUP_PANEL = "Process group"


class DistConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nproc: Annotated[int | None, Field(ge=1), Opt(
        "Ranks to start on this machine (torchrun). Under torchrun or srun, leave it out: the "
        "launch's ranks are used and only rank 0 writes.",
        default_text="one per GPU on cuda, 2 on cpu", panel=GROUP_PANEL)] = None
    backend: Annotated[Backend | None, Opt("Process group backend.",
                                           default_text="nccl on cuda, gloo on cpu",
                                           panel=GROUP_PANEL)] = None
    warmup: Annotated[int, Field(ge=0), Opt("Untimed calls first.", panel=GROUP_PANEL)] = 5
    iters: Annotated[int, Field(ge=1), Opt(
        "Back-to-back calls per timed window (nccl-tests' -n); every rank makes exactly as "
        "many.", panel=GROUP_PANEL)] = 20
    device: Annotated[Literal["cpu", "cuda"] | None, flag_like(DEVICE, panel=GROUP_PANEL)
                      ] = None


class DistributedBenchmark(Benchmark[C]):
    """A benchmark whose cases run on the ranks of a process group, never in a process each."""

    isolated: ClassVar[bool] = False
    distributed: ClassVar[bool] = True
    run_options: ClassVar[tuple[str, ...]] = ("profile", "timeout")

    def group_settings(self, config: DistConfig, hw: HardwareInfo,
                       device: str) -> dict[str, Any]:
        """nproc and backend, resolved for this machine and launch, as config updates."""
        from llmbench.dist.launch_env import existing_launch

        launch = existing_launch()
        if launch is not None:
            if config.nproc is not None and config.nproc != launch.world_size:
                raise UsageError(f"--nproc {config.nproc}: this process is one of "
                                 f"{launch.world_size} ranks started by {launch.source}; leave "
                                 "--nproc out")
            nproc = launch.world_size
        else:
            nproc = config.nproc or (len(hw.gpus) if device == "cuda" else 2)
        backend = config.backend or ("nccl" if device == "cuda" else "gloo")
        if backend == "nccl" and device != "cuda":
            raise UsageError("--backend nccl runs on GPUs: use --device cuda, or --backend gloo")
        if launch is None and device == "cuda" and nproc > len(hw.gpus):
            raise UsageError(f"--nproc {nproc}: {len(hw.gpus)} GPU(s) visible here, and each "
                             "rank needs its own")
        return {"nproc": nproc, "backend": backend}
