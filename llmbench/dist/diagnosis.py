"""Saying which rank failed or hung, and where, from the ranks' statuses and stack tops.

Shared by the two ways a group runs: the parent of a `--nproc` launch reads the ranks' status
files and asks each rank for its stack (SIGUSR1); under a launch of the user's own, each rank's
watchdog reads the others' statuses and stack tops from the rendezvous store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Frame = tuple[str, int, str]  # (short path, line, function)

# Phases in which a rank waits for the others rather than working alone.
WAITING_PHASES = ("connecting", "agreeing", "collective", "finishing")

CONNECT_HINT = ("NCCL creates its communicator while the ranks join: NCCL_DEBUG=INFO shows "
                "where it stops; check NCCL_SOCKET_IFNAME and, without InfiniBand, "
                "NCCL_IB_DISABLE=1")


def short_path(path: str) -> str:
    """'/…/site-packages/torch/distributed/x.py' -> 'torch/distributed/x.py'."""
    parts = Path(path).parts
    starts = [len(parts) - 1 - parts[::-1].index(a) for a in ("llmbench", "torch") if a in parts]
    return "/".join(parts[max(starts):]) if starts else Path(path).name


def where(s: dict[str, Any]) -> str:
    """' in case X', or ' while PHASE' before the first case."""
    if s.get("case"):
        return f" in case {s['case']}"
    if s.get("phase"):
        return f" while {s['phase']}"
    return ""


def _phase_order(phase: str | None) -> int:
    from llmbench.dist.status import PHASES

    return PHASES.index(phase) if phase in PHASES else len(PHASES)


def hang_report(statuses: dict[int, dict[str, Any]], frames: dict[int, Frame], nproc: int,
                idle_s: float, backend: str | None = None) -> str:
    """One line naming the rank(s) that hung. A rank whose main thread sits in torch is
    waiting for the others; the rest (or, when all wait, every rank) hung."""
    waiting, stuck, details = [], [], []
    for r in range(nproc):
        s = statuses.get(r)
        if s is None:
            stuck.append(r)
            details.append(f"rank {r} never started")
            continue
        frame = frames.get(r)
        at = f" at {frame[0]}:{frame[1]} in {frame[2]}" if frame else ""
        if frame and frame[0].startswith("torch/"):
            waiting.append(r)
            details.append(f"rank {r} waiting{at}")
        else:
            stuck.append(r)
            details.append(f"rank {r} in its {s.get('phase')} phase{at}")
    hung = stuck or waiting
    case = next((s.get("case") for s in statuses.values() if s.get("case")), None)
    # Before the first case: the earliest phase a hung rank is in (the one the others wait on).
    phases = [statuses[r].get("phase") for r in hung if r in statuses]
    phase = None if case else min(phases, default=None, key=_phase_order)
    names = ", ".join(map(str, hung))
    text = (f"rank {names} hung" + (f" while {phase}" if phase else "")
            + f": no progress for {idle_s:.0f} s" + (f" in case {case}" if case else "")
            + f" ({'; '.join(details)})")
    if phase == "connecting" and backend == "nccl":
        text += f"; {CONNECT_HINT}"
    return text


def first_failure(statuses: dict[int, dict[str, Any]]) -> str | None:
    """'rank R failed in case X: reason (then rank S failed too)' for the rank that recorded
    its failure first, or None when none did."""
    failed = sorted((s for s in statuses.values() if s.get("phase") == "failed"),
                    key=lambda s: s.get("time", 0.0))
    if not failed:
        return None
    s = failed[0]
    then = [str(t["rank"]) for t in failed[1:]]
    return (f"rank {s['rank']} failed{where(s)}: {s.get('reason')}"
            + (f" (then rank {', '.join(then)} failed too)" if then else ""))
