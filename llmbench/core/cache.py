"""Where llmbench keeps what it computed once and reads again: $LLMBENCH_CACHE, by default
~/.cache/llmbench (models the alignment loops train, the reference and the reward model, under
`train.reference`, keyed by all that shapes them; device calibrations under
`core.calibration`; under `unsaved/`, result documents that could not be written where asked,
`core.results.keep_unsaved`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("LLMBENCH_CACHE") or Path.home() / ".cache" / "llmbench")
