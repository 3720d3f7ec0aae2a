"""The tables `llmbench comm` and `llmbench ddp` print."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from llmbench.benches import params_of, summary_of
from llmbench.benches.ddp import ZeroRow
from llmbench.core.results import ResultDocument
from llmbench.core.units import format_bytes, format_ms
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
from llmbench.report.training import model_text


def _group_line(doc: ResultDocument, what: str) -> str:
    cfg = doc.config
    return (f"{cfg['nproc']} ranks · {cfg['backend']} on {cfg['device']} · {cfg['warmup']} "
            f"warm-up + {cfg['iters']} timed {what} per case · a sample is the slowest "
            "rank's time")


def _comm_line(doc: ResultDocument) -> str:
    cfg = doc.config
    if "windows" not in cfg:  # results written before windowed timing
        return _group_line(doc, "calls")
    return (f"{cfg['nproc']} ranks · {cfg['backend']} on {cfg['device']} · {cfg['warmup']} "
            f"warm-up + {cfg['windows']} windows × {cfg['iters']} back-to-back calls per case "
            "(nccl-tests' timing) · a sample is a window's time per call, mean over ranks")


def render_comm(doc: ResultDocument, console: Console) -> None:
    console.print(header(doc), highlight=False)
    console.print(_comm_line(doc) + f" · {doc.config['dtype']}", highlight=False)
    table = new_table()
    for col, justify in [("collective", "left"), ("size", "right"), ("time", "right"),
                         ("±IQR", "right"), ("algbw GB/s", "right"), ("busbw GB/s", "right"),
                         ("ring model", "right"), ("model/measured", "right"),
                         ("status", "left")]:
        table.add_column(col, justify=justify)
    previous = None
    for case in doc.cases:
        p, m = params_of(doc, case), case.metrics
        stats = case.time()
        median, iqr = time_cells(stats)
        predicted = m.get("predicted_time_ms")
        ratio = (f"{predicted / stats.median:.2f}x" if stats and predicted and stats.median
                 else "-")
        name = p.collective if p.collective != previous else ""
        previous = p.collective
        table.add_row(name, format_bytes(p.bytes), median, iqr,
                      number(m.get("algbw_gb_per_s"), "{:.3f}"),
                      number(m.get("busbw_gb_per_s"), "{:.3f}"),
                      format_ms(predicted) if predicted is not None else "-", ratio,
                      status_cell(case))
    console.print(table)
    model = summary_of(doc).ring_model
    if model:
        bw = model.bandwidth_gb_per_s
        console.print(
            f"ring model t = steps × α + busbw factor × size / B, fitted on "
            f"{model.fitted_on} ({model.points} cases): α = {model.latency_us:.3g} µs, "
            + (f"B = {bw:.3g} GB/s" if bw else "B = ∞ (no size-dependent term)"),
            highlight=False)
    console.print("busbw = algbw × 2(n-1)/n (all_reduce), (n-1)/n (all_gather, reduce_scatter,"
                  " all_to_all), 1 (broadcast): nccl-tests' convention", highlight=False)
    lines = reasons(doc.cases, key=lambda c: c.name)
    note = noisy_note(doc.cases, hint=" or raise --iters")
    print_lines(console, lines + ([note] if note else []))


DDP_ABSOLUTE_COLUMNS = [("peak_allocated_bytes", "allocated/rank"),
                        ("peak_reserved_bytes", "reserved/rank"),
                        ("peak_rss_bytes", "RSS/rank")]
DDP_ABSOLUTE_NOTES = {
    "peak_allocated_bytes": "allocated/rank and reserved/rank = torch.cuda.max_memory_allocated "
                            "and max_memory_reserved over the step, absolute (NCCL's own "
                            "buffers are outside torch's allocator)",
    "peak_rss_bytes": "RSS/rank = the process's resident-set high-water mark over the step, "
                      "absolute (torch's own runtime included)",
}


def render_ddp(doc: ResultDocument, console: Console) -> None:
    cfg, summary = doc.config, summary_of(doc)
    console.print(header(doc), highlight=False)
    console.print(_group_line(doc, "steps") + f" · {model_text(cfg)} "
                  f"({summary.params:,} parameters) · batch {cfg['batch']} × seq "
                  f"{cfg['seq']} per rank · AdamW", highlight=False)
    # The absolute peaks a run reported (CUDA: allocated and reserved; CPU: RSS).
    absolute = [(metric, col) for metric, col in DDP_ABSOLUTE_COLUMNS
                if any(metric in case.metrics for case in doc.cases)]
    table = new_table()
    for col, justify in [("strategy", "left"), ("step", "right"), ("±IQR", "right"),
                         ("no sync", "right"), ("grad all_reduce", "right"),
                         ("comm share", "right"), ("tokens/s", "right"),
                         ("peak/rank", "right"), *((c, "right") for _, c in absolute),
                         ("states/rank", "right"), ("ZeRO formula", "right"),
                         ("grad error", "right"), ("status", "left")]:
        table.add_column(col, justify=justify)
    for case in doc.cases:
        m = case.metrics
        median, iqr = time_cells(case.time())
        no_sync = m.get("no_sync_time_ms")
        allreduce = m.get("allreduce_time_ms")
        share = m.get("comm_share_pct")
        stage = m.get("zero_stage")
        table.add_row(
            params_of(doc, case).strategy, median, iqr,
            format_ms(no_sync["median"]) if isinstance(no_sync, dict) else
            (format_ms(no_sync.median) if no_sync is not None else "-"),
            format_ms(allreduce.median if hasattr(allreduce, "median") else
                      allreduce["median"]) if allreduce is not None else "-",
            f"{share:.1f} %" if isinstance(share, (int, float)) else "-",
            number(m.get("tokens_per_s"), "{:,.0f}"),
            bytes_cell(m.get("peak_memory_bytes")),
            *(bytes_cell(m.get(metric)) for metric, _ in absolute),
            bytes_cell(m.get("model_state_bytes")),
            (bytes_cell(m.get("predicted_state_bytes")) + f" (stage {stage})"
             if stage is not None else "-"),
            number(m.get("grad_max_abs_error"), "{:.1e}"), status_cell(case))
    console.print(table)
    console.print("comm share = (step − step without gradient sync) / step: the communication "
                  "the backward pass did not hide", highlight=False)
    console.print("peak/rank = the most a step adds above what the rank held before it "
                  "(weights, gradients, optimizer states)", highlight=False)
    for metric, _ in absolute:
        if metric in DDP_ABSOLUTE_NOTES:
            console.print(DDP_ABSOLUTE_NOTES[metric], highlight=False)
    rows = summary.zero
    if rows:
        console.print(_zero_table(rows))
    lines = reasons(doc.cases, key=lambda c: c.name)
    note = noisy_note(doc.cases, hint=" or raise --iters")
    print_lines(console, lines + ([note] if note else []))


def _zero_table(rows: list[ZeroRow]) -> Table:
    zt = new_table("\nZeRO model-state memory per rank (weights + gradients + optimizer "
                   "states; activations come on top)")
    for col, justify in [("model", "left"), ("parameters", "right"), ("bytes/param", "left"),
                         ("ranks", "right"), ("stage 0 (DDP)", "right"),
                         ("stage 1", "right"), ("stage 2", "right"),
                         ("stage 3 (FSDP)", "right")]:
        zt.add_column(col, justify=justify)
    for row in rows:
        zt.add_row(row.model, f"{row.params:,}", row.scheme, str(row.ranks),
                   *(format_bytes(row.bytes_per_rank[str(s)]) for s in range(4)))
    return zt
