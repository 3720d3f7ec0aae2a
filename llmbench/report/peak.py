"""The tables `llmbench peak` prints: the sweep, then the best per dtype and kind beside the
profile's theoretical figure."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from llmbench.benches import params_of, summary_of
from llmbench.core.results import ResultDocument
from llmbench.core.units import format_bytes
from llmbench.report.tables import (
    header,
    new_table,
    noisy_note,
    number,
    print_lines,
    reasons,
    status_cell,
    time_cells,
)

_KIND_NAMES = {"copy": "copy (STREAM)", "triad": "triad (STREAM)", "h2d": "host -> device",
               "d2h": "device -> host"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def render(doc: ResultDocument, console: Console) -> None:
    summary = summary_of(doc)
    console.print(header(doc), highlight=False)
    table = new_table()
    for col in ("kind", "dtype", "shape (M x N x K) / array", "status", "median", "IQR", "n",
                "TFLOP/s", "GB/s", "% of peak"):
        table.add_column(col, justify="left" if col in ("kind", "dtype", "status") else "right")
    for c in doc.cases:
        p = params_of(doc, c)
        median, iqr = time_cells(c.time())
        what = (f"{p.shape} ({p.label})" if p.kind == "gemm"
                else format_bytes(p.array_bytes))
        stats = c.time()
        table.add_row(p.kind, p.dtype or "-", what, status_cell(c), median, iqr,
                      str(stats.n) if stats else "-",
                      number(c.metrics.get("tflops"), "{:.4g}"),
                      number(c.metrics.get("gbps"), "{:.4g}"),
                      number(c.metrics.get("of_peak_pct"), "{:.1f}"))
    console.print(table)

    best = new_table("best of the sweep")
    for col in ("", "attainable", "at", "theoretical", "efficiency"):
        best.add_column(col, justify="left" if col in ("", "at") else "right")
    for dtype, g in summary.gemm.items():
        best.add_row(f"GEMM {dtype}", f"{g.tflops:.4g} TFLOP/s", g.shape,
                     "-" if g.theoretical_tflops is None
                     else f"{g.theoretical_tflops:.4g} TFLOP/s", _pct(g.efficiency_pct))
    for kind, b in summary.bandwidth.items():
        at = (f"{format_bytes(b.array_bytes)} arrays" if kind in ("copy", "triad")
              else f"{format_bytes(b.array_bytes)} copies")
        best.add_row(_KIND_NAMES.get(kind, kind), f"{b.gbps:.4g} GB/s", at,
                     "-" if b.theoretical_gbps is None else f"{b.theoretical_gbps:.4g} GB/s",
                     _pct(b.efficiency_pct))
    console.print()
    console.print(best)

    lines = reasons(doc.cases, key=lambda c: c.name)
    note = noisy_note(doc.cases)
    if note:
        lines.append(note)
    lines.append(f"theoretical column: profile {escape(doc.env.profile or '?')}: "
                 f"{escape(summary.source)}")
    if summary.memory_note:
        lines.append(escape(summary.memory_note))
    if summary.cache_note:
        lines.append(f"[yellow]⚠[/] {escape(summary.cache_note)}")
    over = [d for d, g in summary.gemm.items() if (g.efficiency_pct or 0) > 100]
    if over:
        lines.append(f"[yellow]⚠[/] {', '.join(over)} above 100 %: the profile's theoretical "
                     "figure is below what ran here (on a CPU: a clock above the reported "
                     "maximum, such as turbo, or a dtype the profile gives only the fp32 rate)")
    lines.append("GEMM: 2·M·N·K FLOPs a call; copy moves 2 x the array's bytes a call, triad "
                 "3 x (STREAM's counting); GB/s is 1e9 B/s")
    if summary.calibration:
        lines.append(f"calibration: {escape(summary.calibration)}")
    else:
        lines.append("--save keeps these figures as this device's calibration: other "
                     "benchmarks then show % of attainable")
    print_lines(console, lines)
