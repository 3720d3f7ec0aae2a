"""`llmbench compare` output: a rich table, pull-request markdown, JUnit XML."""

from __future__ import annotations

import math
from xml.etree import ElementTree as ET

from rich.console import Console

from llmbench.ci.compare import Comparison, MetricComparison
from llmbench.report.tables import new_table

VERDICT_STYLE = {"regression": "bold red", "improvement": "green", "not-significant": "yellow",
                 "within-threshold": "dim", "unchanged": "dim"}


def _num(v: float) -> str:
    return f"{v:.4g}"


def _change(m: MetricComparison) -> str:
    return "new" if math.isinf(m.change) else f"{m.change:+.1%}"


def _p(m: MetricComparison) -> str:
    return "-" if m.p_value is None else f"{m.p_value:.2g}"


def headline(c: Comparison) -> str:
    regressions = len(c.regressions) + sum(s.regression for s in c.status_changes)
    return (f"{regressions} regression(s), {len(c.improvements)} improvement(s) in "
            f"{len(c.metrics)} compared metrics (default threshold {c.threshold:.0%}, alpha "
            f"{c.alpha:g})")


def rows(c: Comparison, everything: bool) -> list[MetricComparison]:
    shown = c.metrics if everything else [
        m for m in c.metrics if m.verdict in ("regression", "improvement", "not-significant")]
    order = {"regression": 0, "improvement": 1, "not-significant": 2}
    return sorted(shown, key=lambda m: (order.get(m.verdict, 3), m.label, m.case, m.metric))


def render(c: Comparison, console: Console, *, everything: bool = False) -> None:
    style = "bold red" if c.failed else "green"
    console.print(f"[{style}]{headline(c)}[/]", highlight=False)
    shown = rows(c, everything)
    if shown:
        table = new_table()
        for col in ("verdict", "benchmark", "case", "metric", "base", "new", "change",
                    "limit", "p"):
            table.add_column(col, justify="right" if col in ("base", "new", "change", "limit",
                                                             "p") else "left")
        for m in shown:
            table.add_row(f"[{VERDICT_STYLE[m.verdict]}]{m.verdict}[/]", m.label, m.case,
                          m.metric, _num(m.base), _num(m.new), _change(m),
                          f"{m.threshold:.0%}", _p(m))
        console.print(table)
    for s in c.status_changes:
        mark = "[bold red]regression[/]" if s.regression else "[green]improvement[/]"
        console.print(f"{mark}: {s.label} {s.case}: {s.base} -> {s.new}"
                      + (f" ({s.reason})" if s.reason else ""), highlight=False)
    notes = {m.note for m in shown if m.note}
    for note in sorted(notes):
        console.print(f"[dim]note: {note}[/]", highlight=False)
    for label, items in (("only in the baseline", c.only_base), ("only in the new run",
                                                                  c.only_new)):
        if items:
            console.print(f"[yellow]{label}:[/] {', '.join(items)}", highlight=False)
    if c.undeclared:
        console.print(f"[dim]not compared (not declared by this llmbench): "
                      f"{', '.join(c.undeclared)}[/]", highlight=False)
    for w in c.env_warnings:
        console.print(f"[yellow]environment differs:[/] {w}", highlight=False)
    if c.throttled:
        console.print(f"[yellow]⚠ GPU throttled during:[/] {', '.join(c.throttled)}",
                      highlight=False)


def markdown(c: Comparison, *, everything: bool = False) -> str:
    icon = ":x:" if c.failed else ":white_check_mark:"
    lines = [f"### llmbench: {icon} {headline(c)}", ""]
    shown = rows(c, everything)
    if shown:
        lines += ["| verdict | benchmark | case | metric | base | new | change | limit | p |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {m.verdict} | {m.label} | `{m.case}` | `{m.metric}` | {_num(m.base)} | "
                  f"{_num(m.new)} | {_change(m)} | {m.threshold:.0%} | {_p(m)} |"
                  for m in shown]
        lines.append("")
    for s in c.status_changes:
        kind = "**regression**" if s.regression else "improvement"
        lines.append(f"- {kind}: {s.label} `{s.case}`: {s.base} → {s.new}"
                     + (f" ({s.reason})" if s.reason else ""))
    for label, items in (("Only in the baseline", c.only_base), ("Only in the new run",
                                                                  c.only_new)):
        if items:
            lines.append(f"- {label}: " + ", ".join(f"`{i}`" for i in items))
    if c.undeclared:
        lines.append("- Not compared (not declared by this llmbench): "
                     + ", ".join(f"`{i}`" for i in c.undeclared))
    if c.throttled:
        lines.append("- :warning: GPU throttled during: " + ", ".join(f"`{t}`"
                                                                   for t in c.throttled))
    if c.env_warnings:
        lines += ["", "<details><summary>Environment differences</summary>", ""]
        lines += [f"- {w}" for w in c.env_warnings]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def junit(c: Comparison) -> str:
    """One testcase per compared metric (and per status change); regressions are failures."""
    suite = ET.Element("testsuite", name="llmbench.compare")
    failures = 0
    for m in c.metrics:
        case = ET.SubElement(suite, "testcase", classname=f"{m.label}.{m.case}", name=m.metric)
        detail = (f"base {m.base:.6g} new {m.new:.6g} change {_change(m)} threshold "
                  f"{m.threshold:.0%} p {_p(m)} direction {m.direction}-is-better")
        if m.verdict == "regression":
            failures += 1
            ET.SubElement(case, "failure", message=f"{m.metric} regressed {_change(m)}",
                          type="regression").text = detail
        else:
            ET.SubElement(case, "system-out").text = f"{m.verdict}: {detail}"
    for s in c.status_changes:
        case = ET.SubElement(suite, "testcase", classname=f"{s.label}.{s.case}", name="status")
        if s.regression:
            failures += 1
            ET.SubElement(case, "failure", message=f"status {s.base} -> {s.new}",
                          type="status").text = s.reason or ""
    suite.set("tests", str(len(c.metrics) + len(c.status_changes)))
    suite.set("failures", str(failures))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
