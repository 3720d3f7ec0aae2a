"""The table `llmbench tune attention` prints."""

from __future__ import annotations

from rich.console import Console

from llmbench.benches import params_of, summary_of
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
    summary = summary_of(doc)
    if summary.compile_only:
        render_compiled(doc, console)
        return
    cfg = doc.config
    console.print(header(doc), highlight=False)
    console.print(f"triton attention · batch {cfg['batch']} · heads {cfg['heads']} · seq "
                  f"{cfg['seq']} · {cfg['dtype']} · {cfg['mode']}"
                  + (" · interpreter dry run" if cfg.get("interpret") else ""), highlight=False)
    table = new_table()
    for col in ("head dim", "block_m", "block_n", "warps", "stages", "status", "median", "IQR",
                "TFLOP/s", "% of best", "max err"):
        table.add_column(col, justify="left" if col == "status" else "right")
    order = sorted(doc.cases, key=lambda c: (params_of(doc, c).head_dim,
                                             -c.metrics.get("throughput_tflops", -1.0)))
    for c in order:
        median, iqr = time_cells(c.time())
        p = params_of(doc, c)
        table.add_row(str(p.head_dim), str(p.block_m), str(p.block_n),
                      str(p.num_warps), str(p.num_stages), status_cell(c), median, iqr,
                      number(c.metrics.get("throughput_tflops"), "{:.4g}"),
                      number(c.metrics.get("of_best_pct"), "{:.1f} %"),
                      number(c.metrics.get("max_abs_error"), "{:.1e}"))
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: c.name)
    note = noisy_note(doc.cases)
    if note:
        lines.append(note)
    lines.append(f"{summary.configs_run} config(s) run, {summary.configs_pruned} pruned "
                 "(compiled for this GPU, they would not launch); winners:")
    for d, w in summary.winners.items():
        lines.append(f"  head dim {d}: block_m {w.block_m} · block_n {w.block_n} · "
                     f"num_warps {w.num_warps} · num_stages {w.num_stages} "
                     f"({w.throughput_tflops:.4g} TFLOP/s)")
    print_lines(console, lines)


def _kib(value: object) -> str:
    return f"{value / 1024:,.1f} KiB" if isinstance(value, int) else "-"


def render_compiled(doc: ResultDocument, console: Console) -> None:
    """One row per (target, head dim, kernel, tile): what the compiled kernel needs."""
    cfg, summary = doc.config, summary_of(doc)
    console.print(header(doc), highlight=False)
    console.print(f"triton attention kernels compiled for each target, no GPU used · "
                  f"{cfg['mode']} · {'causal' if cfg['causal'] else 'non-causal'} · "
                  f"{summary.tiles} tiles", highlight=False)
    table = new_table()
    for col in ("target", "head dim", "kernel", "dtype", "block_m", "block_n", "warps",
                "stages", "shared mem", "limit", "% of limit", "regs", "stack", "status"):
        table.add_column(col, justify="left" if col in ("target", "kernel", "status")
                         else "right")
    for c in doc.cases:
        p, m = params_of(doc, c), c.metrics
        shared, limit = m.get("shared_memory_bytes"), m.get("shared_memory_limit_bytes")
        share = (f"{100 * shared / limit:.0f} %" if isinstance(shared, int)
                 and isinstance(limit, int) and limit else "-")
        stack = m.get("stack_frame_bytes")
        table.add_row(p.arch, str(p.head_dim), p.kernel, p.dtype,
                      str(p.block_m), str(p.block_n), str(p.num_warps),
                      str(p.num_stages), _kib(shared), _kib(limit), share,
                      number(m.get("registers"), "{:d}"),
                      "-" if stack is None else ("0" if stack == 0
                                                 else f"[yellow]{stack} B[/]"),
                      status_cell(c))
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: c.name)
    for arch, t in summary.targets.items():
        lines.append(f"{arch} ({t.profile}, {t.dtype}): {t.fit} of {t.cases} "
                     f"fit; most shared memory {_kib(t.max_shared_memory_bytes)} of "
                     f"{_kib(t.shared_memory_limit_bytes)} per block")
    if any(isinstance(c.metrics.get("stack_frame_bytes"), int)
           and c.metrics["stack_frame_bytes"] > 0 for c in doc.cases):
        lines.append("[yellow]stack[/]: bytes of local-memory stack frame per thread, where "
                     "ptxas put registers it spilled (slower, still correct)")
    print_lines(console, lines)
