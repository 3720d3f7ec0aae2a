"""The table `llmbench attention` prints."""

from __future__ import annotations

from rich.console import Console

from llmbench.benches import params_of, summary_of
from llmbench.core.results import ResultDocument
from llmbench.core.units import format_bytes, format_ms
from llmbench.report import roofline
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
    if cfg.get("varlen"):
        _render_varlen(doc, console)
        return
    console.print(header(doc), highlight=False)
    mask = "causal" if cfg["causal"] else "non-causal"
    if cfg["causal"] and cfg.get("kv_seq"):
        mask += " (bottom-right aligned)"
    console.print(
        f"batch {cfg['batch']} · heads {cfg['heads']} (kv {cfg['kv_heads']}) · head dim "
        f"{cfg['head_dim']} · {cfg['dtype']} · {mask} · {cfg['mode']}", highlight=False)
    table = new_table()
    windowed = cfg.get("window") is not None
    kv_seq = cfg.get("kv_seq")  # keys and values of another length than the queries
    # % of the measured GEMM peak, beside % of the theoretical one, once `peak --save` ran
    attainable = any("attainable_utilization_pct" in c.metrics for c in doc.cases)
    extra = _extra_columns(doc)
    for col, justify in [("impl", "left"), ("seq", "right")] + (
            [("kv seq", "right")] if kv_seq else []) + (
            [("mask", "left")] if windowed else []) + [("status", "left"),
                         ("median", "right"), ("IQR", "right"), ("n", "right"),
                         ("TFLOP/s", "right"), ("% peak", "right")] + (
            [("% att.", "right")] if attainable else []) + [("peak mem", "right"),
                         ("predicted", "right"), ("max err", "right"), ("speed-up", "right"),
                         ("mem ÷", "right")] + [(col, "right") for col in extra.values()]:
        table.add_column(col, justify=justify)
    for case in doc.cases:
        m, p = case.metrics, params_of(doc, case)
        median, iqr = time_cells(case.time())
        mask = ["causal" if p.window is None else f"window {p.window}"] if windowed else []
        kv = [str(p.seq if p.kv_seq is None else p.kv_seq)] if kv_seq else []
        table.add_row(
            p.impl, str(p.seq), *kv, *mask, status_cell(case), median,
            iqr,
            str(case.time().n) if case.time() else "-",
            number(m.get("throughput_tflops"), "{:.3g}"),
            number(m.get("peak_utilization_pct"), "{:.1f}"),
            *([number(m.get("attainable_utilization_pct"), "{:.1f}")] if attainable else []),
            bytes_cell(m.get("peak_memory_bytes")) if case.ok else "-",
            bytes_cell(m.get("predicted_memory_bytes")) if case.status != "unavailable" else "-",
            number(m.get("max_abs_error"), "{:.1e}"),
            number(m.get("speedup_vs_standard_x"), "{:.2f}x"),
            number(m.get("memory_reduction_vs_standard_x"), "{:.1f}x"),
            *_extra_cells(m, extra),
        )
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: params_of(doc, c).impl)
    note = noisy_note(doc.cases)
    if note:
        lines.append(note)
    grads = [c for c in doc.cases if c.ok and "grad_max_abs_error" in c.metrics]
    if grads:
        worst = max(grads, key=lambda c: c.metrics["grad_max_abs_error"])
        at = f"seq {worst.metrics['grad_check_seq']}"
        if "grad_check_kv_seq" in worst.metrics:
            at += f", kv seq {worst.metrics['grad_check_kv_seq']}"
        lines.append(f"gradients vs fp64 at {at}: worst max abs error "
                     f"{worst.metrics['grad_max_abs_error']:.1e} ({params_of(doc, worst).impl})")
    tiles = {c.metrics["launched_tile"] for c in doc.cases if c.ok and "launched_tile" in c.metrics}
    lines += [f"triton launched with {t}" for t in sorted(tiles)]
    print_lines(console, lines)
    _render_summary(doc, console)
    roofline.render(doc, console)


# Times outside the timed call, as columns when a case has them: a compiled implementation's
# first call (its compilation) and the creation of the mask an implementation takes.
EXTRA_TIMES = {"compile_ms": "compile", "mask_ms": "mask build"}


def _extra_columns(doc: ResultDocument) -> dict[str, str]:
    return {key: col for key, col in EXTRA_TIMES.items()
            if any(key in c.metrics for c in doc.cases)}


