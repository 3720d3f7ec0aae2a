"""torchrun, tied to the llmbench process that started it.

`python -m llmbench.dist.launcher PARENT_PID TORCHRUN_ARGS...` runs torch.distributed.run with
those arguments. Should PARENT_PID die without stopping the group (SIGKILL, the OOM killer), the
kernel sends torchrun SIGTERM, and torchrun stops its ranks, hung ones included.
"""

from __future__ import annotations

import runpy
import signal
import sys

from llmbench.core.orphans import die_with_parent


def main() -> None:
    die_with_parent(int(sys.argv[1]), signal.SIGTERM)
    sys.argv = ["torch.distributed.run", *sys.argv[2:]]
    runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
