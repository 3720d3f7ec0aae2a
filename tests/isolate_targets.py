"""Case functions for the isolation tests; the isolated child imports them by name."""

from __future__ import annotations

import os
import signal
import sys
import time

from llmbench.core.errors import CaseSkipped, CaseUnavailable


def ok(payload):
    return {"echo": payload, "pid": os.getpid()}


def raises(payload):
    raise ValueError("boom\nsecond line")


def unavailable(payload):
    raise CaseUnavailable("no such backend here")


def skipped(payload):
    raise CaseSkipped("not worth running")


def segfault(payload):
    print("about to crash", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def sigkill(payload):
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def hang(payload):
    time.sleep(3600)


def exits(payload):
    print("giving up", file=sys.stderr, flush=True)
    os._exit(3)


def huge_allocation(payload):
    import torch

    return torch.empty(2**50, dtype=torch.uint8).sum().item()


def unpicklable(payload):
    return lambda: None


def reports_progress(payload):
    from llmbench.core import progress

    for step in range(3):
        progress.report(step=step, total=3, loss=1.0 / (step + 1))
    return "done"


def sleeps(payload):
    start = time.time()
    time.sleep(payload["params"]["seconds"])
    return {"start": start}
