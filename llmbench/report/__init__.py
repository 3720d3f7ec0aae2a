"""Rendering results for people: rich tables now; compare, exports and plots build on them."""

from __future__ import annotations

import importlib

from rich.console import Console

from llmbench.core.results import ResultDocument

_RENDERERS = {
    "attention": "llmbench.report.attention:render",
    "kvcache": "llmbench.report.kvcache:render",
    "amp": "llmbench.report.training:render_amp",
    "checkpoint": "llmbench.report.training:render_checkpoint",
    "optim": "llmbench.report.training:render_optim",
    "accum": "llmbench.report.training:render_accum",
    "align": "llmbench.report.align:render",
    "precision": "llmbench.report.formats:render_precision",
    "tune": "llmbench.report.tune:render",
    "schedule": "llmbench.report.formats:render_schedule",
    "comm": "llmbench.report.dist:render_comm",
    "ddp": "llmbench.report.dist:render_ddp",
}


def render(doc: ResultDocument, console: Console) -> None:
    """Print `doc` as the table its benchmark defines."""
    module, _, attr = _RENDERERS[doc.benchmark].partition(":")
    getattr(importlib.import_module(module), attr)(doc, console)
