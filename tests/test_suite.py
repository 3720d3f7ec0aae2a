import json

import pytest

from llmbench.cli.suites import load_suite
from llmbench.core.errors import UsageError
from tests.conftest import ROOT, run_cli

GOOD = """name = "s"
threshold = "5%"

[[bench]]
name = "sched"
command = "schedule"
args = ["--total", "50"]

[[bench]]
name = "prec"
command = "precision"
"""


@pytest.mark.parametrize("content, message", [
    ("name = [", "invalid TOML"),
    ('name = "s"\n', "bench: required field is missing"),
    (GOOD.replace('command = "schedule"', 'command = "speedtest"'),
     ':6: bench.0.command: unknown benchmark command'),
    (GOOD.replace('command = "precision"\n', ''), ":9: bench.1.command: required field"),
    (GOOD.replace('["--total", "50"]', '["--total", "0"]'),
     ":7: bench[0] 'sched' args: --total: Input should be greater than 0"),
    (GOOD.replace('["--total", "50"]', '["--frobnicate"]'),
     ":7: bench[0] 'sched' args: No such option: --frobnicate"),
    (GOOD.replace('["--total", "50"]', '["--json", "x.json"]'),
     ":7: bench.0.args: --json is set by the suite runner"),
    (GOOD.replace('name = "prec"', 'name = "sched"'), "two entries are named 'sched'"),
    (GOOD.replace('threshold = "5%"', 'threshold = "lots"'), ":2: threshold: "),
    (GOOD + 'colour = "red"\n', ":12: bench.1.colour: unknown field"),
])
def test_malformed_suites_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "suite.toml"
    path.write_text(content)
    with pytest.raises(UsageError) as info:
        load_suite(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text, text
    assert "\n" not in text


def test_shipped_suites_parse():
    cpu = load_suite(ROOT / "suites" / "ci-cpu.toml")  # validated through the CLI too
    assert cpu.name == "ci-cpu" and len(cpu.bench) >= 8
    gpu = load_suite(ROOT / "suites" / "ci-gpu.toml", check_invocations=False)
    assert all("--device" in e.args and "cuda" in e.args for e in gpu.bench)


def test_run_writes_results_and_index(tiny_run):
    index = json.loads((tiny_run / "index.json").read_text())
    assert index["suite"] == "tiny" and index["threshold"] == 0.05
    names = [b["name"] for b in index["benchmarks"]]
    assert names == ["attention", "kvcache", "schedule"]
    for b in index["benchmarks"]:
        assert (tiny_run / b["file"]).exists() and b["exit_code"] == 0 and b["wall_s"] >= 0
    assert index["benchmarks"][0]["cases"] == {"ok": 4}


def test_run_rejects_a_bad_suite_before_running(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(GOOD.replace('["--total", "50"]', '["--total", "0"]'))
    proc = run_cli("run", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"llmbench: error: {path}:7:")
    assert not (tmp_path / "out").exists()


def test_validating_a_suite_leaves_the_environment_alone(tmp_path, monkeypatch):
    """An entry with --interpret sets TRITON_INTERPRET=1 for its own cases; validating (and
    running) it must not put later entries' Triton in the interpreter."""
    import os

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[[bench]]\nname = "a"\ncommand = "attention"\n'
                    'args = ["--seq", "64", "--impl", "triton", "--interpret"]\n'
                    '[[bench]]\nname = "b"\ncommand = "attention"\nargs = ["--seq", "64"]\n')
    load_suite(path)
    assert "TRITON_INTERPRET" not in os.environ


def test_resolving_and_planning_change_no_process_state():
    """Every entry of the CPU suite parsed, resolved and planned as a run would: the
    environment, torch's threads and RNG and Python's random state are as they were (what a
    case needs reaches its own process in its payload)."""
    import os
    import random

    import torch

    from llmbench.cli.commands import parse
    from llmbench.core import hardware
    from llmbench.core.benchmark import PlanContext
    from llmbench.core.profiles import select_profile

    suite = load_suite(ROOT / "suites" / "ci-cpu.toml", check_invocations=False)
    before = (dict(os.environ), torch.get_num_threads(), torch.random.get_rng_state(),
              random.getstate())
    hw = hardware.detect()
    for entry in suite.bench:
        bench, config, _ = parse([entry.command, *entry.args])
        instance = bench()
        resolved = instance.resolve(config, hw)
        device = instance.device_of(resolved, hw)
        if bench.name != "tune":  # tune's plan compiles kernels in other processes: slow
            instance.plan(resolved, PlanContext(
                hw=hw, profile=select_profile(hw, None, device).profile, device=device))
    after = (dict(os.environ), torch.get_num_threads(), torch.random.get_rng_state(),
             random.getstate())
    assert after[0] == before[0] and after[1] == before[1]
    assert torch.equal(after[2], before[2]) and after[3] == before[3]


def test_run_exits_with_its_worst_entry_and_passes_fail_on(tmp_path):
    from tests.conftest import run_cli_inprocess

    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[[bench]]\nname = "sched"\ncommand = "schedule"\n'
                    '[[bench]]\nname = "slow"\ncommand = "attention"\nargs = ["--seq", "64", '
                    '"--heads", "2", "--head-dim", "16", "--impl", "standard", "--timeout", '
                    '"0.1"]\n')
    failing = run_cli_inprocess("run", str(path), "--out", str(tmp_path / "a"))
    assert failing.returncode == 1, failing.stderr
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert [b["exit_code"] for b in index["benchmarks"]] == [0, 1]
    assert index["benchmarks"][1]["cases"] == {"error": 1}
    recorded = run_cli_inprocess("run", str(path), "--out", str(tmp_path / "b"), "--fail-on",
                                 "never")
    assert recorded.returncode == 0, recorded.stderr
    assert json.loads((tmp_path / "b" / "slow.json").read_text())["cases"][0]["status"] == \
        "error"


