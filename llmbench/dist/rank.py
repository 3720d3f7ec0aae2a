"""One rank of a group that `llmbench ... --nproc N` started: `python -m llmbench.dist.rank SPEC`.

SPEC (JSON, written by the parent) names the case function, the cases in order, the backend,
device and collective time-out. Every rank runs every case in lock step; rank 0 appends each
case's outcome to `results.jsonl` in the run directory as it finishes, for the parent to read.
A rank whose collective failed records why in its status file and exits 1, which makes
torchrun stop the others. SIGUSR1 makes a rank write its Python stack (for hang reports).
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from llmbench.core.errors import one_line
from llmbench.dist import status

RESULTS = "results.jsonl"


def _dump_stack_on_sigusr1(directory: Path, rank: int) -> None:
    stack = open(status.stack_path(directory, rank), "w")  # noqa: SIM115 - lives with the rank
    faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True, chain=False)


def _fail(reason: str) -> None:
    status.report("failed", reason=one_line(reason))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # not sys.exit: the group's destructors could block on the ranks that are gone


def _line(index: int, outcome: Any) -> str:
    record = {"index": index, "status": outcome.status, "reason": outcome.reason,
              "value": outcome.value}
    try:
        return json.dumps(record)
    except (TypeError, ValueError) as exc:
        return json.dumps({"index": index, "status": "error", "value": None,
                           "reason": one_line(f"result could not be sent back: {exc}")})


def main(argv: list[str]) -> None:
    spec: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    directory = Path(spec["dir"])
    rank = int(os.environ["RANK"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C
    status.report("starting", thread=f"0x{threading.main_thread().ident:016x}")
    _dump_stack_on_sigusr1(directory, rank)
    faulthandler.enable(file=sys.stderr, all_threads=True)  # NCCL's watchdog aborts: stacks
    try:
        from llmbench.core.isolate import run_inline
        from llmbench.dist import group

        group.init(backend=spec["backend"], device=spec["device"],
                   local_rank=int(os.environ.get("LOCAL_RANK", rank)),
                   timeout_s=spec["timeout_s"])
    except Exception as exc:  # noqa: BLE001 - reported with the rank, then the rank stops
        _fail(f"could not join the process group: {type(exc).__name__}: {exc}")
    results = open(directory / RESULTS, "a") if rank == 0 else None  # noqa: SIM115
    for index, plan in enumerate(spec["plans"]):
        status.report("setup", case=plan["name"], index=index)
        outcome = run_inline(spec["target"], {"params": plan["params"], **plan["run_args"]})
        if group.fatal is not None:  # no result: the parent reports the group's failure
            _fail(group.fatal)
        if results is not None:
            results.write(_line(index, outcome) + "\n")
            results.flush()
    try:
        group.finish()
    except Exception as exc:  # noqa: BLE001
        _fail(f"could not leave the process group: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main(sys.argv[1:])
