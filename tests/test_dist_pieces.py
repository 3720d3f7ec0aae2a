"""The launcher's pieces that need no process group: launch detection, status files, the
reading of torchrun's report and of Python stack dumps, fault specs."""

import faulthandler
import subprocess
import sys

import pytest

from llmbench.core.errors import CaseFailed, UsageError
from llmbench.core.isolate import classify_exception
from llmbench.dist import faults, status
from llmbench.dist.launch_env import existing_launch
from llmbench.dist.torchrun import _torchrun_exit_codes, innermost_frame


def test_no_launch_when_alone():
    assert existing_launch({}) is None
    assert existing_launch({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # salloc shell


def test_torchrun_launch_is_read():
    launch = existing_launch({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                              "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (launch.rank, launch.world_size, launch.local_rank, launch.source) == (
        3, 4, 1, "torchrun")
    assert not launch.is_main
    with pytest.raises(UsageError, match="MASTER_ADDR and MASTER_PORT are not"):
        existing_launch({"RANK": "0", "WORLD_SIZE": "2"})


def test_srun_launch_needs_an_address():
    env = {"SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    with pytest.raises(UsageError, match="MASTER_ADDR is not set"):
        existing_launch(env)
    launch = existing_launch({**env, "MASTER_ADDR": "node1"})
    assert (launch.rank, launch.world_size, launch.source) == (1, 8, "slurm")
    assert launch.env == {"RANK": "1", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                          "MASTER_PORT": "29500"}


def test_status_files_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv(status.DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    status.report("setup", case="all_reduce/size=1KiB", index=0)
    status.report("collective")
    got = status.read_all(tmp_path, 2)
    assert list(got) == [1]  # rank 0 never wrote
    assert got[1]["phase"] == "collective" and got[1]["case"] == "all_reduce/size=1KiB"


def test_torchrun_exit_codes_are_read_from_its_report():
    log = """E1129 15:41:32 api.py:1002] failed (exitcode: 1) local_rank: 0 (pid: 17451) of binary
Failures:
[1]:
  time      : 2026-11-29_15:41:17
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 3 (pid: 17452)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 17451)
"""
    assert _torchrun_exit_codes(log) == {1: 3, 0: -15}


def test_innermost_frame_of_a_real_stack_dump(tmp_path):
    code = ("import faulthandler, sys, threading\n"
            "def waiting_here():\n"
            "    faulthandler.dump_traceback(file=sys.stdout, all_threads=True)\n"
            "print(f'0x{threading.main_thread().ident:016x}')\n"
            "waiting_here()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout
    thread, dump = out.split("\n", 1)
    path, line, func = innermost_frame(dump, thread)
    assert func == "waiting_here" and line == 3
    assert innermost_frame("nothing here", None) is None
    assert faulthandler  # the format parsed above is faulthandler's


def test_fault_specs(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(faults.ENV, "setup-fail:1")
    faults.inject("collective")  # not this point
    with pytest.raises(faults.InjectedFault):
        faults.inject("setup")
    monkeypatch.setenv(faults.ENV, "setup-fail:0")
    faults.inject("setup")  # not this rank
    monkeypatch.setenv(faults.ENV, "explode:1")
    with pytest.raises(ValueError, match="KIND:RANK"):
        faults.inject("setup")


def test_an_agreed_failure_keeps_its_status():
    assert classify_exception(CaseFailed("oom", "rank 1: out of memory")) == (
        "oom", "rank 1: out of memory")
    with pytest.raises(ValueError):
        CaseFailed("ok", "fine")


def test_the_collective_check_needs_little_memory_and_finds_a_wrong_element():
    """The result check compares in the buffer's own dtype, a chunk at a time: checking a
    64 MiB buffer takes a few MiB (the float64 copies it once made took 4x the buffer)."""
    import torch

    from llmbench.core.memory import measure_peak
    from llmbench.dist.collectives import _chunks, check_chunks

    size = 64 * 2**20
    buf, built = measure_peak(lambda: _chunks([1.0, 2.0], size // 4, torch.float32,
                                              torch.device("cpu")))
    assert built.peak_bytes <= 1.1 * size  # the buffer itself, built in place
    _, checked = measure_peak(lambda: check_chunks(buf, [1.0, 2.0], "all_gather"))
    assert checked.peak_bytes <= 0.25 * size, checked.peak_bytes  # was 4.25x
    buf[size // 4 - 5] = 3.0
    with pytest.raises(RuntimeError, match=rf"wrong all_gather result: element "
                                           rf"{size // 4 - 5} is 3, expected 2"):
        check_chunks(buf, [1.0, 2.0], "all_gather")
    half = torch.full((10,), 8.0, dtype=torch.float16)
    check_chunks(half, [8.0, 8.0], "all_reduce")
    half[7] = float("nan")
    with pytest.raises(RuntimeError, match="element 7 is nan"):
        check_chunks(half, [8.0, 8.0], "all_reduce")
