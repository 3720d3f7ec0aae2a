"""The results store in tables and charts: `llmbench history show` and `check` in the terminal,
and `llmbench report --history`'s trend charts (one per series a check judges, its change
points marked) in the HTML page."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from llmbench.core.declare import Metric
    from llmbench.history.check import CheckReport, Segmentation, Shift
    from llmbench.history.store import Series

REGRESSION = "#cc3311"
IMPROVEMENT = "#228833"


def unit_of(benchmark: str, metric: str) -> str:
    from llmbench.benches import metric_of

    declared = metric_of(benchmark, metric)
    return declared.unit if declared else ""


def fmt(value: float, unit: str) -> str:
    from llmbench.core.units import format_bytes, format_ms

    if unit == "ms":
        return format_ms(value)
    if unit == "B":
        return format_bytes(value)
    return f"{value:.4g}" + (f" {unit}" if unit and unit != "1" else "")


def env_names(fingerprints: list[str]) -> dict[str, str]:
    """A short name (A, B, ...) per fingerprint, in order of appearance."""
    names: dict[str, str] = {}
    for fp in fingerprints:
        if fp not in names:
            n = len(names)
            names[fp] = chr(ord("A") + n) if n < 26 else f"E{n}"
    return names


def spark(values: list[float], width: int) -> str:
    """The last `width` values as a sparkline, the lowest as the lowest bar (not a blank)."""
    from llmbench.report.formats import sparkline

    return sparkline(values[-width:], width=width).replace(" ", "▁")


def change_text(value: float) -> str:
    return "from 0" if math.isinf(value) else f"{value:+.1%}"


def render_series(found: list[Series], console: Console, *, quiet: bool = False) -> None:
    """`history show`'s table: a row per series, with its first and last value and a
    sparkline, then the environments' fingerprints."""
    from llmbench.report.tables import new_table

    if not found:
        console.print("no series in the store match")
        return
    envs = env_names([s.fingerprint for s in found])
    table = new_table()
    for col in ("benchmark", "case", "metric", "env", "runs", "first", "last", "history"):
        table.add_column(col, justify="right" if col in ("runs", "first", "last") else "left")
    for s in found:
        unit = unit_of(s.benchmark, s.metric)
        table.add_row(s.label, s.case, s.metric, envs[s.fingerprint], str(len(s.points)),
                      fmt(s.values[0], unit), fmt(s.values[-1], unit), spark(s.values, 40))
    console.print(table)
    if not quiet:
        for fp, name in envs.items():
            console.print(f"env {name}: {fp}", markup=False, highlight=False)


def render_check(result: CheckReport, console: Console) -> None:
    """`history check`'s table: every shift (regressions first), the series split by
    environment, and a summary line."""
    from llmbench.report.tables import new_table

    shifts = sorted(result.shifts, key=lambda s: (s.verdict != "regression", s.benchmark,
                                                  s.case, s.metric))
    if shifts:
        table = new_table()
        for col in ("verdict", "benchmark", "case", "metric", "change", "before", "after",
                    "since run", "commit", "p", "runs", "history"):
            table.add_column(col, justify="right" if col in ("change", "before", "after",
                                                              "since run", "p") else "left")
        for s in shifts:
            style = "bold red" if s.verdict == "regression" else "green"
            table.add_row(f"[{style}]{s.verdict}[/]", s.benchmark, s.case, s.metric,
                          change_text(s.change), fmt(s.before, s.unit), fmt(s.after, s.unit),
                          str(s.run_id), (s.commit or "-")[:12], f"{s.p_value:.2g}",
                          f"{s.new_points}/{s.points}", spark(s.values, 30))
        console.print(table)
    for split in result.splits:
        parts = "; ".join(f"{fp} ({n} runs)" for fp, n in split.fingerprints.items())
        console.print(f"split by environment: {split.benchmark}: {split.case}: {split.metric}: "
                      f"checked apart: {parts}", markup=False, highlight=False)
    console.print(
        f"{len(result.regressions)} regression(s), {len(result.improvements)} improvement(s) "
        f"in {result.checked} series (last {result.window} runs, alpha {result.alpha:g}, "
        f"min change {result.min_change:.0%}"
        + (f", family {result.family}" if result.family else "") + ")"
        + (f"; {result.too_short} series with fewer than {2 * result.min_size} runs not "
           f"checked" if result.too_short else ""), markup=False, highlight=False)


