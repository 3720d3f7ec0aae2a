"""`llmbench schema`: the JSON Schema of the results document."""

from __future__ import annotations

import json


def schema() -> None:
    """Print the JSON Schema of the results documents (--json / --format json)."""
    from llmbench.core.results import json_schema

    print(json.dumps(json_schema(), indent=2))
