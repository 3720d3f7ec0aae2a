"""The table and plot of a benchmark that declares no renderer or plot function of its own:
its cases with the params that vary between them and its metrics, each headed with its
declared unit; a PlotSpec drawn as lines."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from llmbench.core.declare import Metric, PlotSpec
from llmbench.core.results import CaseResult, ResultDocument
from llmbench.report.tables import (
    bytes_cell,
    header,
    new_table,
    noisy_note,
    number,
    print_lines,
    reasons,
    status_cell,
    time_cells,
)


def _declared(doc: ResultDocument) -> Any:
    from llmbench import benches

    return benches.declaration(doc.benchmark)


def _varying_params(cases: list[CaseResult]) -> list[str]:
    keys = list(dict.fromkeys(k for c in cases for k in c.params))
    return [k for k in keys
            if len({repr(c.params.get(k)) for c in cases}) > 1 or len(cases) == 1]


def _metric_names(doc: ResultDocument) -> list[str]:
    names = dict.fromkeys(k for c in doc.cases for k, v in c.metrics.items()
                          if not isinstance(v, (list, dict)) and not k.startswith("gpu_"))
    return list(names)


def _cell(value: Any, metric: Metric | None) -> str:
    if metric is not None and metric.unit == "B":
        return bytes_cell(value)
    if hasattr(value, "median"):
        return time_cells(value)[0]
    return number(value)


def render(doc: ResultDocument, console: Console) -> None:
    bench = _declared(doc)
    console.print(header(doc), highlight=False)
    params = _varying_params(doc.cases)
    metrics = _metric_names(doc)
    table = new_table()
    table.add_column("case")
    for key in params:
        table.add_column(key)
    table.add_column("status")
    declared = {m: bench.metric(m) if bench else None for m in metrics}
    for m in metrics:
        unit = declared[m].unit if declared[m] else ""
        table.add_column(f"{m} ({unit})" if unit and unit != "1" else m, justify="right")
    for case in doc.cases:
        table.add_row(case.name, *(number(case.params.get(k)) for k in params),
                      status_cell(case),
                      *(_cell(case.metrics.get(m), declared[m]) if case.ok else "-"
                        for m in metrics))
    console.print(table)
    note = noisy_note(doc.cases)
    print_lines(console, reasons(doc.cases, key=lambda c: c.name) + ([note] if note else []))


def _value(case: CaseResult, name: str) -> Any:
    if name in case.params:
        return case.params[name]
    value = case.metrics.get(name)
    return getattr(value, "median", value)


def plot(doc: ResultDocument, spec: PlotSpec) -> list[tuple[str, bytes]]:
    """`spec.y` against `spec.x`, one line per value of `spec.by`, over the ok cases."""
    from llmbench.report.plots import _png, _subplots

    cases = [c for c in doc.cases if c.ok]
    if not cases:
        return []
    fig, axes = _subplots(len(spec.y))
    groups = list(dict.fromkeys(_value(c, spec.by) for c in cases)) if spec.by else [None]
    for ax, y in zip(axes, spec.y, strict=True):
        for group in groups:
            points = sorted((_value(c, spec.x), _value(c, y)) for c in cases
                            if spec.by is None or _value(c, spec.by) == group)
            points = [(x, v) for x, v in points if isinstance(v, (int, float))]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o",
                        label=str(group) if group is not None else None)
        ax.set_xlabel(spec.x)
        ax.set_ylabel(y)
        if spec.logx:
            ax.set_xscale("log", base=2)
        if spec.logy:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if spec.by:
            ax.legend(fontsize=8)
    return [(spec.title or f"{doc.benchmark}: {', '.join(spec.y)} by {spec.x}", _png(fig))]
