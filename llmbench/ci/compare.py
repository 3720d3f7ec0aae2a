"""`llmbench compare`: the same benchmarks on two runs, case by case and metric by metric.

A metric regresses when it moved in its bad direction (read from its name) by more than the
threshold AND, where both sides kept raw samples enough for the test to ever reach alpha, the
Mann-Whitney U test calls the difference significant. A case whose status left `ok` regresses.
Only measurements are judged: figures derived from them (tokens/s and TFLOP/s from time_ms,
speed-ups and savings between cases) would count one change several times. Thresholds: the
metric's own, else its family's (`time`, `memory`), else the default. Cases on one side only,
differences of environment (versions, torch threads and flags, CPU affinity,
CUDA_VISIBLE_DEVICES, GPU clock limits, power limit, persistence and ECC modes) and cases run on
a throttling GPU are reported, not judged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from llmbench.benches import metric_of
from llmbench.ci.stats import mann_whitney_p, smallest_p
from llmbench.core.declare import Metric
from llmbench.core.errors import UsageError
from llmbench.core.results import (
    ResultDocument,
    ResultsError,
    load_document,
    read_run_folder,
)
from llmbench.core.timing import TimeStats

Verdict = Literal["regression", "improvement", "unchanged", "within-threshold", "not-significant"]
ENV_FIELDS = ("device", "gpu_name", "compute_capability", "driver", "cuda", "torch", "profile",
              "cpu_model", "cores")
# Settings recorded since a later llmbench: compared only when both documents recorded them.
# The GPU's readings at the start of a run (current clocks, power draw, temperature) are not
# settings and differ between any two runs; per-case throttling is reported instead.
ENV_SETTINGS = ("cudnn", "triton", "flash_attn", "torch_threads", "cpu_affinity",
                "matmul_allow_tf32", "cudnn_allow_tf32", "cudnn_benchmark",
                "cuda_visible_devices", "gpu_sm_clock_max_mhz", "gpu_mem_clock_max_mhz",
                "gpu_power_limit_w", "gpu_persistence_mode", "gpu_ecc")


class MetricComparison(BaseModel):
    label: str  # the suite entry (or the benchmark)
    case: str
    metric: str
    direction: Literal["lower", "higher"]
    base: float
    new: float
    change: float  # relative: (new - base) / |base|
    threshold: float
    p_value: float | None = None
    n_base: int | None = None
    n_new: int | None = None
    verdict: Verdict
    note: str | None = None


class EnvDifference(BaseModel):
    label: str
    field: str
    base: Any = None
    new: Any = None

    def line(self) -> str:
        return f"{self.label}: {self.field} {self.base!r} -> {self.new!r}"


class StatusChange(BaseModel):
    label: str
    case: str
    base: str
    new: str
    regression: bool
    reason: str | None = None


class Comparison(BaseModel):
    metrics: list[MetricComparison] = Field(default_factory=list)
    status_changes: list[StatusChange] = Field(default_factory=list)
    only_base: list[str] = Field(default_factory=list)
    only_new: list[str] = Field(default_factory=list)
    env_warnings: list[str] = Field(default_factory=list)  # one line per env_differences entry
    env_differences: list[EnvDifference] = Field(default_factory=list)
    throttled: list[str] = Field(
        default_factory=list, description="'base: LABEL: CASE' or 'new: ...' per case that ran "
        "ok on a throttling GPU")
    undeclared: dict[str, None] = Field(
        default_factory=dict, description="'BENCHMARK.METRIC' of metrics in both documents "
        "that this llmbench does not declare (from another version): not compared")
    threshold: float
    alpha: float

    @property
    def regressions(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "regression"]

    @property
    def improvements(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "improvement"]

    @property
    def failed(self) -> bool:
        return bool(self.regressions) or any(s.regression for s in self.status_changes)


class Side(BaseModel):
    """One side of a comparison: its documents by label, and per-label metric thresholds."""

    docs: dict[str, ResultDocument]
    thresholds: dict[str, dict[str, float]] = Field(default_factory=dict)


def parse_threshold(text: str | float) -> float:
    """'5%' -> 0.05; '0.05' -> 0.05."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"not a threshold: {text!r} (examples: 5%, 0.05)") from None
    if not 0 <= value <= 100 or math.isnan(value):
        raise UsageError(f"threshold out of range: {text!r}")
    return value


