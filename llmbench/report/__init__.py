"""Rendering results for people: rich tables now; compare, exports and plots build on them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rich.console import Console

from llmbench.core.results import ResultDocument

GENERIC = "llmbench.report.generic:render"


def resolve(target: str) -> Callable[..., Any]:
    """"module:function" -> the function."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def renderer_of(benchmark: str) -> Callable[[ResultDocument, Console], None]:
    """The function that renders `benchmark`'s documents: its declared renderer, or the
    generic table."""
    from llmbench import benches

    bench = benches.declaration(benchmark)
    return resolve((bench.renderer if bench else None) or GENERIC)


def render(doc: ResultDocument, console: Console) -> None:
    """Print `doc` as the table its benchmark declares; under it, what --trace found."""
    renderer_of(doc.benchmark)(doc, console)
    if any(c.trace is not None for c in doc.cases):
        from llmbench.report import traces

        traces.render(doc, console)
