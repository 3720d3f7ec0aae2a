"""The tables `llmbench kvcache` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmbench.benches import params_of, summary_of
from llmbench.core.results import ResultDocument
from llmbench.core.units import format_bytes
from llmbench.models.presets import layout_name
from llmbench.report.tables import (
    bytes_cell,
    header,
    new_table,
    noisy_note,
    number,
    print_lines,
    print_plain,
    reasons,
    status_cell,
    time_cells,
)

if TYPE_CHECKING:
    from llmbench.benches.kvcache import KVAnalyticRow, KVWindow

# Which cache a server holds for a windowed model: what we could confirm from their sources
# (transformers as installed here, 5.24; vLLM's v1 engine), and our assumption for the rest.
SERVED = (
    "which one a server holds:",
    "  transformers (checked on 5.24): generate() builds a DynamicCache from the model's "
    "config, whose windowed layers keep W - 1 tokens; a DynamicCache() made without the config "
    "keeps every token",
    "  vLLM (v1 engine, from its source): frees the blocks outside the window (about W tokens "
    "per windowed layer, in whole blocks); with its hybrid KV-cache manager off, a model mixing "
    "full and windowed layers gets the full cache",
    "  any other server: we assume the full cache unless it documents a rolling buffer",
)


def render(doc: ResultDocument, console: Console) -> None:
    console.print(header(doc), highlight=False)
    _analytic(doc, console)
    if doc.cases:
        _measured(doc, console)


def _analytic(doc: ResultDocument, console: Console) -> None:
    """The architecture, and the cache size of every KV head count (with a budget, the longest
    context and largest batch that fit)."""
    cfg, summary = doc.config, summary_of(doc)
    arch = summary.architecture
    layout = layout_name(arch.heads, arch.kv_heads)
    context = f", context {arch.context:,}" if arch.context else ""
    window = summary.window
    windowed = ""
    if window is not None:
        where = (f"all {window.layers} layers" if window.windowed_layers == window.layers
                 else f"{window.windowed_layers} of {window.layers} layers")
        windowed = f", sliding window {window.tokens:,} on {where}"
    console.print(
        f"[bold]{escape(arch.name)}[/]: {arch.layers} layers, {arch.heads} heads, "
        f"{arch.kv_heads} KV heads ({layout}), head dim {arch.head_dim}{context}{windowed}",
        highlight=False)
    console.print(f"KV cache at seq {cfg['seq']:,} · batch {cfg['batch']} · {cfg['dtype']} "
                  f"(bytes per token = 2 × layers × kv heads × head dim × bytes)", highlight=False)
    budget = cfg.get("memory_bytes")
    console.print(_analytic_table(summary.analytic, cfg, budget, window))
    if window is not None:
        _window_notes(window, cfg, console)
    if budget:
        console.print(f"(cache only: weights and activations need memory too; the model was "
                      f"trained to {arch.context or '?'} tokens)", highlight=False)


def _window_notes(window: KVWindow, cfg: dict[str, Any], console: Console) -> None:
    """What the two totals are, and which one a server holds."""
    source = "--window" if window.source == "--window" else "the config's sliding_window"
    held = (f"min(seq, {window.tokens:,}) = {min(cfg['seq'], window.tokens):,} tokens per "
            "windowed layer")
    lines = [f"total = the full cache (every layer holds every token); windowed = a rolling "
             f"buffer, {held} (W = {window.tokens:,}, from {source})"]
    if not window.binds:
        lines.append(f"at seq {cfg['seq']:,} the window does not bind: both are the same")
    print_plain(console, *lines, *SERVED)


def _analytic_table(rows: list[KVAnalyticRow], cfg: dict[str, Any], budget: int | None,
                    window: KVWindow | None = None) -> Table:
    table = new_table()
    columns = [("variant", "left"), ("kv heads", "right"), ("bytes/token", "right"),
               ("total", "right")]
    if window is not None:
        columns.append(("windowed", "right"))
    for col, justify in [*columns, ("saving vs MHA", "right")]:
        table.add_column(col, justify=justify)
    if budget:
        table.add_column(f"max context in {format_bytes(budget)}", justify="right")
        table.add_column(f"max batch at {cfg['seq']:,}", justify="right")
        if window is not None:
            table.add_column("windowed: max context", justify="right")
            table.add_column("max batch", justify="right")
    for row in rows:
        name = row.variant + (" ← published" if row.published else "")
        cells = [f"[bold]{name}[/]" if row.published else name, str(row.kv_heads),
                 f"{row.bytes_per_token:,}", format_bytes(row.total_bytes)]
        if window is not None:
            cells.append(format_bytes(row.windowed_total_bytes))
        cells.append(f"{row.saving_vs_mha_pct:.1f} %")
        if budget:
            cells += [f"{row.max_context:,}", f"{row.max_batch:,}"]
            if window is not None:
                cells += ["any" if row.windowed_max_context is None
                          else f"{row.windowed_max_context:,}", f"{row.windowed_max_batch:,}"]
        table.add_row(*cells)
    return table


def _measured(doc: ResultDocument, console: Console) -> None:
    """The scaled-down copy's measured cache bytes and decode speed per variant."""
    copy = summary_of(doc).scaled_copy
    first = params_of(doc, doc.cases[0])
    window = ""
    if copy.window is not None:
        effect = ("a rolling buffer: = formula is the windowed one" if copy.window < first.context
                  else "not shorter than the context: no effect")
        window = (f"; sliding window {copy.window:,} on {copy.windowed_layers} of {copy.layers} "
                  f"layers ({effect})")
    console.print(
        f"\nmeasured on a scaled-down copy built with llmbench's transformer: "
        f"{copy.layers} layers (of {copy.of_layers}), head dim {copy.head_dim} "
        f"(of {copy.of_head_dim}), width {copy.dim}, same {copy.heads} query heads; "
        f"context {first.context:,}, {first.dtype}, {first.device}, attention "
        f"{first.impl}{window}", highlight=False)
    table = new_table()
    for col, justify in [("variant", "left"), ("kv heads", "right"), ("status", "left"),
                         ("cache bytes", "right"), ("= formula", "left"),
                         ("peak mem", "right"), ("decode/token", "right"), ("IQR", "right"),
                         ("tokens/s", "right"), ("vs MHA", "right")]:
        table.add_column(col, justify=justify)
    for case in doc.cases:
        m = case.metrics
        median, iqr = time_cells(case.time())
        match = m.get("cache_matches_formula")
        p = params_of(doc, case)
        table.add_row(
            p.variant, str(p.kv_heads), status_cell(case),
            f"{m['cache_bytes']:,}" if "cache_bytes" in m else "-",
            "-" if match is None else ("[green]yes[/]" if match else "[red]NO[/]"),
            bytes_cell(m.get("peak_memory_bytes")), median, iqr,
            number(m.get("decode_tokens_per_s"), "{:,.0f}"),
            number(m.get("speedup_vs_mha_x"), "{:.2f}x"))
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: params_of(doc, c).variant)
    note = noisy_note(doc.cases)
    if note:
        lines.append(note)
    print_lines(console, lines)
