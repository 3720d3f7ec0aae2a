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

from tests.conftest import ROOT, run_cli, run_cli_inprocess
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
    # start-up (~5 s quiet, tens of seconds on a loaded runner) + the 3 s time-out + stopping
    assert wall < 120
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
    proc = run_cli_inprocess(*args, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmbench: error: ")
    assert message in lines[0]


# ---------------------------------------------------------------- under a launch of the user's own


def _users_torchrun(tmp_path, fault, *extra, timeout=120):
    """`torchrun --standalone --nproc-per-node 2 -m llmbench comm ...`: llmbench is a rank."""
    out = tmp_path / "r.json"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "--max-restarts=0", "-m", "llmbench", ARGS[0], *ARGS[3:], *extra, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LLMBENCH_DIST_FAULT": fault})
    doc = json.loads(out.read_text()) if out.exists() else None
    return proc, doc, time.monotonic() - t0


def _llmbench_errors(stderr):
    return [line for line in stderr.splitlines() if line.startswith("llmbench: error:")]


def test_under_a_users_torchrun_a_hung_rank_is_named_by_the_watchdog(tmp_path):
    proc, _, wall = _users_torchrun(tmp_path, "hang:1:1", "--timeout", "3")
    assert proc.returncode != 0
    errors = _llmbench_errors(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]  # one report, from the lowest rank
    assert errors[0].startswith("llmbench: error: rank 1 hung: no progress for 3 s in case "
                                "broadcast/size=1KiB"), errors[0]
    assert "rank 1 in its collective phase at llmbench/dist/faults.py" in errors[0]
    assert "rank 0 waiting at torch/distributed" in errors[0]
    # Before the group's own time-out (2 x 3 + 30 s), which would blame the waiting rank.
    assert "operation timeout" not in proc.stderr and wall < 120


def test_under_a_users_torchrun_the_first_failure_is_named_and_finished_cases_kept(tmp_path):
    proc, doc, _ = _users_torchrun(tmp_path, "fail:1:1")
    assert proc.returncode != 0
    reason = ("rank 1 failed in case broadcast/size=1KiB: InjectedFault: injected fault "
              "(LLMBENCH_DIST_FAULT=fail:1:1)")
    assert [e.startswith(f"llmbench: error: {reason}") for e in
            _llmbench_errors(proc.stderr)] == [True], proc.stderr[-3000:]
    assert [c["status"] for c in doc["cases"]] == ["ok", "error"]
    assert doc["cases"][1]["reason"].startswith(reason)


def test_the_hang_report_names_the_connecting_phase_and_nccls_knobs():
    from llmbench.dist.diagnosis import hang_report

    statuses = {0: {"phase": "ready"}, 1: {"phase": "connecting"}}
    frames = {0: ("torch/distributed/distributed_c10d.py", 10, "barrier"),
              1: ("torch/distributed/distributed_c10d.py", 20, "init_process_group")}
    text = hang_report(statuses, frames, 2, 61.0, "nccl")
    assert text.startswith("rank 0, 1 hung while connecting: no progress for 61 s ("), text
    assert "NCCL_SOCKET_IFNAME" in text and "NCCL_DEBUG=INFO" in text
    assert "NCCL" not in hang_report({0: {"phase": "connecting"}}, {}, 1, 5.0, "gloo")


def test_the_watchdog_fires_once_its_rank_stalls(monkeypatch):
    import torch.distributed as dist

    from llmbench.dist import status
    from llmbench.dist.watchdog import Watchdog

    monkeypatch.delenv(status.DIR_ENV, raising=False)
    monkeypatch.setenv("RANK", "0")
    store = dist.HashStore()
    exits = []
    status.publish_to(store)
    try:
        status.report("collective", case="all_reduce/size=1KiB")
        dog = Watchdog(store, rank=0, world_size=2, timeout_s=0.6, poll_s=0.05,
                       exit=exits.append).start()
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
        dog.stop()
    finally:
        status.publish_to(None)
    assert exits == [1]
    # Rank 1 never published; rank 0's main thread is in this test, not waiting in torch.
    assert dog.report.startswith("rank 0, 1 hung: no progress for 1 s in case all_reduce/"
                                 "size=1KiB (rank 0 in its collective phase at "
                                 "test_dist_faults.py:"), dog.report
    assert "rank 1 never started" in dog.report
    assert json.loads(store.get("status/0"))["phase"] == "failed"


def test_a_rank_that_hangs_while_joining_is_reported_in_that_phase(tmp_path):
    """A set-up hang (NCCL's communicator is now built while joining) is not a hang of the
    first case."""
    proc, doc, _, marker = _run_with_fault(tmp_path, "connect-hang:1", "--timeout", "3")
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[0]
    assert line.startswith("llmbench: error: rank 1 hung while connecting: no progress for "
                           "3 s (rank 0 waiting at torch/"), line
    assert "rank 1 in its connecting phase at llmbench/dist/faults.py" in line
    assert "case" not in line
    assert all(c["status"] != "ok" for c in doc["cases"])
    assert marked(marker) == []


def test_under_a_users_torchrun_a_set_up_hang_is_named_in_that_phase(tmp_path):
    proc, _, wall = _users_torchrun(tmp_path, "connect-hang:1", "--timeout", "3")
    assert proc.returncode != 0
    errors = _llmbench_errors(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith("llmbench: error: rank 1 hung while connecting: no progress "
                                "for 3 s (rank 0 waiting at torch/"), errors[0]
    assert "operation timeout" not in proc.stderr and wall < 120
