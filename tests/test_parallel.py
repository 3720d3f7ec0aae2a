"""Isolated cases several at a time (llmbench.core.parallel), with real child processes."""

import time

import pytest

from llmbench.core.benchmark import CasePlan
from llmbench.core.parallel import ParallelCases, default_jobs
from tests.processes import MARK_ENV, marked

T = "tests.isolate_targets"


def plan(name, target=None, unavailable=None, **params):
    return CasePlan(name=name, params=params, target=target, unavailable=unavailable)


def test_outcomes_come_back_in_plan_order_with_each_plans_own_target():
    plans = [plan("a", x=1), plan("b", target=f"{T}:raises"), plan("c", x=3),
             plan("skip", unavailable="not here")]
    with ParallelCases(f"{T}:ok", plans, jobs=2, timeout_s=60) as running:
        outcomes = [running.run(p) for p in plans[:3]]
    assert [o.status for o in outcomes] == ["ok", "error", "ok"]
    assert outcomes[0].value["echo"] == {"params": {"x": 1}}
    assert outcomes[2].value["echo"] == {"params": {"x": 3}}
    assert "boom" in outcomes[1].reason
    assert outcomes[0].value["pid"] != outcomes[2].value["pid"]  # a process per case


def test_cases_run_at_once():
    plans = [plan(f"s{i}", seconds=1.0) for i in range(2)]
    t0 = time.monotonic()
    with ParallelCases(f"{T}:sleeps", plans, jobs=2, timeout_s=60) as running:
        outcomes = [running.run(p) for p in plans]
    wall = time.monotonic() - t0
    assert [o.status for o in outcomes] == ["ok", "ok"]
    # Each sleeps 1 s in its own process; one at a time would take over 2 s plus two starts.
    starts = [o.value["start"] for o in outcomes]
    assert abs(starts[0] - starts[1]) < 0.9, starts
    assert wall < 2 + 3, wall


def test_an_exception_cancels_running_and_queued_cases(monkeypatch):
    mark = f"parallel-cancel-{time.monotonic_ns()}"
    monkeypatch.setenv(MARK_ENV, mark)  # the children inherit it
    plans = [plan(f"h{i}") for i in range(3)]
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt), \
            ParallelCases(f"{T}:hang", plans, jobs=2, timeout_s=600):
        deadline = time.monotonic() + 30
        while len(marked(mark)) < 2:
            assert time.monotonic() < deadline, "the children did not start"
            time.sleep(0.1)
        raise KeyboardInterrupt
    assert time.monotonic() - t0 < 30
    assert marked(mark) == []  # both killed, the third never started


def test_bad_arguments():
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        ParallelCases(f"{T}:ok", [], jobs=0, timeout_s=1)
    with pytest.raises(ValueError, match="distinct case names"), \
            ParallelCases(f"{T}:ok", [plan("x"), plan("x")], jobs=1, timeout_s=1):
        pass
    assert default_jobs() >= 1
