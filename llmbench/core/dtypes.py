"""llmbench's dtype names ("fp32", "fp16", "bf16", "fp64") as torch dtypes: the one map.

torch is imported when a name is looked up, not when this module is, so configs and the CLI can
name dtypes without loading torch.
"""

from __future__ import annotations

from typing import Any

NAMES = ("fp32", "fp16", "bf16", "fp64")


def torch_dtype(name: str) -> Any:
    """The torch dtype named `name` (KeyError for a name llmbench does not know)."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
            "fp64": torch.float64}[name]
