"""The plain progress lines a run prints on a stderr that is not a terminal: a finished case's
median in the tables' units, and a case that keeps running says so, with its elapsed time."""

import io
import threading
import time

from rich.console import Console

from llmbench.core import progress
from llmbench.core.results import CaseResult
from llmbench.core.timing import TimeStats


def _case(name, samples=None, status="ok", reason=None):
    metrics = {"time_ms": TimeStats.from_samples(samples)} if samples else {}
    return CaseResult(name=name, params={}, status=status, reason=reason, metrics=metrics)


def test_finished_line_uses_the_tables_units():
    line = progress.finished_line(3, 8, _case("standard/seq=8192", [14_000.0, 14_420.0, 15_000.0]))
    assert line == "[3/8] standard/seq=8192: ok median 14.4 s"
    assert "e+" not in line
    assert progress.finished_line(1, 2, _case("mha/ctx=48", [0.25, 0.3, 0.35])).endswith(
        "median 300 µs")
    oom = _case("standard/seq=65536", status="oom", reason="CUDA out of memory [12 GiB]")
    assert progress.finished_line(2, 2, oom) == (
        "[2/2] standard/seq=65536: oom (CUDA out of memory [12 GiB])")


def test_still_running_line():
    assert progress.still_running_line("attention standard/seq=8192", 45.3) == (
        "  still running: attention standard/seq=8192 (45 s)")
    assert progress.still_running_line("ddp fsdp", 130) == "  still running: ddp fsdp (2 min 10 s)"


def test_heartbeat_says_a_long_case_is_alive_and_stops():
    lines, lock = [], threading.Lock()

    def emit(line):
        with lock:
            lines.append(line)

    beat = progress.Heartbeat(emit, every_s=0.05, prefix="attention")
    beat.start("standard/seq=8192")
    time.sleep(0.4)
    beat.stop()
    with lock:
        seen = list(lines)
    assert len(seen) >= 2
    assert all(line.startswith("  still running: attention standard/seq=8192 (")
               and line.endswith(" s)") for line in seen)
    time.sleep(0.15)
    assert lines == seen  # nothing after stop
    with progress.Heartbeat(emit, every_s=5.0) as quick:  # a case shorter than the interval
        quick.start("fast")
    assert lines == seen
    assert not any(t.name == "llmbench-heartbeat" for t in threading.enumerate())


def test_heartbeat_restarts_for_the_next_case():
    lines = []
    beat = progress.Heartbeat(lines.append, every_s=0.05)
    beat.start("first")
    time.sleep(0.2)
    beat.start("second")  # the first case's thread ends
    time.sleep(0.2)
    beat.stop()
    names = [line.split(": ", 1)[1].split(" (")[0] for line in lines]
    assert "first" in names and "second" in names
    assert names == sorted(names, key=["first", "second"].index)  # never first after second


def test_heartbeat_lines_go_to_stderr_only(capsys):
    """Printed through a stderr console, the lines leave stdout (a --format json document)
    untouched."""
    err = Console(stderr=True, highlight=False)
    beat = progress.Heartbeat(lambda line: err.print(line, markup=False, highlight=False),
                              every_s=0.05, prefix="kvcache")
    print('{"schema_version": 1}')
    beat.start("mha/ctx=2048")
    time.sleep(0.2)
    beat.stop()
    out, errs = capsys.readouterr()
    assert out == '{"schema_version": 1}\n'
    assert "  still running: kvcache mha/ctx=2048 (0 s)" in errs


def test_default_interval_is_ten_to_fifteen_seconds():
    assert 10 <= progress.HEARTBEAT_S <= 15


def test_plain_lines_keep_brackets():
    buf = io.StringIO()
    console = Console(file=buf, width=200)
    console.print(progress.finished_line(1, 1, _case("x", status="error",
                                                     reason="pip install 'llmbench[plot]'")),
                  markup=False, highlight=False)
    assert "pip install 'llmbench[plot]'" in buf.getvalue()


def test_plain_progress_lines_on_stderr(monkeypatch):
    """Through the CLI: stdout stays the JSON document, stderr has the heartbeat and the
    finished line in human units; -q prints nothing on stderr."""
    import json
    import re

    from tests.conftest import run_cli_inprocess

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.2)
    args = ["attention", "--seq", "1024", "--heads", "4", "--impl", "standard", "--max-time",
            "1", "--no-isolate", "--device", "cpu", "--format", "json"]
    proc = run_cli_inprocess(*args)
    assert json.loads(proc.stdout)["benchmark"] == "attention"
    assert "  still running: attention standard/seq=1024/fwd (" in proc.stderr
    assert re.search(r"^\[1/1\] standard/seq=1024/fwd: ok median \d[\d.]* (s|ms|µs)$",
                     proc.stderr, re.M), proc.stderr
    quiet = run_cli_inprocess(*args, "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
