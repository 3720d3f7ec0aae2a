"""llmbench: measure what LLM training optimizations really buy on this machine.

From Python: `llmbench.run("attention", seq=[2048], impl=["sdpa-flash"])` runs what the command
runs and returns its results document; `llmbench.load(path)` reads one (see `llmbench.api`).
Importing llmbench imports neither torch nor the command line.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def run(command: str, /, **options: Any) -> Any:
    """`llmbench.api.run`: run `llmbench COMMAND` with these options; the results document."""
    from llmbench.api import run as _run

    return _run(command, **options)


def load(path: Any) -> Any:
    """`llmbench.api.load`: a results document written by `--json`."""
    from llmbench.api import load as _load

    return _load(path)
