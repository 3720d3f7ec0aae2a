"""llmbench from Python: `llmbench.run(...)` runs exactly what the command runs and returns
the results document; `llmbench.load(path)` reads one.

    import llmbench
    doc = llmbench.run("attention", seq=[512, 1024], impl=["standard", "sdpa-flash"])
    doc.cases[0].metrics["time_ms"].median
    llmbench.rows(doc)          # one dict per case: name, status, params, metric medians
    llmbench.to_dataframe(doc)  # the same as a pandas DataFrame (pip install 'llmbench[pandas]')

Keyword arguments are the command's options under their Python names (`kv_heads=2` is
`--kv-heads 2`; lists become comma lists; True/False a boolean flag's two forms; the shared
run options too: `trace="traces/"` is `--trace traces/`, whose findings land in each case's
`trace`). The command
line itself parses them, so every check, default and message is the command's: bad input
raises `llmbench.UsageError` with the line the command would print. Cases run as the command
runs them (each in its own process unless `isolate=False`); a case that fails is recorded in
the document with its status and reason, nothing is raised (the command's `--fail-on never`).
Nothing is printed. This module sits above the command line and imports it only when called.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

from llmbench.core.errors import UsageError
from llmbench.core.results import CaseResult, ResultDocument, load_document

__all__ = ["UsageError", "load", "rows", "run", "to_dataframe"]


def _command(words: list[str]) -> Any:
    import typer

    from llmbench.cli.app import app

    command = typer.main.get_command(app)
    for word in words:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            raise UsageError(f"no llmbench command {' '.join(words)!r}")
        command = sub
    return command


def _option_args(command: Any, name: str, value: Any) -> list[str]:
    params = {p.name: p for p in command.params if getattr(p, "opts", None)}
    param = params.get(name)
    if param is None or name in ("json_path", "fmt", "quiet", "fail_on"):
        known = ", ".join(sorted(n for n in params
                                 if n not in ("json_path", "fmt", "quiet", "fail_on")))
        raise UsageError(f"{command.name}: no option {name!r} (options: {known})")
    flag = max(param.opts, key=len)
    if isinstance(value, bool) and getattr(param, "is_flag", False):
        if value:
            return [flag]
        negative = max(param.secondary_opts, key=len) if param.secondary_opts else None
        return [negative] if negative else []
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [flag, ",".join(str(v) for v in value)]
    return [flag, str(value)]


def run(command: str, /, **options: Any) -> ResultDocument:
    """Run `llmbench COMMAND` (e.g. "attention", "align dpo", "tune attention") with these
    options and return its results document."""
    from llmbench.cli.click_errors import ClickException
    from llmbench.cli.suites import invoke

    words = command.split()
    cmd = _command(words)
    args = [*words]
    for name, value in options.items():
        args += _option_args(cmd, name, value)
    with tempfile.TemporaryDirectory(prefix="llmbench-run-") as tmp:
        path = Path(tmp) / "results.json"
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                code = invoke([*args, "--json", str(path), "--quiet", "--fail-on", "never"])
        except ClickException as exc:
            raise UsageError(exc.format_message()) from None
        if code == 130:
            raise KeyboardInterrupt
        if not path.exists():
            raise UsageError(f"llmbench {command} wrote no results (exit code {code})")
        return load_document(path)


def load(path: str | Path) -> ResultDocument:
    """A results document written by `--json` (or by `llmbench.run`)."""
    return load_document(path)


def _row(case: CaseResult) -> dict[str, Any]:
    row: dict[str, Any] = {"case": case.name, "status": case.status, "reason": case.reason,
                           **{f"param.{k}": v for k, v in case.params.items()}}
    for key, value in case.metrics.items():
        if isinstance(value, list):
            continue  # per-rank lists and raw samples: in the document
        row[key] = getattr(value, "median", value)  # a time metric: its median
    return row


def rows(doc: ResultDocument) -> list[dict[str, Any]]:
    """One dict per case: name, status, reason, its params (`param.*`) and its scalar metrics
    (a time metric as its median)."""
    return [_row(c) for c in doc.cases]


def to_dataframe(doc: ResultDocument) -> Any:
    """`rows(doc)` as a pandas DataFrame, one row per case."""
    try:
        import pandas
    except ImportError:
        raise UsageError("to_dataframe needs pandas: pip install 'llmbench[pandas]'") from None
    return pandas.DataFrame(rows(doc))
