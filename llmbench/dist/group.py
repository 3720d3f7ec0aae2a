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
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from llmbench.core.errors import CaseFailed, one_line
from llmbench.core.isolate import classify_exception
from llmbench.core.timing import TimeStats
from llmbench.dist import faults, status

fatal: str | None = None  # set when a collective failed on this rank: the group is unusable


def init(*, backend: str, device: str, local_rank: int, timeout_s: float) -> None:
    """Join the group named by the environment (env://). A rank that waits longer than
    `timeout_s` in one collective raises instead of waiting for ever."""
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    status.report("connecting")
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    status.report("ready")


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


def slowest_calls(samples: list[float]) -> TimeStats:
    """Statistics of the per-call maximum over the ranks."""
    return TimeStats.from_samples(samples_across_ranks(samples)[0])
