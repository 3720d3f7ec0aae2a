"""Helpers for tests that signal or look for the processes a command started."""

from __future__ import annotations

import signal

from llmbench.dist.torchrun import processes_with

MARK_ENV = "LLMBENCH_TEST_MARK"


def interruptible() -> None:
    """Popen preexec_fn: SIGINT back to its default, as in a terminal's foreground job.

    A test run started as a background job inherits SIGINT ignored, and an ignored signal stays
    ignored across exec, so Python would never raise KeyboardInterrupt in the child.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def marked(marker: str) -> list[int]:
    """PIDs whose environment carries MARK_ENV=marker (what a test started, children included)."""
    return processes_with(marker, key=MARK_ENV)
