"""Rich tables shared by every benchmark's renderer."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmbench.core.gpu_state import REASONS, THROTTLING
from llmbench.core.results import CaseResult, ResultDocument
from llmbench.core.timing import TimeStats
from llmbench.core.units import format_bytes, format_ms

STATUS_STYLE = {"ok": "green", "oom": "bold red", "error": "red", "skipped": "yellow",
                "unavailable": "dim"}


def throttled(case: CaseResult) -> bool:
    """The GPU throttled while this case ran (thermal or power reasons, or a low SM clock)."""
    return case.ok and case.metrics.get("gpu_throttled") is True


def throttle_detail(case: CaseResult) -> str:
    """Why `case` counts as throttled: NVML's thermal and power reasons, and the lowest SM
    clock sampled against its maximum."""
    m = case.metrics
    names = {name for bit, name in REASONS.items() if bit & THROTTLING}
    seen = [r for r in str(m.get("gpu_throttle_reasons") or "").split(",") if r in names]
    clocks = [m.get(f"gpu_sm_clock_mhz_{s}") for s in ("start", "end")]
    clocks = [c for c in clocks if isinstance(c, int)]
    top = m.get("gpu_sm_clock_max_mhz")
    parts = [", ".join(seen)] if seen else []
    if clocks and isinstance(top, int):
        parts.append(f"SM clock down to {min(clocks)} of {top} MHz")
    return "; ".join(parts) or "see gpu_* metrics"


def status_cell(case: CaseResult) -> str:
    """The status, with a warning mark when the GPU throttled during the case."""
    mark = " [bold yellow]⚠ throttled[/]" if throttled(case) else ""
    return f"[{STATUS_STYLE[case.status]}]{case.status}[/]{mark}"


def time_cells(stats: TimeStats | None) -> tuple[str, str]:
    """(median, ± IQR) with a warning mark when the samples are noisy."""
    if stats is None:
        return "-", "-"
    mark = " [yellow]⚠[/]" if stats.noisy else ""
    return format_ms(stats.median) + mark, f"±{format_ms(stats.iqr)}"


def number(value: object, fmt: str = "{:.3g}") -> str:
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, (int, float)):
        return fmt.format(value)
    return str(value)


def bytes_cell(value: object) -> str:
    return format_bytes(value) if isinstance(value, (int, float)) else "-"


def header(doc: ResultDocument) -> str:
    """The line above every table, as rich markup: what the document records (a device name, a
    profile file's path, a reason) is escaped, so a '[' in it prints as written."""
    env = doc.env
    if env.device == "cuda":
        where = f"{env.gpu_name} (sm{(env.compute_capability or '').replace('.', '')})"
        versions = f"torch {env.torch}, CUDA {env.cuda}, driver {env.driver}"
    else:
        where = f"{env.cpu_model} ({env.cores} cores, {env.cpu_isa or 'ISA unknown'})"
        versions = f"torch {env.torch}"
    return (f"[bold]{escape(doc.benchmark)}[/] on {escape(where)} · {escape(versions)} · "
            f"profile [cyan]{escape(env.profile)}[/] ({escape(str(env.profile_reason))})")


def reasons(cases: list[CaseResult], key: Callable[[CaseResult], str]) -> list[str]:
    """One line per distinct (label, status, reason) among the cases that did not run ok, then
    one per distinct (label, detail) among those that ran ok on a throttling GPU."""
    seen: dict[tuple[str, str, str], None] = {}
    for c in cases:
        if c.status != "ok" and c.reason:
            seen[(key(c), c.status, c.reason)] = None
    lines = [f"[{STATUS_STYLE[s]}]{escape(label)}[/] {s}: {escape(r)}" for label, s, r in seen]
    hot = {(key(c), throttle_detail(c)): None for c in cases if throttled(c)}
    lines += [f"[bold yellow]⚠[/] {escape(label)}: the GPU throttled ({escape(detail)}); its "
              "figures are below what this GPU can do" for label, detail in hot]
    return lines


def noisy_note(cases: list[CaseResult], hint: str = " or raise --max-time") -> str | None:
    noisy = [c.name for c in cases if c.time() and c.time().noisy]
    if not noisy:
        return None
    return (f"[yellow]⚠[/] IQR/median above 10 % in {len(noisy)} case(s): close other "
            f"work{hint} for steadier figures")


def print_lines(console: Console, lines: list[str]) -> None:
    """Lines of rich markup (what they quote escaped, as `reasons` does)."""
    for line in lines:
        console.print(line, highlight=False)


def print_plain(console: Console, *lines: str) -> None:
    """Notes, hints and errors as written: never read as markup, so `pip install
    'llmbench[plot]'` keeps its brackets (rich would take `[plot]` for a style and drop it)."""
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def new_table(title: str | None = None) -> Table:
    return Table(title=title, title_justify="left", header_style="bold", pad_edge=False,
                 show_edge=False, box=None)
