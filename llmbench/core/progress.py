"""Live progress from inside a case (a training loop's step and loss) to the parent's display.

In an isolated child, `report()` writes one JSON line to the file descriptor named by
$LLMBENCH_PROGRESS_FD, which the parent reads while it waits; run inline, it calls the callback
the runner installed. Without either it does nothing, so library code can always call it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

ENV = "LLMBENCH_PROGRESS_FD"
_callback: Callable[[dict[str, Any]], None] | None = None


def report(**fields: Any) -> None:
    if _callback is not None:
        _callback(fields)
        return
    fd = os.environ.get(ENV)
    if fd is None:
        return
    try:
        os.write(int(fd), (json.dumps(fields, default=float) + "\n").encode())
    except OSError:
        pass  # the parent stopped listening; progress is best-effort


@contextlib.contextmanager
def callback(fn: Callable[[dict[str, Any]], None] | None) -> Iterator[None]:
    """Route `report()` calls made in this process to `fn` while the block runs."""
    global _callback
    previous, _callback = _callback, fn
    try:
        yield
    finally:
        _callback = previous


def parse_lines(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Complete JSON lines from `buffer`, and the unfinished rest."""
    *lines, rest = buffer.split(b"\n")
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out, rest
