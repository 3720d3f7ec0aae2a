"""Under a launch that already exists (torchrun, srun): this process is one of the ranks.

Every rank plans the same cases and runs each inline, in lock step with the others; rank 0
alone renders and writes. If a collective fails here, the group cannot go on: `RunFailed`
ends this rank with exit code 1, and the launcher stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from llmbench.benches.base import CasePlan
from llmbench.core.errors import RunFailed
from llmbench.core.isolate import Outcome, run_inline
from llmbench.dist.launch_env import Launch


class InProcessRanks:
    """A `CaseExecutor` for a process that is itself a rank."""

    def __init__(self, *, launch: Launch, backend: str, device: str, target: str,
                 timeout_s: float) -> None:
        self.launch = launch
        self.backend = backend
        self.device = device
        self.target = target
        self.timeout_s = timeout_s
        self.failure: str | None = None

    def __enter__(self) -> InProcessRanks:
        from llmbench.dist import group

        os.environ.update(self.launch.env)  # srun: the variables env:// reads
        group.init(backend=self.backend, device=self.device, local_rank=self.launch.local_rank,
                   timeout_s=self.timeout_s)
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        from llmbench.dist import group

        if exc_type is None and self.failure is None:
            group.finish()
        # otherwise leave without a barrier: the other ranks may be gone

    def run(self, plan: CasePlan,
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
        from llmbench.dist import group

        outcome = run_inline(self.target, {"params": plan.params, **plan.run_args},
                             on_progress=on_progress)
        if group.fatal is not None:
            self.failure = (f"rank {self.launch.rank} failed in case {plan.name}: "
                            f"{group.fatal}")
            raise RunFailed(self.failure)
        return outcome
