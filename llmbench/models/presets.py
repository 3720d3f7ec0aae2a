"""Published architectures (the numbers that size a KV cache), and Hugging Face config files.

Figures are from each model's config.json on the Hugging Face Hub: num_hidden_layers,
num_attention_heads, num_key_value_heads (Falcon-7B: multi_query), head_dim (or
hidden_size / num_attention_heads) and max_position_embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from llmbench.core.errors import UsageError, first_problem


def layout_name(heads: int, kv_heads: int) -> str:
    """MHA (a key/value head per query head), MQA (one), else GQA-<kv heads>."""
    if kv_heads == heads:
        return "MHA"
    return "MQA" if kv_heads == 1 else f"GQA-{kv_heads}"


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    layers: int = Field(gt=0)
    heads: int = Field(gt=0, description="query heads")
    kv_heads: int = Field(gt=0, description="key/value heads")
    head_dim: int = Field(gt=0)
    hidden_size: int | None = Field(None, gt=0)
    context: int | None = Field(None, gt=0, description="trained context length")
    params: int | None = Field(None, gt=0, description="total parameters, as published")
    source: str = ""

    @field_validator("kv_heads")
    @classmethod
    def _divides(cls, v: int, info: ValidationInfo) -> int:
        heads = info.data.get("heads")
        if heads and heads % v:
            raise ValueError(f"kv_heads {v} does not divide heads {heads}")
        return v

    @property
    def layout(self) -> str:
        return layout_name(self.heads, self.kv_heads)

    def kv_bytes_per_token(self, bytes_per_element: int, kv_heads: int | None = None) -> int:
        """2 (K and V) * layers * kv_heads * head_dim * bytes per element."""
        kv = self.kv_heads if kv_heads is None else kv_heads
        return 2 * self.layers * kv * self.head_dim * bytes_per_element


def _hf(name: str, layers: int, heads: int, kv: int, head_dim: int, hidden: int, context: int,
        params: int, repo: str) -> Architecture:
    return Architecture(name=name, layers=layers, heads=heads, kv_heads=kv, head_dim=head_dim,
                        hidden_size=hidden, context=context, params=params,
                        source=f"{repo}/config.json")


# Parameter counts are the checkpoints' totals (embeddings included).
PRESETS: dict[str, Architecture] = {a.name: a for a in [
    _hf("llama-2-7b", 32, 32, 32, 128, 4096, 4096, 6_738_415_616, "meta-llama/Llama-2-7b-hf"),
    _hf("llama-2-70b", 80, 64, 8, 128, 8192, 4096, 68_976_648_192,
        "meta-llama/Llama-2-70b-hf"),
    _hf("llama-3-8b", 32, 32, 8, 128, 4096, 8192, 8_030_261_248, "meta-llama/Meta-Llama-3-8B"),
    _hf("llama-3-70b", 80, 64, 8, 128, 8192, 8192, 70_553_706_496,
        "meta-llama/Meta-Llama-3-70B"),
    _hf("mistral-7b", 32, 32, 8, 128, 4096, 32768, 7_241_732_096, "mistralai/Mistral-7B-v0.1"),
    _hf("falcon-7b", 32, 71, 1, 64, 4544, 2048, 6_921_720_704, "tiiuae/falcon-7b"),
    _hf("qwen2-7b", 28, 28, 4, 128, 3584, 32768, 7_615_616_512, "Qwen/Qwen2-7B-Instruct"),
    _hf("gemma-7b", 28, 16, 16, 256, 3072, 8192, 8_537_680_896, "google/gemma-7b"),
    _hf("gemma-2b", 18, 8, 1, 256, 2048, 8192, 2_506_172_416, "google/gemma-2b"),
]}


def preset(name: str) -> Architecture:
    if name not in PRESETS:
        raise UsageError(f"unknown model {name!r} (presets: {', '.join(PRESETS)}; or "
                         "--config path/to/config.json)")
    return PRESETS[name]


def _first(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def from_hf_config(path: str | Path) -> Architecture:
    """Read the KV-cache-relevant numbers from a Hugging Face config.json (no transformers).

    Understands the Llama/Mistral/Qwen/Gemma names and the Falcon/GPT-style aliases; a
    multimodal config's `text_config` is used when the top level has no layer count.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a model config (a JSON object was expected)")
    if _first(data, "num_hidden_layers", "n_layer", "num_layers") is None and isinstance(
            data.get("text_config"), dict):
        data = {**data["text_config"], "_name_or_path": data.get("_name_or_path")}
    layers = _first(data, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(data, "num_attention_heads", "n_head", "num_heads")
    if layers is None:
        raise UsageError(f"{path}: missing num_hidden_layers (or n_layer)")
    if heads is None:
        raise UsageError(f"{path}: missing num_attention_heads (or n_head)")
    kv = _first(data, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
    if kv is None:
        kv = 1 if data.get("multi_query") else heads  # HF's default when the key is absent
    head_dim = data.get("head_dim")
    hidden = _first(data, "hidden_size", "n_embd", "d_model")
    if head_dim is None:
        if hidden is None:
            raise UsageError(f"{path}: missing head_dim, and no hidden_size to derive it from")
        head_dim = hidden // heads
    context = _first(data, "max_position_embeddings", "n_positions", "max_sequence_length",
                     "seq_length")
    name = data.get("_name_or_path") or path.parent.name or path.stem
    try:
        return Architecture(name=str(name), layers=int(layers), heads=int(heads),
                            kv_heads=int(kv), head_dim=int(head_dim),
                            hidden_size=int(hidden) if hidden else None,
                            context=int(context) if context else None, source=str(path))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: {first_problem(exc)[1]}") from None
