"""`llmbench report DIR --html PATH`: one self-contained page for a run's results.

A section per result document: the same table the terminal shows (rich, exported to HTML with
inline styles) and its plots as embedded PNGs (data: URIs), so the file can be mailed, attached
to a CI run or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import datetime, timezone

from rich.console import Console

from llmbench import __version__
from llmbench.ci.compare import Side
from llmbench.report import plots, render

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


def _table_html(doc) -> str:  # noqa: ANN001
    console = Console(record=True, width=170, file=io.StringIO(), force_terminal=True)
    render(doc, console)
    return console.export_html(inline_styles=True, code_format="<pre>{code}</pre>")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def build(side: Side, *, title: str = "llmbench report", with_plots: bool = True
          ) -> tuple[str, dict[str, bytes], str | None]:
    """(the page, {file name: PNG} of every plot, a hint when plots were not possible)."""
    hint = plots.available() if with_plots else None
    images: dict[str, bytes] = {}
    sections = []
    for label, doc in side.docs.items():
        parts = [f'<h2 id="{_slug(label)}">{html.escape(label)}</h2>', _table_html(doc)]
        if with_plots and hint is None:
            for i, (caption, png) in enumerate(plots.figures(doc)):
                name = f"{_slug(label)}-{i + 1}.png"
                images[name] = png
                data = base64.b64encode(png).decode()
                parts.append(f'<figure><img alt="{html.escape(caption)}" '
                             f'src="data:image/png;base64,{data}">'
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        sections.append("\n".join(parts))
    if hint:
        sections.insert(0, f'<p class="note">{html.escape(hint)}</p>')
    first = next(iter(side.docs.values()))
    where = first.env.gpu_name or first.env.cpu_model
    subtitle = (f"{len(side.docs)} benchmark(s) on {html.escape(where)} · torch "
                f"{html.escape(str(first.env.torch))} · made by llmbench {__version__} on "
                f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    page = PAGE.format(title=html.escape(title), subtitle=subtitle,
                       sections="\n".join(sections))
    return page, images, hint
