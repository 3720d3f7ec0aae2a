"""Each rank's status file: which case and phase it is in, so that the parent can say which
rank failed or hung, and why.

A rank launched by `llmbench ... --nproc N` finds the run's directory in $LLMBENCH_DIST_DIR
and rewrites `rank<R>.json` there at every phase change (a handful per case, never inside
the timed loop). Elsewhere (under the user's own torchrun) `report` does nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

DIR_ENV = "LLMBENCH_DIST_DIR"

# Phases in the order a case passes through them.
PHASES = ("starting", "connecting", "ready", "setup", "agreeing", "collective", "finishing",
          "finished", "failed")

_state: dict[str, Any] = {}


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def path(directory: str | Path, rank_: int) -> Path:
    return Path(directory) / f"rank{rank_}.json"


def stack_path(directory: str | Path, rank_: int) -> Path:
    return Path(directory) / f"rank{rank_}.stack"


def report(phase: str, **fields: Any) -> None:
    """Record that this rank entered `phase` (with the case it is in, once set)."""
    _state.update(fields, phase=phase, rank=rank(), pid=os.getpid(), time=time.time())
    directory = os.environ.get(DIR_ENV)
    if not directory:
        return
    target = path(directory, _state["rank"])
    tmp = target.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(_state))
        os.replace(tmp, target)
    except OSError:
        pass  # the parent reads what it can; a status file is a diagnostic, not a result


def current() -> dict[str, Any]:
    return dict(_state)


def read_all(directory: str | Path, world_size: int) -> dict[int, dict[str, Any]]:
    """Every rank's last status; ranks that never wrote one are missing."""
    out = {}
    for r in range(world_size):
        try:
            out[r] = json.loads(path(directory, r).read_text())
        except (OSError, ValueError):
            continue
    return out
