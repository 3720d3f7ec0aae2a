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
        "--max-time", "1", "--no-isolate", "--device", "cpu"]
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


def make_run(directory: Path) -> Path:
    from llmbench.cli.suites import load_suite, run_suite

    directory.mkdir(parents=True, exist_ok=True)
    suite = directory / "suite.toml"
    suite.write_text(SUITE)
    index = run_suite(load_suite(suite), directory / "run")
    assert all(b["exit_code"] == 0 for b in index["benchmarks"]), index
    return directory / "run"
