"""`llmbench report DIR --html PATH`: one self-contained page for a run's results.

A section per result document: the same table the terminal shows (rich, exported to HTML with
inline styles) and its plots as embedded PNGs (data: URIs), so the file can be mailed, attached
to a CI run or opened offline. With `--history`, a section of the results store's trends: the
table `llmbench history check` prints, then a chart per series it judged (shifted ones first).
"""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from rich.console import Console

from llmbench import __version__
from llmbench.ci.compare import Side
from llmbench.report import plots, render

if TYPE_CHECKING:
    from llmbench.history.check import CheckReport
    from llmbench.report.history import Trends

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1400px; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.2rem; margin-top: 2.5rem; }}
pre {{ font-size: 12px; line-height: 1.25; overflow-x: auto; background: #fafafa;
      padding: .75rem; border: 1px solid #eee; }}
figure {{ display: inline-block; margin: .5rem 1rem .5rem 0; }}
figcaption {{ font-size: .85rem; color: #555; }}
.note {{ color: #8a6d3b; }}
</style></head><body>
<h1>{title}</h1>
<p>{subtitle}</p>
{sections}
</body></html>
"""


def _console() -> Console:
    return Console(record=True, width=170, file=io.StringIO(), force_terminal=True)


def _export(console: Console) -> str:
    return console.export_html(inline_styles=True, code_format="<pre>{code}</pre>")


def _table_html(doc) -> str:  # noqa: ANN001
    console = _console()
    render(doc, console)
    return _export(console)


def _figure(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def history_section(result: CheckReport, trends: Trends, *, with_plots: bool
                    ) -> tuple[str, dict[str, bytes]]:
    """(the HTML of the store's trends, {file name: PNG}): the check's table, then a chart
    per series (regressions, improvements, then the rest), or, without plots, the series as
    `history show` lists them."""
    from llmbench.report.history import chart, env_names, render_check, render_series

    console = _console()
    render_check(result, console)
    parts = ['<h2 id="history">history</h2>', _export(console)]
    images: dict[str, bytes] = {}
    ordered = trends.ordered()
    envs = env_names([t.series.fingerprint for t in ordered])
    if with_plots:
        for i, trend in enumerate(ordered):
            name = envs[trend.series.fingerprint] if len(envs) > 1 else None
            caption, png = chart(trend, name)
            images[f"history-{i + 1}.png"] = png
            parts.append(_figure(caption, png))
    elif ordered:
        console = _console()
        render_series([t.series for t in ordered], console)
        parts.append(_export(console))
    return "\n".join(parts), images


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def build(side: Side | None, *, title: str = "llmbench report", with_plots: bool = True,
          history: tuple[CheckReport, Trends, str] | None = None
          ) -> tuple[str, dict[str, bytes], str | None]:
    """(the page, {file name: PNG} of every plot, a hint when plots were not possible).
    `history`: a check's report, its trends and a line saying where the store is."""
    hint = plots.available() if with_plots else None
    images: dict[str, bytes] = {}
    sections = []
    docs = side.docs if side is not None else {}
    for label, doc in docs.items():
        parts = [f'<h2 id="{_slug(label)}">{html.escape(label)}</h2>', _table_html(doc)]
        if with_plots and hint is None:
            for i, (caption, png) in enumerate(plots.figures(doc)):
                name = f"{_slug(label)}-{i + 1}.png"
                images[name] = png
                parts.append(_figure(caption, png))
        sections.append("\n".join(parts))
    if history is not None:
        result, trends, where = history
        part, charts = history_section(result, trends, with_plots=with_plots and hint is None)
        sections.append(part)
        images.update(charts)
    if hint:
        sections.insert(0, f'<p class="note">{html.escape(hint)}</p>')
    made = (f"made by llmbench {__version__} on "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    if docs:
        first = next(iter(docs.values()))
        host = first.env.gpu_name or first.env.cpu_model
        subtitle = (f"{len(docs)} benchmark(s) on {html.escape(host)} · torch "
                    f"{html.escape(str(first.env.torch))} · {made}")
    else:
        subtitle = made
    if history is not None:
        subtitle += f" · history: {html.escape(history[2])}"
    page = PAGE.format(title=html.escape(title), subtitle=subtitle,
                       sections="\n".join(sections))
    return page, images, hint