@dataclass
class Trend:
    """One series as a check judged it: what a chart draws."""

    series: Series
    declared: Metric
    cut: Segmentation
    shift: Shift | None

    @property
    def order(self) -> tuple[int, str, str, str, str]:
        """Regressions first, then improvements, then the rest; by name within each."""
        rank = 2 if self.shift is None else 0 if self.shift.verdict == "regression" else 1
        s = self.series
        return rank, s.label, s.case, s.metric, s.fingerprint


@dataclass
class Trends:
    """Collects the series of a check (pass `add` as `check(..., on_series=)`)."""

    items: list[Trend] = field(default_factory=list)

    def add(self, series: Series, declared: Metric, cut: Segmentation,
            shift: Shift | None) -> None:
        self.items.append(Trend(series, declared, cut, shift))

    def ordered(self) -> list[Trend]:
        return sorted(self.items, key=lambda t: t.order)


def _scale(unit: str, values: list[float]) -> tuple[float, str]:
    """A divisor and axis label that keep the numbers readable (bytes in KiB, MiB, GiB)."""
    if unit != "B":
        return 1.0, unit if unit and unit != "1" else ""
    top = max((abs(v) for v in values), default=0.0)
    for power, name in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if top >= 1024 ** power:
            return float(1024 ** power), name
    return 1.0, "B"


def caption(trend: Trend, env: str | None) -> str:
    s, shift = trend.series, trend.shift
    head = f"{s.label}: {s.case}: {s.metric}" + (f" (env {env})" if env else "")
    if not trend.cut.checked:
        return f"{head}: {len(trend.cut.points)} run(s), too few to check"
    if shift is None:
        changes = len(trend.cut.change_points)
        return (f"{head}: {len(trend.cut.points)} runs, "
                + ("no change point" if not changes
                   else f"{changes} change point(s), the latest segment not new"))
    since = shift.commit[:12] if shift.commit else f"run {shift.run_id}"
    return (f"{head}: {shift.verdict} {change_text(shift.change)} since {since} "
            f"({fmt(shift.before, shift.unit)} -> {fmt(shift.after, shift.unit)}, "
            f"p {shift.p_value:.2g})")


def chart(trend: Trend, env: str | None = None) -> tuple[str, bytes]:
    """(caption, PNG): the series's values over its runs, each segment's mean as a step,
    a dashed line at each change point; the latest segment red for a regression, green for
    an improvement. The x axis names the runs (their commit when known, else the run id)."""
    from llmbench.report.plots import _png, _subplots

    points = trend.cut.points
    values = [p.value for p in points]
    div, label = _scale(trend.declared.unit, values)
    fig, axes = _subplots()
    ax = axes[0]
    fig.set_size_inches(6.0, 2.6)
    xs = list(range(len(points)))
    ax.plot(xs, [v / div for v in values], "o-", color="#4477aa", markersize=3, linewidth=1)
    bounds = [0, *trend.cut.change_points, len(points)]
    means = trend.cut.means
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        last = i == len(means) - 1
        color = ("#777777" if not last or trend.shift is None
                 else REGRESSION if trend.shift.verdict == "regression" else IMPROVEMENT)
        ax.hlines(means[i] / div, a - 0.4, b - 0.6, colors=color, linewidth=2,
                  alpha=0.9 if color != "#777777" else 0.6)
    for index in trend.cut.change_points:
        ax.axvline(index - 0.5, color="#999999", linestyle="--", linewidth=1)
        ax.annotate(f"p {trend.cut.p_values[index]:.2g}", (index - 0.5, 1.0),
                    xycoords=("data", "axes fraction"), fontsize=7, ha="left", va="top",
                    xytext=(2, -2), textcoords="offset points", color="#555555")
    step = max(1, math.ceil(len(points) / 8))
    ticks = xs[::step]
    ax.set_xticks(ticks, [points[i].commit[:7] if points[i].commit else str(points[i].run_id)
                          for i in ticks], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("run (commit, else id), oldest first", fontsize=7)
    ax.set_ylabel(label, fontsize=7)
    ax.set_title(f"{trend.series.label}: {trend.series.case}: {trend.series.metric}"
                 + (f" (env {env})" if env else "")
                 + f" · {'lower' if trend.declared.better == 'lower' else 'higher'} is better",
                 fontsize=8)
    ax.grid(True, alpha=0.3)
    return caption(trend, env), _png(fig)
