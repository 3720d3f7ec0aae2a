"""Named sizes of the built-in model, from about 1M to about 100M parameters.

The vocabulary is bytes (256 tokens), which the synthetic and byte-level data sets use, so the
parameters sit in the transformer blocks rather than in a large embedding table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmbench.core.errors import UsageError

if TYPE_CHECKING:  # the model module imports torch; the size table must not
    from llmbench.models.transformer import ModelConfig, Transformer

SIZES: dict[str, dict[str, Any]] = {
    # name: dim, layers, heads (MHA by default; override n_kv_heads for GQA/MQA)
    "tiny": {"dim": 128, "n_layers": 4, "n_heads": 4},       # ~0.8M parameters
    "mini": {"dim": 256, "n_layers": 6, "n_heads": 8},       # ~4.8M
    "base": {"dim": 512, "n_layers": 8, "n_heads": 8},       # ~25M
    "small": {"dim": 768, "n_layers": 14, "n_heads": 12},    # ~99M
}


def model_config(size: str, **overrides: Any) -> ModelConfig:
    from llmbench.models.transformer import ModelConfig

    if size not in SIZES:
        raise UsageError(f"unknown model size {size!r} (choose from {', '.join(SIZES)})")
    return ModelConfig(**{**SIZES[size], **overrides})


def build(size: str, **overrides: Any) -> Transformer:
    from llmbench.models.transformer import Transformer

    return Transformer(model_config(size, **overrides))
