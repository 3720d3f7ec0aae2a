"""`llmbench schema`: the JSON Schema of the documents llmbench writes.

Two kinds share `schema_version`, `tool` and `env`: the results document of every benchmark
command (`core.results.ResultDocument`, with `benchmark`) and the environment report of
`llmbench env --json` (`benches.environment.EnvReport`, without). The schema's top level keeps
the results document's properties (what the README and CI scripts read) and sends a document
to the definition of its kind by whether it has `benchmark`.
"""

from __future__ import annotations

import json
from typing import Any

from llmbench.cli.common import QuietOption


def document_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every llmbench document validates against."""
    from pydantic.json_schema import models_json_schema

    from llmbench.benches.environment import EnvReport
    from llmbench.core.results import ResultDocument, json_schema

    results = json_schema()
    refs, bundle = models_json_schema(
        [(ResultDocument, "validation"), (EnvReport, "validation")],
        ref_template="#/$defs/{model}")
    defs = bundle["$defs"]
    results_ref = refs[(ResultDocument, "validation")]
    own = defs[results_ref["$ref"].rsplit("/", 1)[1]]
    return {
        "$schema": results["$schema"],
        "title": results["title"],
        "description": "A results document (every benchmark command's --json / --format "
                       "json; it has `benchmark`) or the environment report of `llmbench env "
                       "--json` (no `benchmark`; $defs/EnvReport).",
        "type": "object",
        "properties": own["properties"],
        "if": {"required": ["benchmark"]},
        "then": results_ref,
        "else": refs[(EnvReport, "validation")],
        "$defs": defs,
    }


def schema(quiet: QuietOption = False) -> None:  # noqa: ARG001 - accepted as everywhere
    """Print the JSON Schema of the results documents (--json / --format json) and of env's.

    A document with `benchmark` is a results document; `llmbench env --json` writes the
    environment report, without it. The schema's `x-llmbench-metrics` lists every metric each
    benchmark declares: its unit, whether lower or higher is better (or information only),
    whether it is derived from other metrics, and its threshold family.
    """
    from llmbench import benches
    from llmbench.core.declare import COMMON

    out = document_schema()
    out["x-llmbench-metrics"] = {
        "*": {m.name: m.as_json() for m in COMMON},
        **{b.name: {m.name: m.as_json() for m in b.metrics} for b in benches.classes()}}
    print(json.dumps(out, indent=2))
