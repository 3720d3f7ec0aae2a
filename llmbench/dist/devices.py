"""Which GPU each rank uses, and the check that no two ranks share one or go without.

A launcher either shows every rank of a host all of its GPUs (torchrun; srun without GPU
binding), and rank `LOCAL_RANK` takes GPU `LOCAL_RANK`; or it shows each task a subset of its
own (`srun --gpus-per-task=1`, `--gpu-bind=per_task:1`: every task sees one GPU, numbered 0),
and the rank takes GPU `LOCAL_RANK % count` of what it sees. Both are `local_rank % count`.

What a rank cannot tell alone is whether another rank picked the same physical GPU (eight
torchrun ranks on four GPUs) — NCCL refuses that, or worse, hangs — so the ranks exchange what
they picked (host and GPU UUID) through the rendezvous store before the communicator exists,
and every rank stops with the same one-line error naming the variables involved.

The decisions are pure functions of numbers and mappings, so the tests drive them with the
environments of real launches; `identity` is the one place that asks torch.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from llmbench.core.errors import UsageError

# The variables a user sets or a launcher sets that decide what each rank sees.
_VISIBILITY = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")
_PER_HOST = ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE")


@dataclass(frozen=True)
class DeviceChoice:
    """What one rank picked, as exchanged between the ranks."""

    rank: int
    host: str
    local_rank: int
    visible: int  # CUDA devices this rank sees
    index: int  # the one it uses, among those it sees
    uuid: str  # the physical GPU (or MIG slice)
    env: dict[str, str]  # the launch variables that decided it, for the error message


def launch_variables(env: Mapping[str, str]) -> dict[str, str]:
    keys = ("LOCAL_RANK", "SLURM_LOCALID", *_PER_HOST, *_VISIBILITY)
    return {k: env[k] for k in keys if k in env}


def cuda_index(local_rank: int, count: int, env: Mapping[str, str], rank: int) -> int:
    """The GPU (among the `count` this rank sees) that rank `rank` uses."""
    if count <= 0:
        shown = ", ".join(f"{k}={v}" for k, v in launch_variables(env).items()
                          if k in _VISIBILITY) or "CUDA_VISIBLE_DEVICES unset"
        raise UsageError(f"rank {rank} sees no CUDA device ({shown}): give every task a GPU "
                         "(srun --gpus-per-task=1) or run with --device cpu")
    if local_rank < 0:
        raise UsageError(f"rank {rank}: LOCAL_RANK={local_rank} is negative")
    return local_rank % count


def _describe(choices: list[DeviceChoice]) -> str:
    first = choices[0]
    shown = "; ".join(f"{k}={v}" for k, v in first.env.items() if k not in ("LOCAL_RANK",
                                                                             "SLURM_LOCALID"))
    locals_ = ",".join(str(c.local_rank) for c in choices)
    return (f"LOCAL_RANK {locals_}, each seeing {first.visible} CUDA device(s)"
            + (f" ({shown})" if shown else " (CUDA_VISIBLE_DEVICES unset)"))


def check_distinct(choices: list[DeviceChoice]) -> None:
    """Raise one line when two ranks picked the same physical GPU on one host."""
    by_gpu: dict[tuple[str, str], list[DeviceChoice]] = {}
    for c in sorted(choices, key=lambda c: c.rank):
        by_gpu.setdefault((c.host, c.uuid), []).append(c)
    shared = [group for group in by_gpu.values() if len(group) > 1]
    if not shared:
        return
    group = shared[0]
    ranks = [c.rank for c in group]
    on_host = [c for c in choices if c.host == group[0].host]
    most = max(c.visible for c in on_host)
    names = " and ".join(map(str, ranks)) if len(ranks) == 2 else ", ".join(map(str, ranks))
    raise UsageError(
        f"ranks {names} would share GPU {group[0].index} ({group[0].uuid}) on "
        f"{group[0].host}: {len(on_host)} ranks there, {_describe(on_host)}; start at most "
        f"{most} rank(s) per host (torchrun --nproc-per-node {most}) or give each task its "
        "own GPU (srun --gpus-per-task=1)")


def identity(index: int) -> str:
    """A name for the physical device behind CUDA index `index` in this process."""
    import torch

    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        return f"GPU-{uuid}" if not str(uuid).startswith(("GPU-", "MIG-")) else str(uuid)
    bus = [getattr(props, k, None) for k in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    return "pci " + ":".join(f"{v:02x}" for v in bus) if None not in bus else f"cuda:{index}"


def choose(*, rank: int, local_rank: int, env: Mapping[str, str]) -> DeviceChoice:
    """This rank's pick, from what torch sees (the count honours CUDA_VISIBLE_DEVICES)."""
    import torch

    count = torch.cuda.device_count()
    index = cuda_index(local_rank, count, env, rank)
    return DeviceChoice(rank=rank, host=socket.gethostname(), local_rank=local_rank,
                        visible=count, index=index, uuid=identity(index),
                        env=launch_variables(env))


def exchange(store: Any, choice: DeviceChoice, world_size: int,
             timeout: timedelta) -> list[DeviceChoice]:
    """Every rank's choice, through the rendezvous store (no communicator needed)."""
    store.set(f"device/{choice.rank}", json.dumps(asdict(choice)))
    keys = [f"device/{r}" for r in range(world_size)]
    store.wait(keys, timeout)
    return [DeviceChoice(**json.loads(store.get(k))) for k in keys]
