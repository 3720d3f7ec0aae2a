"""Where each case sits on the device's roofline (core.roofline): a table under a benchmark's
own, and the log-log chart `llmbench report` draws, for every document whose cases carry the
figures (attention, amp, checkpoint, optim, accum)."""

from __future__ import annotations

from rich.console import Console

from llmbench.core.results import CaseResult, ResultDocument
from llmbench.core.roofline import RooflineCeilings
from llmbench.report.tables import bytes_cell, new_table, number


def ceilings_of(doc: ResultDocument) -> dict[str, RooflineCeilings]:
    """The ceilings the document's figures used, by dtype ("" for a single set)."""
    raw = doc.summary.get("roofline") if isinstance(doc.summary, dict) else None
    if not isinstance(raw, dict) or not raw:
        return {}
    if "source" in raw:
        return {"": RooflineCeilings.model_validate(raw)}
    return {k: RooflineCeilings.model_validate(v) for k, v in raw.items() if isinstance(v, dict)}


def placed(doc: ResultDocument) -> list[CaseResult]:
    return [c for c in doc.cases if c.ok and "arithmetic_intensity" in c.metrics]


def render(doc: ResultDocument, console: Console) -> None:
    """The roofline table: per case its FLOPs, bytes, intensity, the ceiling that binds there,
    the attainable and achieved TFLOP/s and its share of the roofline; then the ceilings'
    source."""
    cases = placed(doc)
    if not cases:
        return
    table = new_table("roofline: where each case sits")
    for col in ("case", "FLOPs", "bytes", "FLOP/B", "bound", "roofline TFLOP/s",
                "achieved", "% roofline", "% attainable"):
        table.add_column(col, justify="left" if col in ("case", "bound") else "right")
    for case in cases:
        m = case.metrics
        flops = m.get("flops_per_call", m.get("flops_computed", m.get("flops_per_step")))
        table.add_row(case.name, number(flops, "{:.3g}"), bytes_cell(m.get("bytes_moved")),
                      number(m.get("arithmetic_intensity"), "{:.3g}"), str(m.get("bound") or "-"),
                      number(m.get("roofline_tflops"), "{:.3g}"),
                      number(m.get("throughput_tflops"), "{:.3g}"),
                      number(m.get("roofline_pct"), "{:.1f}"),
                      number(m.get("attainable_utilization_pct"), "{:.1f}"))
    console.print(table)
    used = ceilings_of(doc)
    for dtype, ceil in used.items():
        label = f"{dtype} " if dtype else ""
        peak = f"{ceil.peak_tflops:.4g} TFLOP/s" if ceil.peak_tflops else "no compute ceiling"
        bw = f"{ceil.bandwidth_gbps:.4g} GB/s" if ceil.bandwidth_gbps else "no bandwidth ceiling"
        ridge = (f", ridge at {ceil.ridge_intensity:.3g} FLOP/B" if ceil.ridge_intensity
                 else "")
        console.print(f"{label}ceilings: {peak}, {bw}{ridge} ({ceil.source})", highlight=False)
    if any(c.metrics.get("attainable_utilization_pct") is None for c in cases):
        calibrated = any("measured" in ceil.source for ceil in used.values())
        console.print("% attainable: left out where this device's calibration has no GEMM "
                      "figure for the case's dtype" if calibrated else
                      "% attainable needs this device's calibration: `llmbench peak --save`",
                      highlight=False)


def chart(doc: ResultDocument) -> list[tuple[str, bytes]]:
    """The roofline chart: log-log, the two ceilings per dtype, one labelled point per case
    (cases that count no FLOPs, such as an optimizer's step, have no place on a log axis)."""
    from llmbench.report.plots import _png, _subplots

    cases = [c for c in placed(doc) if c.metrics["arithmetic_intensity"] > 0
             and c.metrics.get("throughput_tflops")]
    ceilings = {k: c for k, c in ceilings_of(doc).items()
                if c.peak_tflops and c.bandwidth_gbps}
    if not cases or not ceilings:
        return []
    fig, (ax,) = _subplots(1)
    xs = [c.metrics["arithmetic_intensity"] for c in cases]
    lo, hi = min(xs + [r.ridge_intensity for r in ceilings.values()]) / 4, \
        max(xs + [r.ridge_intensity for r in ceilings.values()]) * 4
    for dtype, ceil in ceilings.items():
        ridge = ceil.ridge_intensity
        grid = [lo, ridge, hi]
        ax.plot(grid, [min(ceil.peak_tflops, x * ceil.bandwidth_gbps / 1e3) for x in grid],
                label=f"{dtype + ' ' if dtype else ''}roofline: {ceil.peak_tflops:.3g} "
                      f"TFLOP/s, {ceil.bandwidth_gbps:.3g} GB/s")
    for case in cases:
        x, y = case.metrics["arithmetic_intensity"], case.metrics["throughput_tflops"]
        ax.scatter([x], [y], zorder=3)
        ax.annotate(case.name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("TFLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return [(f"{doc.benchmark}: roofline (log-log; each case at its intensity)", _png(fig))]

