"""`llmbench.run(...)` from Python: what the command runs, as a results document."""

import json
import subprocess
import sys

import pytest

import llmbench
from llmbench.api import UsageError, rows, to_dataframe
from tests.conftest import ROOT, run_cli

ATTENTION = {"seq": [64, 128], "heads": 2, "head_dim": 16, "impl": ["standard", "sdpa"],
             "max_time": 0.2, "isolate": False}
ATTENTION_ARGS = ["--seq", "64,128", "--heads", "2", "--head-dim", "16", "--impl",
                  "standard,sdpa", "--max-time", "0.2", "--no-isolate"]


def test_run_returns_what_the_command_writes(tmp_path):
    doc = llmbench.run("attention", **ATTENTION)
    out = tmp_path / "cli.json"
    proc = run_cli("attention", *ATTENTION_ARGS, "--json", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(out.read_text())
    assert doc.benchmark == cli["benchmark"] == "attention"
    assert doc.config == cli["config"]
    assert [(c.name, c.status, c.params) for c in doc.cases] == [
        (c["name"], c["status"], c["params"]) for c in cli["cases"]]
    for mine, theirs in zip(doc.cases, cli["cases"], strict=True):
        assert set(mine.metrics) == set(theirs["metrics"])  # timings aside, the same figures
        assert mine.metrics["max_abs_error"] == theirs["metrics"]["max_abs_error"]
        assert mine.metrics["flops_per_call"] == theirs["metrics"]["flops_per_call"]


def test_a_deterministic_benchmark_gives_the_same_document(tmp_path):
    doc = llmbench.run("schedule", total=100, warmup=10, kinds=["cosine", "linear"])
    out = tmp_path / "s.json"
    assert run_cli("schedule", "--total", "100", "--warmup", "10", "--kinds", "cosine,linear",
                   "--json", str(out), "-q").returncode == 0
    cli = llmbench.load(out)
    assert doc.model_dump(exclude={"created_at", "env"}) == cli.model_dump(
        exclude={"created_at", "env"})


def test_bad_arguments_raise_the_commands_one_line():
    with pytest.raises(UsageError) as info:
        llmbench.run("attention", kv_heads=3)
    proc = run_cli("attention", "--kv-heads", "3")
    assert proc.stderr.strip() == f"llmbench: error: {info.value}"
    with pytest.raises(UsageError, match=r"attention: no option 'sequence' \(options: batch,"):
        llmbench.run("attention", sequence=3)
    with pytest.raises(UsageError, match="no llmbench command 'atention'"):
        llmbench.run("atention")


def test_rows_and_dataframe():
    doc = llmbench.run("schedule", total=10, warmup=2, kinds=["linear", "constant"])
    table = rows(doc)
    assert [r["case"] for r in table] == [c.name for c in doc.cases]
    assert all(r["status"] == "ok" for r in table)
    frame = to_dataframe(doc)
    assert list(frame["case"]) == [c.name for c in doc.cases]
    assert set(table[0]) <= set(frame.columns)


def test_importing_llmbench_imports_no_torch():
    code = "import sys, llmbench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"
