"""Exceptions that carry a one-line message for the user.

`UsageError` is bad input: the CLI prints its message on one line and exits 2; `OutputError`,
a file that could not be written, exits 1 the same way. `CaseUnavailable`
and `CaseSkipped` are raised inside a case when it cannot run here; the runner records them as
that status with the message as the reason.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user (flags, files, profiles). Exit code 2, one line, no traceback."""


class OutputError(RuntimeError):
    """A file the user asked for could not be written (disk full, no permission): exit code 1,
    one line naming the path and the operating system's reason."""


class RunFailed(RuntimeError):
    """The run as a whole cannot go on (a rank of its process group failed): exit code 1."""


class CaseUnavailable(RuntimeError):
    """The implementation or backend a case needs does not exist on this device or install."""


class CaseSkipped(RuntimeError):
    """The case could run, but was not (for example: it would not fit in free memory)."""


class CaseFailed(RuntimeError):
    """A case that ended with a given status (one of the result statuses) and reason, decided
    elsewhere: the ranks of a process group agree on one outcome and all raise it."""

    def __init__(self, status: str, reason: str) -> None:
        if status not in ("oom", "skipped", "unavailable", "error"):
            raise ValueError(f"not a failure status: {status!r}")
        super().__init__(reason)
        self.status = status


def one_line(text: str, limit: int = 300) -> str:
    """Collapse a message to its first non-empty line, trimmed to `limit` characters."""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def first_problem(exc: Exception, *, plain: bool = False) -> tuple[tuple, str]:
    """(location, message) of a validation error's first problem, as a user should read it:
    pydantic's "Value error, " prefix dropped. `plain`: a missing field is "required field is
    missing" and an unexpected one "unknown field" (for files people write by hand). Any other
    exception: no location, its own text."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return (), str(exc)
    err = errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if plain and err["type"] == "missing":
        msg = "required field is missing"
    elif plain and err["type"] == "extra_forbidden":
        msg = "unknown field"
    return tuple(err["loc"]), msg
