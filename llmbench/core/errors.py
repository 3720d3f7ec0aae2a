"""Exceptions that carry a one-line message for the user.

`UsageError` is bad input: the CLI prints its message on one line and exits 2. `CaseUnavailable`
and `CaseSkipped` are raised inside a case when it cannot run here; the runner records them as
that status with the message as the reason.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user (flags, files, profiles). Exit code 2, one line, no traceback."""


class CaseUnavailable(RuntimeError):
    """The implementation or backend a case needs does not exist on this device or install."""


class CaseSkipped(RuntimeError):
    """The case could run, but was not (for example: it would not fit in free memory)."""


def one_line(text: str, limit: int = 300) -> str:
    """Collapse a message to its first non-empty line, trimmed to `limit` characters."""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""
