"""The table `llmbench attention` prints."""

from __future__ import annotations

from rich.console import Console

from llmbench.core.results import ResultDocument
from llmbench.core.units import format_bytes
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


def render(doc: ResultDocument, console: Console) -> None:
    cfg = doc.config
    console.print(header(doc), highlight=False)
    console.print(
        f"batch {cfg['batch']} · heads {cfg['heads']} (kv {cfg['kv_heads']}) · head dim "
        f"{cfg['head_dim']} · {cfg['dtype']} · {'causal' if cfg['causal'] else 'non-causal'} · "
        f"{cfg['mode']}", highlight=False)
    table = new_table()
    for col, justify in [("impl", "left"), ("seq", "right"), ("status", "left"),
                         ("median", "right"), ("IQR", "right"), ("n", "right"),
                         ("TFLOP/s", "right"), ("% peak", "right"), ("peak mem", "right"),
                         ("predicted", "right"), ("max err", "right"), ("speed-up", "right"),
                         ("mem ÷", "right")]:
        table.add_column(col, justify=justify)
    for case in doc.cases:
        m = case.metrics
        median, iqr = time_cells(case.time())
        table.add_row(
            case.params["impl"], str(case.params["seq"]), status_cell(case), median, iqr,
            str(case.time().n) if case.time() else "-",
            number(m.get("throughput_tflops"), "{:.3g}"),
            number(m.get("peak_utilization_pct"), "{:.1f}"),
            bytes_cell(m.get("peak_memory_bytes")) if case.ok else "-",
            bytes_cell(m.get("predicted_memory_bytes")) if case.status != "unavailable" else "-",
            number(m.get("max_abs_error"), "{:.1e}"),
            number(m.get("speedup_vs_standard_x"), "{:.2f}x"),
            number(m.get("memory_reduction_vs_standard_x"), "{:.1f}x"),
        )
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: c.params["impl"])
    note = noisy_note(doc.cases)
    if note:
        lines.append(note)
    grads = [c for c in doc.cases if c.ok and "grad_max_abs_error" in c.metrics]
    if grads:
        worst = max(grads, key=lambda c: c.metrics["grad_max_abs_error"])
        lines.append(f"gradients vs fp64 at seq {worst.metrics['grad_check_seq']}: worst "
                     f"max abs error {worst.metrics['grad_max_abs_error']:.1e} "
                     f"({worst.params['impl']})")
    print_lines(console, lines)
    _render_summary(doc, console)


def _render_summary(doc: ResultDocument, console: Console) -> None:
    summary = doc.summary
    scaling = summary.get("scaling") or {}
    if scaling:
        console.print("scaling with seq: fitted exponent k in value ~ seq^k", highlight=False)
        table = new_table()
        table.add_column("impl")
        table.add_column("memory k", justify="right")
        table.add_column("time k", justify="right")
        table.add_column("seqs", justify="left")
        for impl, fit in scaling.items():
            table.add_row(impl, number(fit["memory_exponent"], "{:.2f}"),
                          number(fit["time_exponent"], "{:.2f}"),
                          ", ".join(map(str, fit["seqs"])))
        console.print(table)
    limit = summary.get("standard_limit") or {}
    if limit.get("predicted_max_seq"):
        line = (f"standard attention fits up to seq ≈ {limit['predicted_max_seq']:,} in the "
                f"{format_bytes(limit['free_memory_bytes'])} free now (predicted)")
        if limit.get("first_failed_seq"):
            line += f"; in this run it first failed at seq {limit['first_failed_seq']:,}"
        console.print(line, highlight=False)
    peak = summary.get("peak_tflops")
    if peak:
        console.print(f"% peak is against {peak:.4g} TFLOP/s ({summary.get('peak_source')})",
                      highlight=False)
