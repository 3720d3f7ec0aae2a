"""`llmbench export --format github-action-benchmark`: the files benchmark-action reads.

benchmark-action/github-action-benchmark's "customSmallerIsBetter" and "customBiggerIsBetter"
tools read a JSON list of {name, unit, value, range, extra}; llmbench writes one of each, from
every metric its benchmark declares with a direction (derived ones included: a chart of
tokens/s is what people look at), with the declared unit.
"""

from __future__ import annotations

from typing import Any

from llmbench.benches import metric_of
from llmbench.ci.compare import Side, _value
from llmbench.core.timing import TimeStats


def github_action_benchmark(side: Side) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(smaller-is-better entries, bigger-is-better entries)."""
    smaller: list[dict[str, Any]] = []
    bigger: list[dict[str, Any]] = []
    for label, doc in sorted(side.docs.items()):
        for case in doc.cases:
            if not case.ok:
                continue
            for metric, raw in case.metrics.items():
                declared = metric_of(doc.benchmark, metric)
                value = _value(raw)
                if declared is None or declared.better == "info" or value is None:
                    continue
                direction = declared.better
                entry: dict[str, Any] = {"name": f"{label}/{case.name}/{metric}",
                                         "unit": declared.unit, "value": value[0]}
                if isinstance(raw, TimeStats):
                    entry["range"] = f"± {raw.iqr:.4g}"
                    entry["extra"] = (f"median of {raw.n} samples; p10 {raw.p10:.4g}, p90 "
                                      f"{raw.p90:.4g}; {doc.env.gpu_name or doc.env.cpu_model}")
                else:
                    entry["extra"] = doc.env.gpu_name or doc.env.cpu_model
                (smaller if direction == "lower" else bigger).append(entry)
    return smaller, bigger
