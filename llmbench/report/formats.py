"""The tables of `llmbench precision` and `llmbench schedule`."""

from __future__ import annotations

from rich.console import Console

from llmbench.benches import summary_of
from llmbench.core.results import ResultDocument
from llmbench.report.tables import header, new_table, print_lines, reasons

BLOCKS = " ▁▂▃▄▅▆▇█"


def _g(value: object) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_precision(doc: ResultDocument, console: Console) -> None:
    console.print(header(doc), highlight=False)
    table = new_table()
    for col in ("format", "bits", "s/e/m", "max", "smallest normal", "smallest subnormal",
                "eps", "decimal digits"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for c in doc.cases:
        if not c.ok:
            continue
        m = c.metrics
        table.add_row(c.name, str(m["bits"]),
                      f"{m['sign_bits']}/{m['exponent_bits']}/{m['mantissa_bits']}",
                      _g(m["max"]), _g(m["smallest_normal"]), _g(m["smallest_subnormal"]),
                      _g(m["eps"]), f"{m['decimal_digits']:.2f}")
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: c.name)
    lines += [f"{c.name}: {c.metrics['note']}" for c in doc.cases if c.ok and "note" in c.metrics]
    lines.append("decimal digits = (mantissa bits + 1) · log10(2); a gradient below the smallest "
                 "subnormal becomes 0, one below the smallest normal loses precision")
    print_lines(console, lines)


def sparkline(values: list[float], width: int = 60) -> str:
    """One character per sample (at most `width`), from the lowest value to the highest."""
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    step = max(1, len(values) / width)
    picks = [values[min(len(values) - 1, int(i * step))] for i in range(min(width, len(values)))]
    return "".join(BLOCKS[round((min(max(v, lo), hi) - lo) / span * (len(BLOCKS) - 1))]
                   if v == v else "?" for v in picks)


def chart(values: list[float], *, width: int = 60, height: int = 8) -> list[str]:
    """A block chart, `height` rows of `width` columns, tallest value at the top row."""
    top = max(values) or 1.0
    step = len(values) / width
    cols = [values[min(len(values) - 1, int(i * step))] / top * height for i in range(width)]
    rows = []
    for r in range(height, 0, -1):
        line = ""
        for h in cols:
            fill = h - (r - 1)
            line += "█" if fill >= 1 else BLOCKS[round(max(0.0, fill) * 8)] if fill > 0 else " "
        rows.append(line)
    return rows


def render_schedule(doc: ResultDocument, console: Console) -> None:
    cfg = doc.config
    console.print(f"[bold]schedule[/]: lr {cfg['lr']:g} · {cfg['total']:,} steps · warmup "
                  f"{cfg['warmup']:,} (linear from 0) · cosine floor {cfg['min_lr_ratio']:g} × "
                  f"lr, {cfg['num_cycles']:g} cycles", highlight=False)
    steps = summary_of(doc).steps_shown
    ok = [c for c in doc.cases if c.ok]
    table = new_table()
    table.add_column("step", justify="right")
    for c in ok:
        table.add_column(f"{c.name} lr", justify="right")
    for s in steps:
        table.add_row(f"{s:,}", *(f"{c.metrics['lr_curve'][s]:.4g}" for c in ok))
    console.print(table)
    for c in ok:
        curve = c.metrics["lr_curve"]
        console.print(f"\n{c.name}  max {max(curve):.4g}  final {curve[-1]:.4g}",
                      highlight=False)
        for line in chart(curve):
            console.print(f"  │{line}", highlight=False)
        console.print(f"  └{'─' * 60}  step 0 → {len(curve) - 1:,}", highlight=False)