def _extra_cells(metrics: dict, extra: dict[str, str]) -> list[str]:
    return [format_ms(metrics[key]) if isinstance(metrics.get(key), (int, float)) else "-"
            for key in extra]


def _render_varlen(doc: ResultDocument, console: Console) -> None:
    cfg, summary = doc.config, summary_of(doc)
    extra = _extra_columns(doc)
    console.print(header(doc), highlight=False)
    lengths = summary.lengths or []
    console.print(f"{len(lengths)} sequences, {summary.total_tokens:,} tokens (longest "
                  f"{summary.longest:,}) · heads {cfg['heads']} (kv {cfg['kv_heads']}) · "
                  f"head dim {cfg['head_dim']} · {cfg['dtype']} · "
                  f"{'causal' if cfg['causal'] else 'non-causal'} · {cfg['mode']}",
                  highlight=False)
    table = new_table()
    for col, justify in [("case", "left"), ("status", "left"), ("median", "right"),
                         ("IQR", "right"), ("n", "right"), ("eff. TFLOP/s", "right"),
                         ("peak mem", "right"), ("FLOPs computed", "right"),
                         ("wasted", "right"), ("max err", "right")] + [
                             (col, "right") for col in extra.values()]:
        table.add_column(col, justify=justify)
    for case in doc.cases:
        m = case.metrics
        median, iqr = time_cells(case.time())
        table.add_row(case.name, status_cell(case), median, iqr,
                      str(case.time().n) if case.time() else "-",
                      number(m.get("throughput_tflops"), "{:.3g}"),
                      bytes_cell(m.get("peak_memory_bytes")) if case.ok else "-",
                      number(m.get("flops_computed"), "{:.3g}"),
                      number(m.get("wasted_flops_pct"), "{:.1f} %"),
                      number(m.get("max_abs_error"), "{:.1e}"), *_extra_cells(m, extra))
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: params_of(doc, c).impl)
    lines.append(f"padding to the longest computes {summary.padded_flops:.3g} FLOPs for "
                 f"{summary.useful_flops:.3g} needed: {summary.padded_flops_wasted_pct:.1f}"
                 " % wasted; eff. TFLOP/s counts the needed FLOPs only")
    print_lines(console, lines)
    roofline.render(doc, console)


def _render_summary(doc: ResultDocument, console: Console) -> None:
    summary = summary_of(doc)
    window = summary.window or {}
    if window:
        table = new_table()
        for col in ("impl", "window", "expected FLOP ratio", "time ratio", "memory ratio"):
            table.add_column(col, justify="left" if col == "impl" else "right")
        for key, w in window.items():
            table.add_row(key, str(w.window), f"{w.expected_flop_ratio:.3f}",
                          f"{w.time_ratio:.3f}", f"{w.memory_ratio:.3f}")
        console.print("sliding window vs full causal at the same seq:", highlight=False)
        console.print(table)
        console.print("expected FLOP ratio: the window's (query, key) pairs over full causal's, "
                      "each row's diagonal key counted half (causal = half the full matrix)",
                      highlight=False)
    scaling = summary.scaling
    if scaling:
        console.print("scaling with seq: fitted exponent k in value ~ seq^k", highlight=False)
        table = new_table()
        table.add_column("impl")
        table.add_column("memory k", justify="right")
        table.add_column("time k", justify="right")
        table.add_column("seqs", justify="left")
        for impl, fit in scaling.items():
            table.add_row(impl, number(fit.memory_exponent, "{:.2f}"),
                          number(fit.time_exponent, "{:.2f}"),
                          ", ".join(map(str, fit.seqs)))
        console.print(table)
    limit = summary.standard_limit
    if limit is not None and limit.predicted_max_seq:
        keys = doc.config.get("kv_seq")
        line = (f"standard attention fits up to seq ≈ {limit.predicted_max_seq:,}"
                f"{f' against {keys:,} keys' if keys else ''} in the "
                f"{format_bytes(limit.free_memory_bytes)} free now (predicted)")
        if limit.first_failed_seq:
            line += f"; in this run it first failed at seq {limit.first_failed_seq:,}"
        console.print(line, highlight=False)
    peak = summary.peak_tflops
    if peak:
        console.print(f"% peak is against {peak:.4g} TFLOP/s ({summary.peak_source})",
                      highlight=False)
    ceil = summary.roofline
    if ceil is not None and any("attainable_utilization_pct" in c.metrics for c in doc.cases):
        console.print(f"% att. is against the {ceil.peak_tflops:.4g} TFLOP/s this device's "
                      f"GEMM reached ({ceil.source})", highlight=False)
