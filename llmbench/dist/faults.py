"""Deliberate failures, for testing how a failing or hanging rank is reported.

$LLMBENCH_DIST_FAULT = KIND:RANK[:CASE] makes rank RANK misbehave in case number CASE (every
case when left out):

- setup-fail: raise during the case's local set-up (the ranks agree; the case is recorded as
  an error and the run goes on)
- fail: raise inside the collectives (the rank stops; the group is torn down)
- exit: leave the process with exit code 3 without a word, as a crash would
- hang: stop responding inside the collectives
- connect-hang: stop responding while joining the group (as a wrong NCCL_SOCKET_IFNAME would)
"""

from __future__ import annotations

import os
import time

from llmbench.dist import status

ENV = "LLMBENCH_DIST_FAULT"
KINDS = {"setup-fail": "setup", "fail": "collective", "exit": "collective", "hang": "collective",
         "connect-hang": "connecting"}


class InjectedFault(RuntimeError):
    pass


def _parse(text: str) -> tuple[str, int, int | None] | None:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in KINDS:
        raise ValueError(f"${ENV}={text!r}: expected KIND:RANK[:CASE] with KIND one of "
                         f"{', '.join(KINDS)}")
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None


def inject(point: str) -> None:
    """Called by the group helpers at each point where a fault can be placed."""
    text = os.environ.get(ENV)
    if not text:
        return
    kind, rank, case = _parse(text)
    if KINDS[kind] != point or rank != status.rank():
        return
    if case is not None and status.current().get("index") != case:
        return
    if kind == "exit":
        os._exit(3)
    if kind in ("hang", "connect-hang"):
        while True:
            time.sleep(3600)
    raise InjectedFault(f"injected fault ({ENV}={text})")
