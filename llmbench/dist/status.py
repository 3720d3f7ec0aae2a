"""Each rank's status file: which case and phase it is in, so that the parent can say which
rank failed or hung, and why.

A rank launched by `llmbench ... --nproc N` finds the run's directory in $LLMBENCH_DIST_DIR
and rewrites `rank<R>.json` there at every phase change (a handful per case, never inside
the timed loop). Under a launch of the user's own (torchrun, srun) there is no parent to read
files: the ranks publish their status in the rendezvous store instead (`publish_to`), where
each rank's watchdog reads the others' (`llmbench.dist.watchdog`).
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
_store: Any = None  # a torch.distributed Store, under a launch of the user's own


def publish_to(store: Any) -> None:
    """Also publish every status as key `status/<rank>` of `store` (None: stop)."""
    global _store
    _store = store
    if store is not None and _state:
        _publish()


def _publish() -> None:
    try:
        _store.set(f"status/{_state['rank']}", json.dumps(_state))
    except Exception:  # noqa: BLE001 - a diagnostic: never let it fail the rank
        pass


def read_store(store: Any, world_size: int, kind: str = "status") -> dict[int, Any]:
    """Every rank's last `kind` record in `store`; ranks that published none are missing."""
    out = {}
    for r in range(world_size):
        key = f"{kind}/{r}"
        try:
            if store.check([key]):
                out[r] = json.loads(store.get(key))
        except Exception:  # noqa: BLE001 - the store may be gone with its host rank
            continue
    return out


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def path(directory: str | Path, rank_: int) -> Path:
    return Path(directory) / f"rank{rank_}.json"


def stack_path(directory: str | Path, rank_: int) -> Path:
    return Path(directory) / f"rank{rank_}.stack"


def report(phase: str, **fields: Any) -> None:
    """Record that this rank entered `phase` (with the case it is in, once set)."""
    _state.update(fields, phase=phase, rank=rank(), pid=os.getpid(), time=time.time())
    if _store is not None:
        _publish()
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
