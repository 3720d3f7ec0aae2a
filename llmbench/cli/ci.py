"""`llmbench run | compare | export | report`: what a CI job does with benchmark results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from llmbench.cli.common import DbOption, FailOnOption, QuietOption, stderr, stdout

if TYPE_CHECKING:
    from llmbench.history.check import CheckReport
    from llmbench.report.history import Trends


def run(
    suite: Annotated[Path, typer.Argument(help="A suite TOML file (see suites/).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the results and index.")],
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the results already in --out (its *.json files); without "
        "it a run refuses a folder that is not empty.")] = False,
    fail_on: FailOnOption = "error",
    quiet: QuietOption = False,
) -> None:
    """Run a suite of benchmarks: one results file per entry and an index, in --out.

    --out must be empty (or --overwrite given), and one run at a time writes into it. Every
    entry is validated first (flags, values, devices), so a mistake stops the run before
    anything is measured. --fail-on applies to every entry that does not set it itself; the
    run exits with the worst of its entries' exit codes (130 when interrupted).
    """
    from llmbench.cli.suites import load_suite, run_suite

    parsed = load_suite(suite)
    err = stderr()
    err.quiet = quiet
    total = len(parsed.bench)

    def on_entry(i, entry, record) -> None:  # noqa: ANN001
        cases = ", ".join(f"{n} {s}" for s, n in (record.get("cases") or {}).items()) or \
            record.get("reason", "no results")
        state = "ok" if record["exit_code"] == 0 else f"exit {record['exit_code']}"
        err.print(f"[{i + 1}/{total}] {entry.name} ({entry.command}): {state}, {cases}, "
                  f"{record['wall_s']:.1f} s", highlight=False, markup=False)

    index = run_suite(parsed, out, on_entry=on_entry, fail_on=fail_on, overwrite=overwrite,
                      on_start=lambda: err.print(f"suite {parsed.name}: {total} benchmark(s) "
                                                 f"-> {out}", highlight=False))
    wall = sum(b["wall_s"] for b in index["benchmarks"])
    err.print(f"done in {wall:.1f} s; compare with: llmbench compare BASELINE {out}",
              highlight=False)
    if index.get("interrupted"):
        raise typer.Exit(130)
    worst = max((b["exit_code"] for b in index["benchmarks"]), default=0)
    if worst:
        raise typer.Exit(worst)


def compare(
    base: Annotated[Path, typer.Argument(help="Baseline: a results file or a run directory.")],
    new: Annotated[Path, typer.Argument(help="New: a results file or a run directory.")],
    threshold: Annotated[str | None, typer.Option(
        help="Relative change that can count as a regression, e.g. 5%. [default: the suite's "
        "threshold, else 5%]")] = None,
    alpha: Annotated[float, typer.Option(
        help="Significance level of the Mann-Whitney U test on raw samples.", min=1e-9,
        max=0.5)] = 0.01,
    fmt: Annotated[Literal["table", "json", "markdown"], typer.Option(
        "--format", help="table: rich table; json: the comparison as JSON; markdown: "
        "pull-request markdown.")] = "table",
    markdown: Annotated[bool, typer.Option(
        "--markdown", hidden=True, help="Old spelling of --format markdown.")] = False,
    junit: Annotated[Path | None, typer.Option(
        help="Also write JUnit XML (one testcase per compared metric) to this file.",
        dir_okay=False)] = None,
    show_all: Annotated[bool, typer.Option(
        "--all", help="List every compared metric, not only those that moved.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Compare two runs: exit 0 without regression, 1 with one, 2 on bad input.

    A metric regresses when it moves in its bad direction beyond the threshold and, where both
    runs kept raw samples, the difference is significant (Mann-Whitney U, --alpha). A case that
    was ok and is not any more regresses too.
    """
    from llmbench.ci.compare import compare as run_compare
    from llmbench.ci.compare import load_side, parse_threshold
    from llmbench.core.results import write_atomic
    from llmbench.report import compare as out

    base_side, new_side = load_side(base), load_side(new)
    limit = parse_threshold(threshold) if threshold is not None else _suite_threshold(new)
    result = run_compare(base_side, new_side, threshold=limit, alpha=alpha)
    fmt = "markdown" if markdown else fmt
    if fmt == "markdown":
        sys.stdout.write(out.markdown(result, everything=show_all))
    elif fmt == "json":
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        out.render(result, stdout(), everything=show_all)
    if junit is not None:
        write_atomic(out.junit(result), junit)
    raise typer.Exit(1 if result.failed else 0)


