"""Under any benchmark's table: what --trace found, one small table per traced case (its top
operators by self time), and where --memory-snapshot left its files."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from llmbench.core.results import CaseResult, ResultDocument
from llmbench.core.units import format_ms
from llmbench.report.tables import new_table, print_lines


def untraced(doc: ResultDocument) -> list[str]:
    """Cases that ran ok but made no call to trace (they time nothing)."""
    return [c.name for c in doc.cases if c.ok and c.trace is None]


def shown(path: str) -> str:
    """`path` relative to the working directory when it lies under it (the JSON keeps it whole)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _table(case: CaseResult, console: Console) -> None:
    trace = case.trace
    where = escape(shown(trace.path)) if trace.path else "not written"
    basis = "device" if trace.ranked_by == "self_device" else "CPU"
    console.print(f"top ops of [bold]{escape(case.name)}[/] (trace: {where})",
                  highlight=False, soft_wrap=True)
    table = new_table()
    table.add_column("op", max_width=80, no_wrap=True, overflow="ellipsis")  # all in the JSON
    table.add_column("calls", justify="right")
    table.add_column(f"self {basis} time", justify="right")
    table.add_column("% of case", justify="right")
    for op in trace.top:
        table.add_row(escape(op.name), str(op.calls), format_ms(op.self_ms), f"{op.pct:.1f}")
    console.print(table)
    if trace.wall_ms is not None:
        console.print(f"  profiled call: {format_ms(trace.wall_ms)} wall under the profiler "
                      "(not one of the timed samples)", highlight=False)


def render(doc: ResultDocument, console: Console) -> None:
    traced = [c for c in doc.cases if c.trace is not None]
    for case in traced:
        if case.trace.top:
            console.print()
            _table(case, console)
    lines = []
    for case in traced:
        t = case.trace
        if t.memory_snapshot:
            lines.append(f"memory snapshot of {escape(case.name)}: "
                         f"{escape(shown(t.memory_snapshot))} "
                         "(open it at https://pytorch.org/memory_viz)")
        for problem in (t.error, t.memory_snapshot_error):
            if problem:
                lines.append(f"[yellow]⚠[/] trace of {escape(case.name)}: {escape(problem)}")
    if lines:
        console.print()
        print_lines(console, lines)
