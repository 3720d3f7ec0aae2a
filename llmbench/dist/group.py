"""The process group as a case function sees it: set-up that may fail on one rank, after which
the ranks agree on one outcome, and collectives, after which a failure is fatal.

Why the split: if one rank raised and went on to the next case while the others were still in
a collective, the ranks would pair up the wrong operations. So a case does its local work
(allocating, checking results) inside `local()`, which ends with every rank exchanging its
outcome; a failure on any rank becomes the same `CaseFailed` on all of them, and the run goes
on. Inside `collective()`, an exception marks the rank broken (`fatal`): the rank loop then
stops the process and the launcher tears the group down and says which rank failed and why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from llmbench.core.errors import CaseFailed, one_line
from llmbench.core.isolate import classify_exception
from llmbench.core.timing import TimeStats
from llmbench.dist import faults, status

fatal: str | None = None  # set when a collective failed on this rank: the group is unusable


def init(*, backend: str, device: str, local_rank: int, timeout_s: float,
         on_store: Callable[[Any], object] | None = None) -> Any:
    """Join the group named by the environment (env://) and return its rendezvous store
    (wrapped in a prefix of llmbench's own). `timeout_s` is the group's collective time-out:
    past it a Gloo rank raises, while NCCL's watchdog ends the process (SIGABRT, with torch's
    default TORCH_NCCL_ASYNC_ERROR_HANDLING=3); llmbench's callers set it well beyond their own
    hang detection so that theirs reports first. `on_store(store)` is called as soon as the
    store exists, before the slow part (so a watchdog can watch the set-up itself).

    On CUDA each rank first picks its GPU (`devices`) and the ranks check through the store
    that no two picked the same one. With NCCL the group is created bound to that GPU
    (`device_id`), which makes NCCL build its communicator here rather than at the first
    collective, and a barrier proves every rank has one: a set-up hang (a wrong
    NCCL_SOCKET_IFNAME, InfiniBand) is then reported in the `connecting` phase, not as a hang
    of the first case."""
    import os

    status.report("connecting")
    timeout = timedelta(seconds=timeout_s)
    raw, rank_, world = next(dist.rendezvous("env://", timeout=timeout))
    raw.set_timeout(timeout)
    # llmbench's keys go through a connection of their own: torch's set-up blocks the
    # rendezvous connection while it waits for the others, and a watchdog must still talk.
    own = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                        is_master=False, timeout=timeout)
    store = dist.PrefixStore("llmbench", own)
    if on_store is not None:
        on_store(store)
    faults.inject("connecting")
    device_id = None
    if device == "cuda":
        from llmbench.dist import devices

        choice = devices.choose(rank=rank_, local_rank=local_rank, env=os.environ)
        devices.check_distinct(devices.exchange(store, choice, world, timeout))
        torch.cuda.set_device(choice.index)
        if backend == "nccl":
            device_id = torch.device("cuda", choice.index)
    dist.init_process_group(backend=backend, store=dist.PrefixStore("default_pg", raw), rank=rank_, world_size=world,
                            timeout=timeout, device_id=device_id)
    if device_id is not None:
        dist.barrier(device_ids=[device_id.index])
    status.report("ready")
    return store


def finish() -> None:
    """Leave the group together: nobody tears down while another rank still talks."""
    status.report("finishing")
    dist.barrier()
    dist.destroy_process_group()
    status.report("finished")


def rank() -> int:
    return dist.get_rank()


def world_size() -> int:
    return dist.get_world_size()


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Work that may fail on one rank alone; every rank then learns every rank's outcome."""
    status.report("setup")
    error: BaseException | None = None
    try:
        faults.inject("setup")
        yield
    except Exception as exc:  # noqa: BLE001 - every failure becomes the case's status
        error = exc
    agree(error)


def agree(error: BaseException | None) -> None:
    """Exchange outcomes; raise the lowest failing rank's as `CaseFailed` on every rank."""
    mine = None if error is None else classify_exception(error)
    status.report("agreeing")
    everyone = gather(mine)
    for r, outcome in enumerate(everyone):
        if outcome is not None:
            kind, reason = outcome
            raise CaseFailed(kind, f"rank {r}: {reason}" if world_size() > 1 else reason)


@contextlib.contextmanager
def collective() -> Iterator[None]:
    """Collectives: an exception here leaves the group unusable, so the rank stops after it."""
    global fatal
    status.report("collective")
    try:
        faults.inject("collective")
        yield
    except BaseException as exc:
        fatal = classify_exception(exc)[1] if isinstance(exc, Exception) else repr(exc)
        raise


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a collective: a failure here is fatal)."""
    global fatal
    out: list[Any] = [None] * world_size()
    try:
        dist.all_gather_object(out, obj)
    except Exception as exc:
        fatal = one_line(f"{type(exc).__name__}: {exc}")
        raise
    return out


def samples_across_ranks(samples: list[float]) -> tuple[list[float], list[list[float]]]:
    """(per-call maximum over the ranks, every rank's own samples). A collective call ends
    when its slowest rank does, so the maximum is the call's time."""
    everyone = gather([float(s) for s in samples])
    return [max(values) for values in zip(*everyone, strict=True)], everyone


def mean_across_ranks(samples: list[float]) -> tuple[list[float], list[list[float]]]:
    """(per-sample mean over the ranks, every rank's own samples): nccl-tests' reduction of
    its windowed times, where the barrier before each window has lined the ranks up."""
    everyone = gather([float(s) for s in samples])
    return [sum(values) / len(values) for values in zip(*everyone, strict=True)], everyone


def barrier() -> None:
    """A barrier on the group's device (on NCCL the calling thread waits until the barrier
    has completed on this rank's current stream)."""
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def slowest_calls(samples: list[float]) -> TimeStats:
    """Statistics of the per-call maximum over the ranks."""
    return TimeStats.from_samples(samples_across_ranks(samples)[0])