def _suite_threshold(path: Path) -> float:
    index = path / "index.json"
    if path.is_dir() and index.exists():
        try:
            return float(json.loads(index.read_text()).get("threshold", 0.05))
        except (ValueError, TypeError):
            pass
    return 0.05


def export(
    results: Annotated[Path, typer.Argument(help="A results file or a run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the exported files.")],
    fmt: Annotated[Literal["github-action-benchmark"], typer.Option(
        "--format", help="github-action-benchmark: customSmallerIsBetter and "
        "customBiggerIsBetter JSON files.")] = "github-action-benchmark",
    quiet: QuietOption = False,
) -> None:
    """Export results for other tools: benchmark-action/github-action-benchmark's files."""
    from llmbench.ci.compare import load_side
    from llmbench.ci.export import github_action_benchmark
    from llmbench.core.results import write_atomic

    smaller, bigger = github_action_benchmark(load_side(results))
    for name, entries in (("smaller-is-better.json", smaller),
                          ("bigger-is-better.json", bigger)):
        write_atomic(json.dumps(entries, indent=2) + "\n", out / name)
    if not quiet:
        stderr().print(f"wrote {len(smaller)} smaller-is-better and {len(bigger)} "
                       f"bigger-is-better entries to {out}", highlight=False)


def report(
    results: Annotated[Path | None, typer.Argument(
        help="A results file or a run directory (optional with --history).")] = None,
    html_path: Annotated[Path | None, typer.Option(
        "--html", help="Write a self-contained HTML page here.", dir_okay=False)] = None,
    png: Annotated[Path | None, typer.Option(
        help="Write the plots as PNG files into this directory.", file_okay=False)] = None,
    title: Annotated[str, typer.Option(help="The page title.")] = "llmbench report",
    with_history: Annotated[bool, typer.Option(
        "--history", help="Add the results store's trends: `history check`'s table and a "
        "chart per series, change points marked (with RESULTS, only that run's series).")
    ] = False,
    window: Annotated[int, typer.Option(
        help="With --history: the last N runs of each series, as `history check --window`.",
        min=6)] = 30,
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """A self-contained HTML page of a run: every table, and plots (with the plot extra);
    with --history, the trends of the results store (`llmbench history`)."""
    from llmbench.ci.compare import load_side
    from llmbench.core.errors import UsageError
    from llmbench.core.results import write_atomic
    from llmbench.report.html import build

    if html_path is None and png is None:
        raise UsageError("give --html PATH and/or --png DIR")
    if results is None and not with_history:
        raise UsageError("give a results file or run directory, and/or --history")
    side = load_side(results) if results is not None else None
    trends = None
    if with_history:
        trends = _trends(db, window, None if side is None else set(side.docs))
    page, images, hint = build(side, title=title, history=trends)
    err = stderr()
    err.quiet = quiet
    if hint:
        err.print(hint, highlight=False)
    if html_path is not None:
        write_atomic(page, html_path)
        err.print(f"wrote {html_path} ({len(images)} plot(s) embedded)", highlight=False)
    if png is not None and images:
        png.mkdir(parents=True, exist_ok=True)
        for name, data in images.items():
            (png / name).write_bytes(data)
        err.print(f"wrote {len(images)} PNG file(s) to {png}", highlight=False)


def _trends(db: Path | None, window: int, labels: set[str] | None
            ) -> tuple[CheckReport, Trends, str]:
    """`history check` over the store at `db` (only the series of `labels`, when given),
    with every judged series kept for the charts."""
    from llmbench.core.errors import UsageError
    from llmbench.history.check import check
    from llmbench.history.store import guarded, open_store
    from llmbench.report.history import Trends

    with open_store(db) as store, guarded(store.path):
        found = store.series()
        runs, where = store.run_count(), str(store.path)
    if labels is not None:
        found = [s for s in found if s.label in labels]
        if not found:
            raise UsageError(f"{where}: no series of {', '.join(sorted(labels))} in the store")
    trends = Trends()
    result = check(found, window=window, on_series=trends.add)
    return result, trends, f"{where} ({runs} runs)"
