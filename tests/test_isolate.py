import os
import subprocess
import sys
import time
import uuid

import pytest

from llmbench.core.errors import CaseSkipped, CaseUnavailable
from llmbench.core.isolate import classify_exception, run_inline, run_isolated
from tests.conftest import ROOT
from tests.processes import MARK_ENV, marked

T = "tests.isolate_targets"


def test_ok_value_comes_back_from_another_process():
    import os

    out = run_isolated(f"{T}:ok", {"x": 1}, timeout_s=60)
    assert out.status == "ok"
    assert out.value["echo"] == {"x": 1}
    assert out.value["pid"] != os.getpid()


def test_exception_becomes_error_with_one_line_reason():
    out = run_isolated(f"{T}:raises", None, timeout_s=60)
    assert out.status == "error"
    assert out.reason == "ValueError: boom"
    assert "Traceback" in out.detail


@pytest.mark.parametrize("target, status, reason", [
    ("unavailable", "unavailable", "no such backend here"),
    ("skipped", "skipped", "not worth running"),
])
def test_case_exceptions_map_to_their_status(target, status, reason):
    out = run_isolated(f"{T}:{target}", None, timeout_s=60)
    assert (out.status, out.reason) == (status, reason)


def test_crash_is_recorded_not_raised():
    out = run_isolated(f"{T}:segfault", None, timeout_s=60)
    assert out.status == "error"
    assert out.reason.startswith("crashed: killed by SIGSEGV")
    assert "Fatal Python error" in out.reason
    assert "about to crash" in out.detail


def test_sigkill_is_reported_as_out_of_memory():
    out = run_isolated(f"{T}:sigkill", None, timeout_s=60)
    assert out.status == "oom"
    assert "SIGKILL" in out.reason or "out-of-memory" in out.reason


def test_timeout_kills_the_case():
    t0 = time.monotonic()
    out = run_isolated(f"{T}:hang", None, timeout_s=2)
    assert time.monotonic() - t0 < 10
    assert out.status == "error"
    assert out.reason == "timed out after 2 s (killed)"


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_killed_parent_leaves_no_case_running():
    marker = uuid.uuid4().hex
    parent = subprocess.Popen(
        [sys.executable, "-c", "from llmbench.core.isolate import run_isolated; "
         f"run_isolated('{T}:hang', None, timeout_s=600)"],
        cwd=ROOT, env={**os.environ, MARK_ENV: marker})
    try:
        assert _wait(lambda: len(marked(marker)) == 2, 30)  # the parent and its case
        parent.kill()  # no clean-up runs in the parent
        parent.wait()
        assert _wait(lambda: marked(marker) == [], 5)
    finally:
        for pid in marked(marker):
            os.kill(pid, 9)


def test_exit_without_result():
    out = run_isolated(f"{T}:exits", None, timeout_s=60)
    assert out.status == "error"
    assert out.reason == "exited with code 3 without a result (giving up)"


def test_allocation_failure_is_oom():
    out = run_isolated(f"{T}:huge_allocation", None, timeout_s=120)
    assert out.status == "oom"
    assert out.reason.startswith("DefaultCPUAllocator: can't allocate memory")


def test_unpicklable_result_is_an_error():
    out = run_isolated(f"{T}:unpicklable", None, timeout_s=60)
    assert out.status == "error"
    assert "could not be sent back" in out.reason


def test_unknown_target_is_an_error():
    out = run_isolated("tests.isolate_targets:nope", None, timeout_s=60)
    assert out.status == "error" and "AttributeError" in out.reason


def test_inline_has_the_same_contract():
    assert run_inline(f"{T}:ok", 5).value["echo"] == 5
    out = run_inline(f"{T}:raises", None)
    assert (out.status, out.reason) == ("error", "ValueError: boom")
    assert run_inline(f"{T}:unavailable", None).status == "unavailable"


def test_classify_exception():
    assert classify_exception(CaseUnavailable("x")) == ("unavailable", "x")
    assert classify_exception(CaseSkipped("y")) == ("skipped", "y")
    assert classify_exception(MemoryError())[0] == "oom"
    assert classify_exception(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))[0] \
        == "oom"
    assert classify_exception(KeyError("k")) == ("error", "KeyError: 'k'")


def test_progress_reaches_the_parent_from_a_child_and_inline():
    for run in (lambda cb: run_isolated(f"{T}:reports_progress", None, timeout_s=60,
                                        on_progress=cb),
                lambda cb: run_inline(f"{T}:reports_progress", None, on_progress=cb)):
        seen = []
        out = run(seen.append)
        assert out.status == "ok" and out.value == "done"
        assert [e["step"] for e in seen] == [0, 1, 2]
        assert seen[-1]["loss"] == pytest.approx(1 / 3)