def load_side(path: str | Path) -> Side:
    """A result file, or a directory of them (with the index `llmbench run` writes)."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such file or directory")
    if path.is_file():
        doc = load_document(path)
        return Side(docs={doc.benchmark: doc})
    folder = read_run_folder(path)
    docs: dict[str, ResultDocument] = {}
    for file in folder.files:
        doc = load_document(file)
        label = folder.labels.get(file.name, doc.benchmark)
        if label in docs:
            label = file.stem
        docs[label] = doc
    return Side(docs=docs, thresholds=folder.thresholds)


def _value(metric: Any) -> tuple[float, list[float] | None] | None:
    if isinstance(metric, TimeStats):
        return metric.median, metric.samples
    if isinstance(metric, bool) or not isinstance(metric, (int, float)):
        return None
    if math.isnan(metric) or math.isinf(metric):
        return None
    return float(metric), None


def compare_metric(label: str, case: str, name: str, base: Any, new: Any, *, threshold: float,
                   alpha: float, declared: Metric | None) -> MetricComparison | None:
    """Judge one metric by its declaration: only measurements with a direction (declared
    `lower` or `higher`, not derived) are compared."""
    b, n = _value(base), _value(new)
    if declared is None or not declared.gated or b is None or n is None:
        return None
    direction = declared.better
    (bv, bs), (nv, ns) = b, n
    if declared.floor is not None and max(abs(bv), abs(nv)) <= declared.floor:
        return MetricComparison(
            label=label, case=case, metric=name, direction=direction, base=bv, new=nv,
            change=0.0, threshold=threshold, verdict="within-threshold",
            note=f"{name}: both sides within its floor of {declared.floor:g}: rounding")
    if bv == nv:
        change = 0.0
    elif bv == 0:
        change = math.copysign(math.inf, nv)
    else:
        change = (nv - bv) / abs(bv)
    worse = change > 0 if direction == "lower" else change < 0
    beyond = abs(change) > threshold
    row = dict(label=label, case=case, metric=name, direction=direction, base=bv, new=nv,
               change=change, threshold=threshold)
    if not beyond:
        return MetricComparison(**row, verdict="unchanged" if change == 0 else "within-threshold")
    if bs and ns:
        row.update(n_base=len(bs), n_new=len(ns))
        if smallest_p(len(bs), len(ns)) < alpha:
            p = mann_whitney_p(bs, ns)
            row["p_value"] = p
            if p >= alpha:
                return MetricComparison(**row, verdict="not-significant",
                                        note=f"p = {p:.3g} >= alpha {alpha:g}")
        else:
            row["note"] = (f"too few samples ({len(bs)} vs {len(ns)}) for the test to reach "
                           f"alpha {alpha:g}: the threshold alone decides")
    return MetricComparison(**row, verdict="regression" if worse else "improvement")


def env_differences(label: str, base: ResultDocument, new: ResultDocument
                    ) -> list[EnvDifference]:
    """The env fields that differ: ENV_FIELDS always, ENV_SETTINGS where both sides recorded
    them (a document of an older llmbench lacks them; that is not a difference)."""
    out = []
    for fieldname in ENV_FIELDS + ENV_SETTINGS:
        if fieldname in ENV_SETTINGS and not (fieldname in base.env.model_fields_set
                                              and fieldname in new.env.model_fields_set):
            continue
        bval, nval = getattr(base.env, fieldname, None), getattr(new.env, fieldname, None)
        if bval != nval:
            out.append(EnvDifference(label=label, field=fieldname, base=bval, new=nval))
    return out


def compare(base: Side, new: Side, *, threshold: float = 0.05, alpha: float = 0.01
            ) -> Comparison:
    out = Comparison(threshold=threshold, alpha=alpha)
    for label in sorted(set(base.docs) | set(new.docs)):
        if label not in new.docs:
            out.only_base.append(f"{label} (whole benchmark)")
            continue
        if label not in base.docs:
            out.only_new.append(f"{label} (whole benchmark)")
            continue
        bdoc, ndoc = base.docs[label], new.docs[label]
        for diff in env_differences(label, bdoc, ndoc):
            out.env_differences.append(diff)
            out.env_warnings.append(diff.line())
        for side, doc in (("base", bdoc), ("new", ndoc)):
            out.throttled += [f"{side}: {label}: {c.name}" for c in doc.cases
                              if c.ok and c.metrics.get("gpu_throttled") is True]
        overrides = {**base.thresholds.get(label, {}), **new.thresholds.get(label, {})}
        bcases = {c.name: c for c in bdoc.cases}
        ncases = {c.name: c for c in ndoc.cases}
        for name in bcases.keys() - ncases.keys():
            out.only_base.append(f"{label}: {name}")
        for name in ncases.keys() - bcases.keys():
            out.only_new.append(f"{label}: {name}")
        for name in [n for n in bcases if n in ncases]:
            bc, nc = bcases[name], ncases[name]
            if bc.status != nc.status:
                out.status_changes.append(StatusChange(
                    label=label, case=name, base=bc.status, new=nc.status,
                    regression=bc.status == "ok", reason=nc.reason))
                continue
            if not bc.ok:
                continue
            for metric in bc.metrics:
                if metric not in nc.metrics:
                    continue
                declared = metric_of(ndoc.benchmark, metric)
                if declared is None:
                    out.undeclared[f"{ndoc.benchmark}.{metric}"] = None
                    continue
                family = declared.threshold_family or ""
                limit = overrides.get(metric, overrides.get(family, threshold))
                row = compare_metric(label, name, metric, bc.metrics[metric],
                                     nc.metrics[metric], threshold=limit, alpha=alpha,
                                     declared=declared)
                if row is not None:
                    out.metrics.append(row)
    return out
