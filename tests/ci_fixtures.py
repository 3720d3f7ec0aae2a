"""A small real run directory for the CI-side tests (compare, export, report)."""

from __future__ import annotations

from pathlib import Path

SUITE = """
name = "tiny"
threshold = "5%"

[[bench]]
name = "attention"
command = "attention"
args = ["--seq", "64,128", "--heads", "2", "--head-dim", "16", "--impl", "standard,sdpa-flash",
        "--max-time", "{max_time}", "--no-isolate", "--device", "cpu"]
thresholds = { peak_memory_bytes = "50%" }

[[bench]]
name = "kvcache"
command = "kvcache"
args = ["--model", "falcon-7b", "--no-measure"]

[[bench]]
name = "schedule"
command = "schedule"
args = ["--total", "100", "--warmup", "10"]
"""


# compare's exact test needs 5 samples a side to reach alpha 0.01: a run on a loaded machine
# that timed fewer (each sample took longer than --max-time / 5) is repeated with more time.
ENOUGH_SAMPLES = 5


def make_run(directory: Path) -> Path:
    import json

    from llmbench.cli.suites import load_suite, run_suite

    directory.mkdir(parents=True, exist_ok=True)
    for attempt, max_time in enumerate((1, 3, 9)):
        suite = directory / f"suite{attempt}.toml"
        suite.write_text(SUITE.replace("{max_time}", str(max_time)))
        run = directory / f"run{attempt}"
        index = run_suite(load_suite(suite), run)
        assert all(b["exit_code"] == 0 for b in index["benchmarks"]), index
        cases = json.loads((run / "attention.json").read_text())["cases"]
        if all(len(c["metrics"]["time_ms"]["samples"]) >= ENOUGH_SAMPLES for c in cases):
            break
    final = directory / "run"
    run.rename(final)
    return final
