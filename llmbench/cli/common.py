"""What every benchmark command shares: output flags, config errors, progress, Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from llmbench.core.declare import flag_of
from llmbench.core.errors import UsageError, first_problem

OutputFormat = Literal["table", "json"]

JsonOption = Annotated[Path | None, typer.Option(
    "--json", help="Also write the results document to this file (atomically).",
    rich_help_panel="Output", dir_okay=False)]
FormatOption = Annotated[OutputFormat, typer.Option(
    "--format", help="table: rich table on stdout; json: the results document on stdout.",
    rich_help_panel="Output")]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Nothing on stderr but errors: no progress, no notes.",
    rich_help_panel="Output")]
ProfileOption = Annotated[str | None, typer.Option(
    "--profile", help="Profile name (cpu, sm80, ...) or path to a profile TOML; "
    "default: picked for the detected device.", rich_help_panel="Run")]
TimeoutOption = Annotated[float, typer.Option(
    "--timeout", help="Seconds a case may go without finishing (in a process group: without "
    "any rank reaching its next phase) before it is stopped and recorded as an error; a hung "
    "group's report names the rank and where it waits.", rich_help_panel="Run", min=0.1)]
IsolateOption = Annotated[bool, typer.Option(
    "--isolate/--no-isolate", help="Run each case in its own process (crash, OOM and "
    "time-out safe). --no-isolate is faster to start, for debugging.", rich_help_panel="Run")]
TraceOption = Annotated[Path | None, typer.Option(
    "--trace", metavar="DIR", help="After each case's timing, run its timed call once more "
    "under torch.profiler and write a Chrome/Perfetto trace per case here (made if need be); "
    "its top ops by self time go in the JSON and under the table. The timed figures are "
    "untouched.", rich_help_panel="Run")]
MemorySnapshotOption = Annotated[Path | None, typer.Option(
    "--memory-snapshot", metavar="DIR", help="CUDA: after each case's timing, record the "
    "caching allocator's history over one more call and write <case>.pickle here (for "
    "https://pytorch.org/memory_viz).", rich_help_panel="Run")]
FailOn = Literal["error", "oom", "never"]
FAILING: dict[str, tuple[str, ...]] = {"error": ("error",), "oom": ("error", "oom"), "never": ()}
FailOnOption = Annotated[FailOn, typer.Option(
    "--fail-on", help="Exit 1 when a case ends in: error (an exception, a crash, a time-out); "
    "oom (out of memory too); never (record without failing). Bad input is always 2, Ctrl-C "
    "130.", rich_help_panel="Output")]

def stdout() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def stderr() -> Console:
    """Notes and errors as written: a '[' in a path or a hint is not markup."""
    return Console(stderr=True, highlight=False, markup=False)


def build_config(config_type: type[BaseModel], /, **values: Any) -> BaseModel:
    """Validate a config; the first problem becomes a one-line UsageError naming the flag."""
    try:
        return config_type(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        loc, msg = first_problem(exc)
        field = next((str(p) for p in loc if isinstance(p, str)), "")
        flag = flag_of(config_type, field) if field else "config"
        raise UsageError(f"{flag}: {msg}") from None


class ConsoleProgress:
    """A rich progress bar on a terminal; one plain line per finished case otherwise."""

    def __init__(self, console: Console, quiet: bool = False, label: str = "") -> None:
        from llmbench.core.progress import Heartbeat

        self.console = console
        self.quiet = quiet
        self.total = 0
        self.done = 0
        self._progress = None
        self._task = None
        self._beat = None if quiet else Heartbeat(self._plain, prefix=label)

    def _plain(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def begin(self, total: int) -> None:
        self.total = total
        if self.quiet or not self.console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=self.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task("starting", total=total)

    def case_started(self, plan: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=plan.name)
        elif self._beat is not None:  # plain lines: say every 15 s that a long case runs
            self._beat.start(plan.name)

    def case_progress(self, plan: Any, fields: dict[str, Any]) -> None:
        """Live figures from inside the case: `step`/`total` and any of `loss` and the like."""
        if self._progress is None:
            return
        parts = [plan.name]
        if "step" in fields:
            parts.append(f"step {fields['step']}" + (f"/{fields['total']}" if "total" in fields
                                                     else ""))
        if "stage" in fields:
            parts.append(str(fields["stage"]))
        for key, value in fields.items():
            if key not in ("step", "total", "stage") and isinstance(value, (int, float)):
                parts.append(f"{key} {value:.4g}")
        self._progress.update(self._task, description=" · ".join(parts))

    def case_finished(self, result: Any) -> None:
        from llmbench.core.progress import finished_line

        self.done += 1
        if self._beat is not None:
            self._beat.stop()
        if self._progress is not None:
            self._progress.advance(self._task)
            return
        if self.quiet:
            return
        self._plain(finished_line(self.done, self.total, result))

    def end(self) -> None:
        if self._beat is not None:
            self._beat.stop()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@dataclass
class _Measured:
    document: Any
    interrupted: bool = False
    failure: str | None = None  # a process group that failed as a whole
    log_path: Path | None = None


def _measure(bench: Any, config: BaseModel, options: Any, progress: ConsoleProgress,
             jobs: int | None) -> _Measured | None:
    """Run the cases: on a process group's ranks (None on a rank that does not report), or
    here, one isolated process per case (`jobs` of them at once for cases that time
    nothing); Ctrl-C keeps the finished cases."""
    from llmbench.core.runner import Interrupted, run_benchmark

    if bench.distributed:
        from llmbench.dist.run import run_distributed

        result = run_distributed(bench, config, options=options, progress=progress)
        if not result.is_main:  # rank 0 writes and reports; a failed group exits 1 everywhere
            if result.failure is not None:
                raise typer.Exit(1)
            return None
        return _Measured(result.document, result.interrupted, result.failure, result.log_path)
    executor = None
    if jobs is not None:
        from llmbench.core.parallel import parallel_executor

        executor = parallel_executor(jobs, options.timeout_s)
    try:
        return _Measured(run_benchmark(bench, config, options=options, progress=progress,
                                       executor=executor))
    except Interrupted as exc:
        return _Measured(exc.document, interrupted=True)


def run_and_emit(bench: Any, config: BaseModel, *, json_path: Path | None,
                 fmt: OutputFormat, quiet: bool, profile: str | None, timeout: float,
                 isolate: bool, jobs: int | None = None,
                 after: Callable[[Any], None] | None = None, fail_on: FailOn = "error",
                 trace: Path | None = None, memory_snapshot: Path | None = None) -> None:
    """Run a benchmark, write/print its results; on Ctrl-C keep the finished cases, exit 130;
    when a case ended in what --fail-on names, exit 1 after writing everything.
    `after(document)` runs once the results are out, before that exit. A process group
    (`bench.distributed`) that failed as a whole exits 1 after the finished cases are written;
    under a launch of the user's own only rank 0 writes and prints."""
    from llmbench import report
    from llmbench.core.results import check_writable
    from llmbench.core.runner import RunOptions

    if json_path is not None:
        check_writable(json_path, "--json")
    err = stderr()
    options = RunOptions(profile=profile, timeout_s=timeout, isolate=isolate,
                         trace_dir=str(trace) if trace is not None else None,
                         memory_snapshot_dir=(str(memory_snapshot) if memory_snapshot is not None
                                              else None))
    measured = _measure(bench, config, options,
                        ConsoleProgress(err, quiet=quiet, label=bench.name), jobs)
    if measured is None:
        return
    doc = measured.document
    unsaved = _write_results(doc, json_path)
    if fmt == "json":
        sys.stdout.write(doc.to_json() + "\n")
    else:
        report.render(doc, stdout())
    if unsaved is not None:
        _report_unsaved(doc, unsaved, on_stdout=fmt == "json")
    elif json_path is not None and not quiet:
        err.print(f"results written to {json_path}", highlight=False)
    if (trace is not None or memory_snapshot is not None) and not quiet:
        _untraced_note(doc, err, "--trace" if trace is not None else "--memory-snapshot")
    if measured.interrupted:
        err.print(f"interrupted: {len(doc.cases)} finished case(s) kept", highlight=False)
        raise typer.Exit(130)
    if measured.failure is not None:
        sys.stderr.write(f"llmbench: error: {measured.failure}\n")
        if measured.log_path is not None:
            sys.stderr.write(f"llmbench: torchrun's output is kept in {measured.log_path}\n")
        raise typer.Exit(0 if fail_on == "never" else 1)
    if after is not None:
        after(doc)
    _exit_for_cases(doc, fail_on)


