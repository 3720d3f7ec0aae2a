"""Suites on the command line: every entry checked by the real command line before anything
runs (`load_suite`), then run in order in this process (`run_suite`). The file format is
`llmbench.ci.suite`'s."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmbench import __version__
from llmbench.ci.suite import Suite, SuiteEntry, line_of, parse_suite
from llmbench.core.errors import UsageError, one_line
from llmbench.core.results import load_document, write_atomic


def load_suite(path: str | Path, *, check_invocations: bool = True) -> Suite:
    """The suite at `path`, every entry parsed and resolved by the command line without
    running anything (unless `check_invocations` is False)."""
    suite, text = parse_suite(path)
    if check_invocations:
        _validate_invocations(suite, Path(path), text)
    return suite


def invoke(args: list[str]) -> int:
    """Run the llmbench command line in this process, its stdout discarded. The process
    environment is restored afterwards, in case anything a case needed leaked into it."""
    import typer

    from llmbench.cli.app import app

    command = typer.main.get_command(app)
    saved = dict(os.environ)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = command.main(args=args, prog_name="llmbench", standalone_mode=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code if isinstance(code, int) else 0


def _validate_invocations(suite: Suite, path: Path, text: str) -> None:
    """Parse and resolve every entry from the benchmarks' declarations, running nothing."""
    from llmbench.cli.click_errors import ClickException
    from llmbench.cli.commands import check

    for i, entry in enumerate(suite.bench):
        try:
            check([entry.command, *entry.args])
        except UsageError as exc:
            problem = str(exc)
        except ClickException as exc:
            problem = exc.format_message()
        else:
            continue
        raise UsageError(f"{path}:{line_of(text, i, 'args')}: bench[{i}] {entry.name!r} args: "
                         f"{one_line(problem)}")


# In --out, the file a run holds locked while it writes there (flock: the kernel lets go of
# it when the run ends, however it ends); it holds the run's process id.
LOCK = ".llmbench-run.lock"


@contextlib.contextmanager
def claimed(out: Path, *, overwrite: bool) -> Iterator[None]:
    """Hold --out for one run: make it, lock it (a second run into the same folder is bad
    input while the first one runs), and find it empty but for the lock, or with --overwrite
    remove the results a run left there (its *.json, which `compare` reads). Anything wrong
    is a UsageError before an entry runs."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    try:
        _lock(fd, out)
        _make_room(out, overwrite=overwrite)
        yield
    finally:
        os.close(fd)  # and the lock with it


def _lock(fd: int, out: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        raise UsageError(f"--out {out}: another `llmbench run` is writing there (pid "
                         f"{holder}); give another folder, or wait for it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _make_room(out: Path, *, overwrite: bool) -> None:
    present = sorted(p.name for p in out.iterdir() if p.name != LOCK)
    if not present:
        return
    if not overwrite:
        shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
        raise UsageError(f"--out {out}: not empty ({shown}); a run writes into an empty "
                         f"folder, so a baseline is never replaced by mistake: give a new "
                         f"folder, or --overwrite to replace the results there")
    for file in out.glob("*.json"):
        try:
            file.unlink()
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot remove {file.name}: "
                             f"{exc.strerror or exc}") from None


def run_suite(suite: Suite, out: str | Path, *,
              on_entry: Callable[[int, SuiteEntry, dict[str, Any]], None] | None = None,
              fail_on: str = "error", overwrite: bool = False,
              on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run every entry into --out (held by `claimed` throughout; `on_start()` once it is);
    returns (and keeps writing) the index. `fail_on` is passed to every entry whose args do
    not give --fail-on themselves."""
    out = Path(out)
    with claimed(out, overwrite=overwrite):
        if on_start:
            on_start()
        return _run_entries(suite, out, on_entry=on_entry, fail_on=fail_on)


def _run_entries(suite: Suite, out: Path, *,
                 on_entry: Callable[[int, SuiteEntry, dict[str, Any]], None] | None,
                 fail_on: str) -> dict[str, Any]:
    index: dict[str, Any] = {
        "schema_version": 1, "tool": {"name": "llmbench", "version": __version__},
        "suite": suite.name, "threshold": suite.threshold,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "benchmarks": []}
    for i, entry in enumerate(suite.bench):
        file = out / f"{entry.name}.json"
        t0 = time.perf_counter()
        record: dict[str, Any] = {"name": entry.name, "command": entry.command,
                                  "args": entry.args, "file": file.name,
                                  "thresholds": {**suite.thresholds, **entry.thresholds}}
        try:
            own = "--fail-on" in entry.args or any(a.startswith("--fail-on=")
                                                   for a in entry.args)
            code = invoke([entry.command, *entry.args, "--json", str(file), "--quiet",
                            *([] if own else ["--fail-on", fail_on])])
        except UsageError as exc:  # something that validated went wrong at run time
            code, record["reason"] = 2, one_line(str(exc))
        record["wall_s"] = round(time.perf_counter() - t0, 2)
        record["exit_code"] = code
        if file.exists():
            doc = load_document(file)
            record["cases"] = dict(Counter(c.status for c in doc.cases))
        index["benchmarks"].append(record)
        write_atomic(json.dumps(index, indent=2) + "\n", out / "index.json")
        if on_entry:
            on_entry(i, entry, record)
        if code == 130:
            index["interrupted"] = True
            write_atomic(json.dumps(index, indent=2) + "\n", out / "index.json")
            break
    return index
