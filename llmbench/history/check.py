"""`llmbench history check`: change points in every series of the store.

A series is one metric of one case of one benchmark (its suite label), over the runs of one
environment fingerprint (a series whose runs span several fingerprints is split, and the
split reported: a new GPU or torch is not a regression). Its value in a run is the metric's
median for a timed metric, else the number. Only measurements with a direction are checked,
by the same declarations `llmbench compare` judges by (`llmbench.benches.metric_of`: better
`lower` or `higher`, not derived).

Over its last `window` points, E-divisive means (`changepoint.e_divisive`) finds the change
points; a change point whose neighbouring segments' means differ by less than `min_change`
(relative) is merged away, the weakest first, as is one where both means lie within the
metric's declared floor. A series whose latest points sit in a segment that began at a change
point is reported: the run (and commit) where that segment began, the relative change of the
segment means, the p-value, and whether the shift went the metric's bad way (a regression) or
its good way (an improvement).

Metric families, for `--metric-family`: the family a metric's declaration gives it, else the
one its unit implies (`core.declare.Metric.threshold_family`: ms and s are `time`, B is
`memory`, numerical errors are `error`), and `other` for the rest (ratios, rates, losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from llmbench.benches import metric_of
from llmbench.core.declare import Metric
from llmbench.history.changepoint import e_divisive, segment_means
from llmbench.history.store import Point, Series

Family = Literal["time", "memory", "error", "other"]
FAMILIES: tuple[Family, ...] = ("time", "memory", "error", "other")


def family_of(declared: Metric) -> Family:
    return declared.threshold_family or "other"


class Shift(BaseModel):
    """A series whose latest segment began at a change point."""

    benchmark: str = Field(description="the suite entry's label, else the benchmark")
    case: str
    metric: str
    unit: str
    family: Family
    direction: Literal["lower", "higher"] = Field(description="which way is better")
    verdict: Literal["regression", "improvement"]
    fingerprint: str
    run_id: int = Field(description="the first run of the new segment")
    commit: str | None = None
    branch: str | None = None
    time: str
    before: float = Field(description="the previous segment's mean")
    after: float = Field(description="the new segment's mean")
    change: float = Field(description="relative: (after - before) / |before|")
    p_value: float
    points: int = Field(description="points checked (the window)")
    new_points: int = Field(description="points in the new segment")
    values: list[float] = Field(description="the window's values, oldest first")


class Split(BaseModel):
    """A series whose runs span several environment fingerprints: each is checked alone."""

    benchmark: str
    case: str
    metric: str
    fingerprints: dict[str, int] = Field(description="fingerprint -> its number of runs")


class CheckReport(BaseModel):
    shifts: list[Shift] = Field(default_factory=list)
    splits: list[Split] = Field(default_factory=list)
    checked: int = Field(0, description="series checked")
    too_short: int = Field(0, description="series with fewer than 2 x min_size points")
    window: int
    alpha: float
    min_change: float
    min_size: int
    permutations: int
    family: Family | None = None

    @property
    def regressions(self) -> list[Shift]:
        return [s for s in self.shifts if s.verdict == "regression"]

    @property
    def improvements(self) -> list[Shift]:
        return [s for s in self.shifts if s.verdict == "improvement"]

    @property
    def failed(self) -> bool:
        return bool(self.regressions)


def relative(before: float, after: float) -> float:
    if before == after:
        return 0.0
    if before == 0:
        return math.copysign(math.inf, after)
    return (after - before) / abs(before)


def _weak(before: float, after: float, min_change: float, floor: float | None) -> bool:
    if floor is not None and max(abs(before), abs(after)) <= floor:
        return True
    return abs(relative(before, after)) < min_change


def prune(values: list[float], indices: list[int], min_change: float,
          floor: float | None) -> list[int]:
    """The change points left once every weak one (its segments' means closer than
    `min_change`, or both within `floor`) is merged away, the weakest first."""
    kept = sorted(indices)
    while kept:
        means = segment_means(values, kept)
        weak = [(abs(relative(means[i], means[i + 1])), i) for i in range(len(kept))
                if _weak(means[i], means[i + 1], min_change, floor)]
        if not weak:
            break
        kept.pop(min(weak)[1])
    return kept


@dataclass
class Segmentation:
    """A series's last `window` points cut at the change points that survive `prune`."""

    points: list[Point]
    change_points: list[int] = field(default_factory=list)
    p_values: dict[int, float] = field(default_factory=dict)
    checked: bool = True  # False: too few points to look for a change

    @property
    def values(self) -> list[float]:
        return [p.value for p in self.points]

    @property
    def means(self) -> list[float]:
        return segment_means(self.values, self.change_points)