def test_planning_with_interpret_changes_no_environment(hw, monkeypatch):
    """--interpret reaches the cases in their payloads; resolving and planning set nothing."""
    import os

    from llmbench.benches.attention import AttentionBenchmark, AttentionConfig
    from llmbench.core.benchmark import PlanContext
    from llmbench.core.profiles import select_profile

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    bench = AttentionBenchmark()
    config = bench.resolve(AttentionConfig(seqs=[64], impls=["triton"], heads=2, head_dim=16,
                                           device="cpu", dtype="fp32", interpret=True), hw)
    (plan,) = bench.plan(config, PlanContext(hw=hw, profile=select_profile(hw, None, "cpu")
                                             .profile, device="cpu"))
    assert "TRITON_INTERPRET" not in os.environ
    assert plan.unavailable is None and plan.run_args["interpret"] is True


RUNNABLE = GOOD.replace('"--total", "50"', '"--total", "500"')


def test_run_refuses_a_folder_with_results_unless_overwrite(tmp_path):
    from tests.conftest import run_cli_inprocess

    path = tmp_path / "s.toml"
    path.write_text(RUNNABLE)
    out = tmp_path / "out"
    first_run = run_cli_inprocess("run", str(path), "--out", str(out))
    assert first_run.returncode == 0, first_run.stderr
    first = (out / "index.json").read_text()
    (out / "stale.json").write_text("{}")  # a result of some earlier run
    again = run_cli_inprocess("run", str(path), "--out", str(out))
    assert again.returncode == 2
    assert again.stderr.startswith(f"llmbench: error: --out {out}: not empty (index.json, "
                                   "prec.json, sched.json, ...)")
    assert (out / "index.json").read_text() == first  # the baseline is left as it was
    replaced = run_cli_inprocess("run", str(path), "--out", str(out), "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    # the earlier run's files are gone (stale.json with them), the new run's are there
    assert sorted(p.name for p in out.glob("*.json")) == ["index.json", "prec.json",
                                                         "sched.json"]


def test_two_runs_cannot_write_one_folder_at_once(tmp_path):
    """A real run holds --out: stopped (SIGSTOP) once it has taken the folder, a second run
    into it is refused; continued, the first finishes alone."""
    import signal
    import subprocess
    import sys
    import time

    from llmbench.cli.suites import LOCK

    suite = tmp_path / "s.toml"
    suite.write_text(RUNNABLE)
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "llmbench", "run", str(suite), "--out",
                              str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / LOCK).exists() or not (out / LOCK).read_text().strip():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)
        second = run_cli("run", str(suite), "--out", str(out), "--overwrite")
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"llmbench: error: --out {out}: another `llmbench run` is writing there (pid "
            f"{first.pid}); give another folder, or wait for it")
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    index = json.loads((out / "index.json").read_text())
    assert [b["name"] for b in index["benchmarks"]] == ["sched", "prec"]
    # the lock went with the run: a later run may replace its results
    assert run_cli("run", str(suite), "--out", str(out), "--overwrite").returncode == 0
