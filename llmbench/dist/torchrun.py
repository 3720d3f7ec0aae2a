"""`--nproc N` on one machine: start the ranks with torchrun, feed them the cases, watch them.

The parent plans the cases as for any benchmark, writes them to a spec file and starts
`python -m torch.distributed.run --standalone --nproc-per-node N -m llmbench.dist.rank SPEC` in
a session of its own. It then waits for rank 0's result of each case in turn. When torchrun
exits early, the ranks' status files say which rank failed first, in which case and why (or
torchrun's own report gives the rank and exit code of a rank that died without a word). When
no rank makes progress for the time-out, the ranks' Python stacks say which one hung and where;
the group is then stopped. Either way every process of the run is gone before `__exit__`
returns: torchrun's session first, then anything still carrying this run's token in its
environment (torchrun puts each rank in a session of its own). torchrun is started through
`llmbench.dist.launcher`, so that it stops its ranks even when the parent is killed outright.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmbench.core.benchmark import CasePlan
from llmbench.core.errors import one_line
from llmbench.core.isolate import Outcome, child_environment
from llmbench.dist import status
from llmbench.dist.diagnosis import first_failure, hang_report, short_path, where
from llmbench.dist.rank import RESULTS

TOKEN_ENV = "LLMBENCH_DIST_RUN"
POLL_S = 0.2
STOP_GRACE_S = 10.0
STACK_WAIT_S = 2.0
# Until every rank is past its start (reported, and out of its "starting" phase), --timeout
# is not the limit: torchrun and each rank first start an interpreter and import torch and
# llmbench, which takes seconds on a loaded machine and is no case's doing. A rank still
# not started after this long is reported as never started, or hung while starting.
START_UP_S = 60.0
# The launch variables of an enclosing job must not leak into our own standalone group.
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


class TorchrunGroup:
    """A `CaseExecutor` whose cases run on the N ranks of a torchrun launch."""

    def __init__(self, *, nproc: int, backend: str, device: str, target: str,
                 plans: list[CasePlan], timeout_s: float) -> None:
        self.nproc = nproc
        self.timeout_s = timeout_s
        self.plans = [p for p in plans if not p.unavailable]
        self.index = {p.name: i for i, p in enumerate(self.plans)}
        self.spec = {"target": target, "backend": backend, "device": device,
                     # Ranks wait in a collective longer than we watch them, so that a hang
                     # is diagnosed here (with stacks) rather than as a rank's time-out.
                     "timeout_s": 2 * timeout_s + 30,
                     "plans": [{"name": p.name, "params": p.params, "run_args": p.run_args}
                               for p in self.plans]}
        self.failure: str | None = None
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._token = uuid.uuid4().hex
        self._results: dict[int, dict[str, Any]] = {}
        self._offset = 0
        self._last_result = 0.0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> TorchrunGroup:
        self.dir = Path(tempfile.mkdtemp(prefix="llmbench-dist-"))
        self.spec["dir"] = str(self.dir)
        spec_path = self.dir / "spec.json"
        spec_path.write_text(json.dumps(self.spec))
        env = child_environment()
        for key in _LAUNCH_VARS:
            env.pop(key, None)
        env[TOKEN_ENV] = self._token
        env[status.DIR_ENV] = str(self.dir)
        self._log = open(self.dir / "torchrun.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmbench.dist.launcher", str(os.getpid()), "--standalone",
             f"--nproc-per-node={self.nproc}", "--max-restarts=0", "--monitor-interval=0.1",
             "-m", "llmbench.dist.rank", str(spec_path)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None and self.failure is None and self.proc.poll() is None:
                try:  # every case is in: the ranks are leaving the group
                    self.proc.wait(self.timeout_s)
                except subprocess.TimeoutExpired:
                    self.failure = (f"the ranks did not exit within {self.timeout_s:g} s "
                                    "after the last case (killed)")
            code = self.proc.poll()
            if exc_type is None and self.failure is None and code not in (None, 0):
                self.failure = self._why_exited(code)
        finally:
            self.stop()
            self._log.close()
            if self.failure is None:
                shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def log_path(self) -> Path | None:
        return self.dir / "torchrun.log" if self.dir else None

    # ------------------------------------------------------------------ cases

    def run(self, plan: CasePlan,
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
        if self.failure is not None:
            return Outcome("skipped", reason=one_line(f"not run: {self.failure}"))
        index = self.index[plan.name]
        shown = None
        t0 = time.monotonic()
        while True:
            self._read_results()
            if index in self._results:
                record = self._results[index]
                return Outcome(record["status"], value=record["value"], reason=record["reason"],
                               wall_s=time.monotonic() - t0)
            code = self.proc.poll()
            if code is not None:
                self._read_results()
                if index in self._results:
                    continue
                self.failure = self._why_exited(code)
                return Outcome("error", reason=self.failure)
            statuses = status.read_all(self.dir, self.nproc)
            phase = statuses.get(0, {}).get("phase")
            if on_progress is not None and phase != shown:
                on_progress({"stage": phase})
                shown = phase
            idle = time.time() - max([self.started, self._last_result,
                                      *(s.get("time", 0.0) for s in statuses.values())])
            started_all = len(statuses) == self.nproc and all(
                s.get("phase") != "starting" for s in statuses.values())
            if idle > (self.timeout_s if started_all else max(self.timeout_s, START_UP_S)):
                self.failure = self._why_hung(statuses, idle)
                self.stop()
                return Outcome("error", reason=self.failure)
            try:
                self.proc.wait(POLL_S)
            except subprocess.TimeoutExpired:
                pass

    def _read_results(self) -> None:
        path = self.dir / RESULTS
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # whole lines only: the rank may be mid-write
        for line in data[:end].splitlines():
            record = json.loads(line)
            self._results[record["index"]] = record
            self._last_result = time.time()
        self._offset += end

    # ------------------------------------------------------------------ diagnosis

    def _why_exited(self, code: int) -> str:
        """The rank that failed first and why. A rank that died without a word (a crash, the
        out-of-memory killer) is the cause: the ranks it left behind only record the broken
        connection. Otherwise the rank that recorded its failure first."""
        statuses = status.read_all(self.dir, self.nproc)
        failed = sorted((s for s in statuses.values() if s.get("phase") == "failed"),
                        key=lambda s: s.get("time", 0.0))
        silent = {r: c for r, c in _torchrun_exit_codes(self._log_text()).items()
                  if c not in (0, -signal.SIGTERM)  # SIGTERM: stopped by torchrun after
                  and statuses.get(r, {}).get("phase") != "failed"}
        if silent:
            rank = min(silent)
            then = [str(s["rank"]) for s in failed]
            return (f"rank {rank} {_describe_exit(silent[rank])}"
                    f"{where(statuses.get(rank, {}))} without reporting an error"
                    + (f" (then rank {', '.join(then)} failed too)" if then else ""))
        if failed:
            return first_failure(statuses) or ""
        missing = [r for r in range(self.nproc) if r not in statuses]
        tail = _last_line(self._log_text())
        if len(missing) == self.nproc:
            return f"torchrun exited with code {code} before any rank started" + (
                f": {tail}" if tail else "")
        return f"torchrun exited with code {code}" + (f": {tail}" if tail else "")

    def _why_hung(self, statuses: dict[int, dict[str, Any]], idle: float) -> str:
        return hang_report(statuses, self._stacks(statuses), self.nproc, idle,
                           self.spec["backend"])

    def _stacks(self, statuses: dict[int, dict[str, Any]]) -> dict[int, tuple[str, int, str]]:
        """Ask every rank for its Python stack (SIGUSR1) and read each main thread's top."""
        asked = {}
        for r, s in statuses.items():
            try:
                os.kill(int(s["pid"]), signal.SIGUSR1)
                asked[r] = s
            except (OSError, KeyError, ValueError):
                continue
        deadline = time.monotonic() + STACK_WAIT_S
        out: dict[int, tuple[str, int, str]] = {}
        while asked and time.monotonic() < deadline:
            for r, s in list(asked.items()):
                try:
                    text = status.stack_path(self.dir, r).read_text()
                except OSError:
                    continue
                frame = innermost_frame(text, s.get("thread"))
                if frame is not None:
                    out[r] = frame
                    del asked[r]
            time.sleep(0.05)
        return out

    def _log_text(self) -> str:
        try:
            self._log.flush()
            return (self.dir / "torchrun.log").read_text(errors="replace")
        except (OSError, ValueError):
            return ""

    # ------------------------------------------------------------------ clean-up

    def stop(self) -> None:
        """End torchrun and every rank of this run; return once none is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)  # torchrun stops its ranks
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        kill_leftovers(self._token)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _torchrun_exit_codes(log: str) -> dict[int, int]:
    """{rank: exit code} from torchrun's failure report."""
    return {int(m.group(1)): int(m.group(2)) for m in re.finditer(
        r"^\s*rank\s*:\s*(\d+).*?^\s*exitcode\s*:\s*(-?\d+)", log,
        flags=re.DOTALL | re.MULTILINE)}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return one_line(lines[-1]) if lines else ""


def innermost_frame(dump: str, thread: str | None) -> tuple[str, int, str] | None:
    """(short path, line, function) at the top of `thread`'s stack in a faulthandler dump (the
    first thread with Python frames when `thread` is not found)."""
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", dump)
    chosen = [b for b in blocks if thread and thread.lower() in b.split("\n", 1)[0].lower()]
    for block in chosen or blocks:
        m = re.search(r'File "([^"]+)", line (\d+) in (\S+)', block)
        if m:
            return short_path(m.group(1)), int(m.group(2)), m.group(3)
    return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def processes_with(value: str, key: str = TOKEN_ENV) -> list[int]:
    """PIDs but this one whose environment has key=value (by default this run's token; Linux
    /proc, elsewhere none)."""
    needle = f"{key}={value}".encode()
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(pid)
    return pids


def kill_leftovers(token: str, wait_s: float = 5.0) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        pids = processes_with(token)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
