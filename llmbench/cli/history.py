"""`llmbench history add | show | export | import | check`: result documents kept run after
run in one SQLite file (`llmbench.history.store`), and the change points in their series
(`llmbench.history.check`). The store and the checks are imported inside the commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from llmbench.cli.common import DbOption, OutputFormat, QuietOption, stderr, stdout

if TYPE_CHECKING:
    from llmbench.history.store import Series

history = typer.Typer(
    no_args_is_help=True,
    help="Keep results run after run in one SQLite file and find where a figure changed "
    "(change-point detection over the runs, not two runs compared).")

HistoryFormatOption = Annotated[OutputFormat, typer.Option(
    "--format", help="table: rich table on stdout; json: the same as JSON on stdout.")]
FamilyName = Literal["time", "memory", "error", "other"]


@history.command("add")
def add(
    results: Annotated[list[Path], typer.Argument(
        help="Result files and run directories (as `llmbench run` writes them).")],
    commit: Annotated[str | None, typer.Option(
        help="The git commit the results are of. [default: the one each document recorded "
        "(env.git_commit)]")] = None,
    branch: Annotated[str | None, typer.Option(
        help="The git branch the results are of (documents do not record one).")] = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Import a document already in the store again (its old run is "
        "removed); without it such a document is refused.")] = False,
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """Import result documents into the store, all in one transaction: a bad or duplicate
    document stops the import with nothing added, and an import that is killed leaves the
    store as it was."""
    from llmbench.history.store import guarded, open_store, sources

    err = stderr()
    err.quiet = quiet

    def added(run_id, item, doc) -> None:  # noqa: ANN001
        err.print(f"run {run_id}: {item.label or doc.benchmark} from {item.path}",
                  highlight=False, soft_wrap=True)

    with open_store(db, create=True) as store, guarded(store.path):
        count = store.add(sources(results), commit=commit, branch=branch, replace=replace,
                          on_added=added)
        total = store.run_count()
    err.print(f"added {count} run(s) to {store.path} ({total} in all)", highlight=False,
              soft_wrap=True)


@history.command("show")
def show(
    benchmark: Annotated[str | None, typer.Option(
        help="Only series of this benchmark or suite entry (* and ? match any text).")] = None,
    case: Annotated[str | None, typer.Option(
        help="Only series of this case (* and ? match any text).")] = None,
    metric: Annotated[str | None, typer.Option(
        help="Only series of this metric (* and ? match any text).")] = None,
    fmt: HistoryFormatOption = "table",
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """The series in the store: one row per benchmark, case, metric and environment, with a
    sparkline of its values (a timed metric's median per run), oldest first."""
    from fnmatch import fnmatchcase

    from llmbench.history.store import guarded, open_store

    def keep(pattern: str | None, *names: str) -> bool:
        return pattern is None or any(fnmatchcase(n, pattern) for n in names)

    with open_store(db) as store, guarded(store.path):
        found = [s for s in store.series()
                 if keep(benchmark, s.label, s.benchmark) and keep(case, s.case)
                 and keep(metric, s.metric)]
    if fmt == "json":
        sys.stdout.write(_series_json(found) + "\n")
        return
    from llmbench.report.history import render_series

    render_series(found, stdout(), quiet=quiet)


def _series_json(found: list[Series]) -> str:
    import json
    from dataclasses import asdict

    return json.dumps([{"benchmark": s.label, "case": s.case, "metric": s.metric,
                        "fingerprint": s.fingerprint, "points": [asdict(p) for p in s.points]}
                       for s in found], indent=2)


@history.command("export")
def export(
    file: Annotated[Path, typer.Argument(
        help="The file to write the whole store to (replaced atomically).", dir_okay=False)],
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """Copy the store into one self-contained SQLite file (SQLite's backup API: consistent
    even while an import runs), to move it between CI jobs; `history import` merges it."""
    from llmbench.history.store import guarded, open_store

    with open_store(db) as store, guarded(store.path):
        count = store.export(file)
    err = stderr()
    err.quiet = quiet
    err.print(f"wrote {count} run(s) to {file}", highlight=False, soft_wrap=True)


@history.command("import")
def import_(
    file: Annotated[Path, typer.Argument(
        help="A store file, as `history export` writes it.", dir_okay=False)],
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """Merge the runs of another store file that are not in this one yet (the same document
    counts once), in one transaction."""
    from llmbench.history.store import guarded, open_store

    with open_store(db, create=True) as store, guarded(store.path):
        added, present = store.merge(file)
        total = store.run_count()
    err = stderr()
    err.quiet = quiet
    err.print(f"added {added} run(s) from {file} ({present} already there; {total} in all)",
              highlight=False, soft_wrap=True)


@history.command("check")
def check(
    window: Annotated[int, typer.Option(
        help="Check each series over its last N runs.", min=6)] = 30,
    metric_family: Annotated[FamilyName | None, typer.Option(
        "--metric-family", help="Only metrics of this family: time (ms, s), memory (bytes), "
        "error (numerical errors), other; from each metric's declaration, else its unit.")
    ] = None,
    alpha: Annotated[float, typer.Option(
        help="Significance level of the permutation test.", min=1e-4, max=0.5)] = 0.01,
    min_change: Annotated[str, typer.Option(
        help="Smallest relative change of the segment means reported, e.g. 5%.")] = "5%",
    min_size: Annotated[int, typer.Option(
        help="Fewest runs a segment holds: a change shows once this many runs follow it.",
        min=2)] = 3,
    permutations: Annotated[int, typer.Option(
        help="Permutations of the significance test.", min=19, max=100000)] = 999,
    seed: Annotated[int, typer.Option(help="Seed of the permutations.")] = 0,
    fmt: HistoryFormatOption = "table",
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """Find where each series changed: E-divisive means with a permutation test over the
    last --window runs of one environment. Every series whose latest runs sit in a new
    segment is listed (the run and commit where it began, the change of the segment means,
    p); exit 1 when one moved the metric's bad way (a regression), else 0; 2 on bad input.
    """
    from llmbench.ci.compare import parse_threshold
    from llmbench.core.errors import UsageError
    from llmbench.history.check import check as run_check
    from llmbench.history.store import guarded, open_store

    least = parse_threshold(min_change)
    if window < 2 * min_size:
        raise UsageError(f"--window {window}: must be at least twice --min-size ({min_size})")
    with open_store(db) as store, guarded(store.path):
        found = store.series()
    result = run_check(found, window=window, family=metric_family, alpha=alpha,
                       min_change=least, min_size=min_size, permutations=permutations,
                       seed=seed)
    if fmt == "json":
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        from llmbench.report.history import render_check

        render_check(result, stdout())
    raise typer.Exit(1 if result.failed else 0)


