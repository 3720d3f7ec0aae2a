"""A rank that fails, dies or hangs: reported with its rank and reason, the command exits
non-zero within its time-out, and no process of the run is left behind."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT, run_cli
from tests.processes import MARK_ENV, interruptible, marked

ARGS = ["comm", "--nproc", "2", "--collectives", "all_reduce,broadcast", "--sizes", "1KiB",
        "--iters", "2", "--warmup", "1", "-q"]


def _run_with_fault(tmp_path, fault, *extra, timeout=120):
    marker = uuid.uuid4().hex
    out = tmp_path / "r.json"
    t0 = time.monotonic()
    proc = run_cli(*ARGS, *extra, "--json", str(out), timeout=timeout,
                   env={"LLMBENCH_DIST_FAULT": fault, MARK_ENV: marker})
    wall = time.monotonic() - t0
    doc = json.loads(out.read_text()) if out.exists() else None
    return proc, doc, wall, marker


def test_a_failing_rank_is_named_and_the_group_stopped(tmp_path):
    proc, doc, _, marker = _run_with_fault(tmp_path, "fail:1:0")
    assert proc.returncode == 1
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("llmbench: error: rank 1 failed in case all_reduce/size=1KiB: "
                            "InjectedFault"), proc.stderr
    assert "Traceback" not in proc.stderr
    # The results are written: the failing case with the reason, the rest not run.
    assert doc["cases"][0]["status"] == "error"
    assert doc["cases"][0]["reason"].startswith("rank 1 failed")
    assert doc["cases"][1]["status"] == "skipped"
    assert doc["cases"][1]["reason"].startswith("not run: rank 1 failed")
    assert marked(marker) == []


def test_a_rank_that_dies_silently_is_named_with_its_exit_code(tmp_path):
    proc, doc, _, marker = _run_with_fault(tmp_path, "exit:1:0")
    assert proc.returncode == 1
    assert ("rank 1 exited with code 3 in case all_reduce/size=1KiB without reporting an "
            "error") in proc.stderr
    assert marked(marker) == []


def test_a_hung_rank_is_named_within_the_timeout(tmp_path):
    proc, doc, wall, marker = _run_with_fault(tmp_path, "hang:1:1", "--timeout", "3")
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[0]
    assert line.startswith("llmbench: error: rank 1 hung: no progress for 3 s in case "
                           "broadcast/size=1KiB"), line
    assert "llmbench/dist/faults.py" in line  # where the hung rank is
    assert "rank 0 waiting at torch/distributed" in line  # the other is in the collective
    assert doc["cases"][0]["status"] == "ok"  # the case before the hang is kept
    assert doc["cases"][1]["status"] == "error"
    assert wall < 60  # start-up (~5 s) + the 3 s time-out + stopping
    assert marked(marker) == []


def test_a_set_up_failure_on_one_rank_is_agreed_and_the_run_goes_on(tmp_path):
    proc, doc, _, marker = _run_with_fault(tmp_path, "setup-fail:1:0")
    # The run goes on to the next case, and exits 1 once the results are written.
    assert proc.returncode == 1, proc.stderr
    assert "llmbench: error: 1 of 2 case(s) ended in error" in proc.stderr
    assert doc["cases"][0]["status"] == "error"
    assert doc["cases"][0]["reason"].startswith("rank 1: InjectedFault: injected fault")
    assert doc["cases"][1]["status"] == "ok"
    assert marked(marker) == []


def test_ctrl_c_keeps_finished_cases_and_stops_the_ranks(tmp_path):
    marker = uuid.uuid4().hex
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmbench", "comm", "--nproc", "2", "--collectives",
         "all_reduce,broadcast", "--sizes", "1KiB", "--iters", "2", "--warmup", "1",
         "--json", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=interruptible,
        env={**os.environ, MARK_ENV: marker, "LLMBENCH_DIST_FAULT": "hang:0:1"})
    try:
        first = proc.stderr.readline()
        assert first.startswith("[1/2] all_reduce/size=1KiB: ok"), first
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    doc = json.loads(out.read_text())
    assert [c["status"] for c in doc["cases"]] == ["ok"]
    assert marked(marker) == []


def _gone_within(marker: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_a_killed_parent_takes_torchrun_and_a_hung_rank_with_it():
    """SIGKILL gives llmbench no chance to clean up: torchrun must stop the ranks itself."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmbench", "comm", "--nproc", "2", "--collectives",
         "all_reduce,broadcast", "--sizes", "1KiB", "--iters", "2", "--warmup", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, MARK_ENV: marker, "LLMBENCH_DIST_FAULT": "hang:0:1"})
    try:
        first = proc.stderr.readline()
        assert first.startswith("[1/2] all_reduce/size=1KiB: ok"), first
        assert len(marked(marker)) >= 4  # llmbench, torchrun, two ranks; rank 0 now hangs
        proc.kill()
        proc.wait()
        left = _gone_within(marker, 30)
    finally:
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)
    assert left == []


@pytest.mark.parametrize("args, message", [
    (["comm", "--nproc", "0"], "--nproc: Input should be greater than or equal to 1"),
    (["comm", "--collectives", "all_reduce,allreduce"], "unknown collective 'allreduce'"),
    (["comm", "--sizes", "4MiB,1KiB"], "--sizes: sizes out of order"),
    (["comm", "--sizes", "1GiB:1KiB"], "runs backwards"),
    (["comm", "--backend", "nccl", "--device", "cpu"], "--backend nccl runs on GPUs"),
    (["ddp", "--nproc", "0"], "--nproc: Input should be greater than or equal to 1"),
    (["ddp", "--strategies", "zero"], "--strategies"),
    (["ddp", "--zero-models", "gpt-9"], "unknown preset 'gpt-9'"),
])
def test_bad_distributed_input_is_one_line_and_exit_2(args, message):
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmbench: error: ")
    assert message in lines[0]
