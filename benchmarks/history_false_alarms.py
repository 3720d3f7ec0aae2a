"""False alarms of `llmbench history check` against `llmbench compare`, on runs of one code.

Runs a suite (default suites/ci-cpu.toml) --runs times in a row on this machine, imports every
run into a fresh history store, and counts what each way of judging them flags. Nothing
changed between the runs, so every flag is a false alarm:

- history check: the series (benchmark, case, metric, environment) whose latest runs sit in a
  new segment (E-divisive means, --alpha, --min-change, over the last --window runs);
- compare: `llmbench compare` with the suite's thresholds (and alpha 0.01) on each pair of
  consecutive runs, as a CI job comparing against the previous run would.

    python benchmarks/history_false_alarms.py                    # 20 runs of ci-cpu
    python benchmarks/history_false_alarms.py --suite my.toml --runs 4 --out /tmp/fa
    python benchmarks/history_false_alarms.py --out /tmp/fa --reuse   # judge those runs again

It prints both counts and exits 0 (a measurement, not a check).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_suite_times(suite_path: Path, runs: int, out: Path) -> list[Path]:
    """`llmbench run SUITE` `runs` times, into out/run00, out/run01, ..."""
    from llmbench.cli.suites import load_suite, run_suite

    suite = load_suite(suite_path)
    dirs = []
    for i in range(runs):
        t0 = time.perf_counter()
        target = out / f"run{i:02d}"
        index = run_suite(suite, target, fail_on="never")
        bad = [b["name"] for b in index["benchmarks"] if b["exit_code"] != 0]
        print(f"run {i + 1}/{runs}: {target} in {time.perf_counter() - t0:.0f} s"
              + (f" (exit codes not 0: {', '.join(bad)})" if bad else ""), flush=True)
        dirs.append(target)
    return dirs


def history_flags(dirs: list[Path], db: Path, args: argparse.Namespace):
    """Every run imported into a fresh store at `db`, then checked."""
    from llmbench.history.check import check
    from llmbench.history.store import open_store, sources

    with open_store(db, create=True) as store:
        # replace: a deterministic entry (schedule, precision) of two runs in the same second
        # writes the very same document (created_at has whole seconds): kept once.
        store.add(sources(dirs), replace=True)
        series = store.series()
    return check(series, window=args.window, alpha=args.alpha, min_change=args.min_change,
                 min_size=args.min_size)


def compare_flags(dirs: list[Path], threshold: float):
    """`llmbench compare` on each consecutive pair: (pairs that failed, regressions,
    improvements, metrics compared)."""
    from llmbench.ci.compare import compare, load_side

    failed = regressions = improvements = compared = 0
    for base, new in pairwise(dirs):
        result = compare(load_side(base), load_side(new), threshold=threshold, alpha=0.01)
        failed += result.failed
        regressions += len(result.regressions)
        improvements += len(result.improvements)
        compared += len(result.metrics)
    return failed, regressions, improvements, compared


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", type=Path, default=ROOT / "suites" / "ci-cpu.toml",
                    help="the suite to run (default: suites/ci-cpu.toml)")
    ap.add_argument("--runs", type=int, default=20, help="how many times to run it")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the runs and the store (default: a new temporary one)")
    ap.add_argument("--reuse", action="store_true",
                    help="judge the run folders already in --out (run00, run01, ...) instead of "
                    "running the suite again")
    ap.add_argument("--window", type=int, default=30, help="history check --window")
    ap.add_argument("--alpha", type=float, default=0.01, help="history check --alpha")
    ap.add_argument("--min-change", type=float, default=0.05,
                    help="history check --min-change, as a fraction (0.05 = 5%%)")
    ap.add_argument("--min-size", type=int, default=3, help="history check --min-size")
    args = ap.parse_args(argv)
    if args.runs < 2:
        ap.error("--runs must be at least 2")

    from llmbench.ci.suite import parse_suite
    from llmbench.core.errors import UsageError

    try:
        suite, _ = parse_suite(args.suite)
        out = args.out or Path(tempfile.mkdtemp(prefix="history-false-alarms-"))
        out.mkdir(parents=True, exist_ok=True)
        if args.reuse:
            dirs = sorted(d for d in out.glob("run[0-9]*") if d.is_dir())
            if len(dirs) < 2:
                raise UsageError(f"--reuse: fewer than 2 run folders in {out}")
            args.runs = len(dirs)
        else:
            dirs = run_suite_times(args.suite, args.runs, out)
        report = history_flags(dirs, out / "history.sqlite", args)
        failed, regressions, improvements, compared = compare_flags(dirs, suite.threshold)
    except UsageError as exc:
        print(f"history_false_alarms: error: {exc}", file=sys.stderr)
        return 2
    pairs = len(dirs) - 1
    print(f"\n{args.runs} runs of {suite.name} ({args.suite}), in {out}")
    print(f"history check: {len(report.shifts)} of {report.checked} series flagged "
          f"({len(report.regressions)} regression(s), {len(report.improvements)} "
          f"improvement(s); window {args.window}, alpha {args.alpha:g}, min change "
          f"{args.min_change:.0%}, min size {args.min_size}; {report.too_short} series too "
          f"short to check)")
    for s in sorted(report.shifts, key=lambda s: (s.benchmark, s.case, s.metric)):
        print(f"  {s.verdict}: {s.benchmark}: {s.case}: {s.metric} {s.change:+.1%} since run "
              f"{s.run_id} (p {s.p_value:.2g})")
    print(f"compare (suite thresholds, default {suite.threshold:.0%}, alpha 0.01) on "
          f"{pairs} consecutive pairs: {failed} pair(s) would fail; {regressions} "
          f"regression(s) and {improvements} improvement(s) among {compared} metric "
          f"comparisons")
    return 0


if __name__ == "__main__":
    sys.exit(main())
