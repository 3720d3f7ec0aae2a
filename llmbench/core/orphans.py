"""Children that end with the llmbench process that started them.

A case's process or a torchrun group must not outlive llmbench when llmbench itself is killed
(SIGKILL, the OOM killer): nothing would stop a hung case or rank then. On Linux the child asks
the kernel for a signal when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere this is a no-op
and the parent's own clean-up is all there is.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Have `sig` sent to this process when `parent_pid` (the process that started it) ends.

    Call it first thing in the child. If the parent is already gone (it died before the request
    was in place), exit at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)
