"""`llmbench schema`: the JSON Schema of the results document."""

from __future__ import annotations

import json

from llmbench.cli.common import QuietOption


def schema(quiet: QuietOption = False) -> None:  # noqa: ARG001 - accepted as everywhere
    """Print the JSON Schema of the results documents (--json / --format json).

    The schema's `x-llmbench-metrics` lists every metric each benchmark declares: its unit,
    whether lower or higher is better (or information only), whether it is derived from other
    metrics, and its threshold family.
    """
    from llmbench import benches
    from llmbench.core.declare import COMMON
    from llmbench.core.results import json_schema

    out = json_schema()
    out["x-llmbench-metrics"] = {
        "*": {m.name: m.as_json() for m in COMMON},
        **{b.name: {m.name: m.as_json() for m in b.metrics} for b in benches.classes()}}
    print(json.dumps(out, indent=2))
