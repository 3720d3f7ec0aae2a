"""The built-in decoder-only transformer, its named sizes, and published architectures.

Attributes are imported on first use, so that reading the presets (the CLI's --help does)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_ATTRS = {
    "KVCache": "llmbench.models.transformer",
    "ModelConfig": "llmbench.models.transformer",
    "Transformer": "llmbench.models.transformer",
    "SIZES": "llmbench.models.sizes",
    "build": "llmbench.models.sizes",
    "model_config": "llmbench.models.sizes",
}

__all__ = list(_ATTRS)


def __getattr__(name: str) -> Any:
    if name in _ATTRS:
        return getattr(importlib.import_module(_ATTRS[name]), name)
    raise AttributeError(f"module 'llmbench.models' has no attribute {name!r}")