def segment(series: Series, declared: Metric, *, window: int, alpha: float, min_change: float,
            min_size: int, permutations: int, seed: int) -> Segmentation:
    """E-divisive means over the last `window` points of `series`, weak change points merged
    away (`prune`)."""
    points = series.points[-window:]
    values = [p.value for p in points]
    if len(set(values)) < 2:
        return Segmentation(points)
    found = e_divisive(values, alpha=alpha, permutations=permutations, min_size=min_size,
                       seed=seed)
    p_values = {c.index: c.p_value for c in found}
    kept = prune(values, list(p_values), min_change, declared.floor)
    return Segmentation(points, kept, {i: p_values[i] for i in kept})


def shift_of(series: Series, declared: Metric, cut: Segmentation) -> Shift | None:
    """The shift where the latest segment of `cut` began, or None (one segment)."""
    if not cut.change_points:
        return None
    start = cut.change_points[-1]
    values = cut.values
    before, after = cut.means[-2:]
    change = relative(before, after)
    worse = change > 0 if declared.better == "lower" else change < 0
    first = cut.points[start]
    return Shift(
        benchmark=series.label, case=series.case, metric=series.metric, unit=declared.unit,
        family=family_of(declared), direction=declared.better,
        verdict="regression" if worse else "improvement", fingerprint=series.fingerprint,
        run_id=first.run_id, commit=first.commit, branch=first.branch, time=first.time,
        before=before, after=after, change=change, p_value=cut.p_values[start],
        points=len(values), new_points=len(values) - start, values=values)


def check(all_series: list[Series], *, window: int = 30, family: Family | None = None,
          alpha: float = 0.01, min_change: float = 0.05, min_size: int = 3,
          permutations: int = 999, seed: int = 0,
          on_series: Callable[[Series, Metric, Segmentation, Shift | None], None] | None = None
          ) -> CheckReport:
    """Check every series with a direction (of `family`, when given); see the module.
    `on_series` sees each series, with its segmentation and shift (for charts); one too
    short to check comes with `checked` False."""
    report = CheckReport(window=window, alpha=alpha, min_change=min_change, min_size=min_size,
                         permutations=permutations, family=family)
    by_key: dict[tuple[str, str, str], list[Series]] = {}
    for series in all_series:
        declared = metric_of(series.benchmark, series.metric)
        if declared is None or not declared.gated:
            continue
        if family is not None and family_of(declared) != family:
            continue
        by_key.setdefault(series.key, []).append(series)
    for (label, case, metric), group in sorted(by_key.items()):
        if len(group) > 1:
            report.splits.append(Split(benchmark=label, case=case, metric=metric,
                                       fingerprints={s.fingerprint: len(s.points)
                                                     for s in group}))
        for series in group:
            declared = metric_of(series.benchmark, series.metric)
            assert declared is not None
            if min(len(series.points), window) < 2 * min_size:
                report.too_short += 1
                if on_series is not None:
                    on_series(series, declared, Segmentation(series.points[-window:],
                                                             checked=False), None)
                continue
            report.checked += 1
            cut = segment(series, declared, window=window, alpha=alpha,
                          min_change=min_change, min_size=min_size, permutations=permutations,
                          seed=seed)
            shift = shift_of(series, declared, cut)
            if on_series is not None:
                on_series(series, declared, cut, shift)
            if shift is not None:
                report.shifts.append(shift)
    return report
