from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Triton kernels run through Triton's interpreter on this CPU-only CI. Triton decides at import
# time (of triton.language) whether its functions are interpreted, and torch may import it early,
# so the whole session sets it before anything else.
os.environ.setdefault("TRITON_INTERPRET", "1")
# A metric a benchmark reports without declaring it fails its case (llmbench.core.runner), so
# every test that runs a benchmark also checks its declarations.
os.environ["LLMBENCH_STRICT_METRICS"] = "1"

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 300, env: dict | None = None,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """`python -m llmbench ARGS` in a fresh process, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "llmbench", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})})


def run_cli_inprocess(*args: str, timeout: float = 300, env: dict | None = None,
                      cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """`llmbench ARGS` through the same entry point in this process: for bad input, which
    stops before any case runs (the interpreter's ~3 s start-up per case adds up). The
    environment is restored afterwards, so what a command sets (TRITON_INTERPRET) stays there."""
    from llmbench.cli.app import main

    saved = dict(os.environ)
    os.environ.update(env or {})
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_bad_input(proc: subprocess.CompletedProcess, message: str) -> None:
    """Bad input: exit 2 and one line on stderr that names the problem, no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="session")
def hw():
    from llmbench.core.hardware import detect

    return detect()


@pytest.fixture
def fast_timing():
    from llmbench.core.timing import TimingPolicy

    return TimingPolicy(warmup_s=0.0, min_warmup_runs=1, min_runs=3, min_time_s=0.0,
                        max_runs=5, max_time_s=1.0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    from tests.ci_fixtures import make_run

    return make_run(tmp_path_factory.mktemp("tiny-run"))
