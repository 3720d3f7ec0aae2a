"""Where llmbench keeps what it computed once and reads again: $LLMBENCH_CACHE, by default
~/.cache/llmbench (trained reference models under `train.reference`, device calibrations under
`core.calibration`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("LLMBENCH_CACHE") or Path.home() / ".cache" / "llmbench")
