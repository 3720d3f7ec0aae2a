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
from collections.abc import Callable
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


def run_suite(suite: Suite, out: str | Path, *,
              on_entry: Callable[[int, SuiteEntry, dict[str, Any]], None] | None = None,
              fail_on: str = "error") -> dict[str, Any]:
    """Run every entry; returns (and keeps writing) the index. `fail_on` is passed to every
    entry whose args do not give --fail-on themselves."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
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
