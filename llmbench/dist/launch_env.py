"""Whether this process was started as one rank of a launch that already exists.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. srun sets
SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID but no rendezvous address, which the user exports
(MASTER_ADDR, and MASTER_PORT unless 29500 suits). No torch import here: the CLI decides how to
run before anything heavy is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from llmbench.core.errors import UsageError

DEFAULT_PORT = "29500"


@dataclass(frozen=True)
class Launch:
    rank: int
    world_size: int
    local_rank: int
    source: str  # "torchrun" | "slurm"
    env: dict[str, str]  # what init_process_group(init_method="env://") needs

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise UsageError(f"${key}={env[key]!r} is not an integer") from None


def existing_launch(env: Mapping[str, str] | None = None) -> Launch | None:
    """The launch this process is a rank of, or None when it runs on its own."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise UsageError(f"RANK and WORLD_SIZE are set but {' and '.join(missing)} "
                             "are not: start the ranks with torchrun, or export them")
        return Launch(rank, world, local, "torchrun", {})
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and _int(env, "SLURM_NTASKS") > 1:
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        if "MASTER_ADDR" not in env:
            raise UsageError(
                f"running as one of {world} srun tasks but $MASTER_ADDR is not set: export "
                "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) "
                "(and MASTER_PORT) before srun")
        return Launch(rank, world, local, "slurm", {
            "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local),
            "MASTER_PORT": env.get("MASTER_PORT", DEFAULT_PORT)})
    return None