@dataclass
class _Unsaved:
    problem: str  # "cannot write PATH: REASON"
    kept: Path | None  # where the document went instead


def _write_results(doc: Any, json_path: Path | None) -> _Unsaved | None:
    """Write --json; when the operating system refuses (a full disk, a folder gone), keep the
    document elsewhere (core.results.keep_unsaved) and say so once the table is out."""
    from llmbench.core.errors import OutputError
    from llmbench.core.results import keep_unsaved, write_document

    if json_path is None:
        return None
    try:
        write_document(doc, json_path)
    except OutputError as exc:
        return _Unsaved(str(exc), keep_unsaved(doc.to_json() + "\n", json_path.name))
    return None


def _report_unsaved(doc: Any, unsaved: _Unsaved, *, on_stdout: bool) -> None:
    """The write failure on one line; where the results are (kept in a file, or printed on
    stdout when no file could be written); then exit 1: a run whose results were not written
    where asked has failed, whatever its cases did."""
    if unsaved.kept is not None:
        where = f"the results are kept in {unsaved.kept}"
    elif on_stdout:
        where = "the results are on stdout only"
    else:
        sys.stdout.write(doc.to_json() + "\n")
        where = "no file could be written: the results document is printed on stdout above"
    sys.stderr.write(f"llmbench: error: {unsaved.problem}; {where}\n")
    raise typer.Exit(1)


def _untraced_note(doc: Any, err: Console, flag: str) -> None:
    from llmbench.report.traces import untraced

    names = untraced(doc)
    if names:
        err.print(f"{flag}: no call to trace in {len(names)} case(s), which time nothing: "
                  f"{', '.join(names)}", highlight=False, markup=False, soft_wrap=True)


def _exit_for_cases(doc: Any, fail_on: FailOn) -> None:
    failed = [c for c in doc.cases if c.status in FAILING[fail_on]]
    if failed:
        ended = " or ".join(FAILING[fail_on])
        sys.stderr.write(f"llmbench: error: {len(failed)} of {len(doc.cases)} case(s) ended in "
                         f"{ended} (first: {failed[0].name}: {failed[0].status}: "
                         f"{failed[0].reason}); --fail-on never records without failing\n")
        raise typer.Exit(1)


DbOption = Annotated[Path | None, typer.Option(
    "--db", envvar="LLMBENCH_DB", show_envvar=False, dir_okay=False,
    help="The results store, an SQLite file. [default: $LLMBENCH_DB, else history.sqlite in "
    "llmbench's cache folder ($LLMBENCH_CACHE, ~/.cache/llmbench)]")]
