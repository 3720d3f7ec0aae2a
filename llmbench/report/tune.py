"""The table `llmbench tune attention` prints."""

from __future__ import annotations

from rich.console import Console

from llmbench.core.results import ResultDocument
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


def render(doc: ResultDocument, console: Console) -> None:
    cfg, summary = doc.config, doc.summary
    console.print(header(doc), highlight=False)
    console.print(f"triton attention · batch {cfg['batch']} · heads {cfg['heads']} · seq "
                  f"{cfg['seq']} · {cfg['dtype']} · {cfg['mode']}"
                  + (" · interpreter dry run" if cfg.get("interpret") else ""), highlight=False)
    table = new_table()
    for col in ("head dim", "block_m", "block_n", "warps", "stages", "status", "median", "IQR",
                "TFLOP/s", "% of best", "max err"):
        table.add_column(col, justify="left" if col == "status" else "right")
    order = sorted(doc.cases, key=lambda c: (c.params["head_dim"],
                                             -c.metrics.get("throughput_tflops", -1.0)))
    for c in order:
        median, iqr = time_cells(c.time())
        p = c.params
        table.add_row(str(p["head_dim"]), str(p["block_m"]), str(p["block_n"]),
                      str(p["num_warps"]), str(p["num_stages"]), status_cell(c), median, iqr,
                      number(c.metrics.get("throughput_tflops"), "{:.4g}"),
                      number(c.metrics.get("of_best_pct"), "{:.1f} %"),
                      number(c.metrics.get("max_abs_error"), "{:.1e}"))
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: c.name)
    note = noisy_note(doc.cases)
    if note:
        lines.append(note)
    lines.append(f"{summary['configs_run']} config(s) run, {summary['configs_pruned']} pruned "
                 "for shared memory; winners:")
    for d, w in summary["winners"].items():
        lines.append(f"  head dim {d}: block_m {w['block_m']} · block_n {w['block_n']} · "
                     f"num_warps {w['num_warps']} · num_stages {w['num_stages']} "
                     f"({w['throughput_tflops']:.4g} TFLOP/s)")
    print_lines(console, lines)
