"""Published architectures (the numbers that size a KV cache), and Hugging Face config files.

Each preset is a config.json shipped in `hf_configs/` (the fields of the model's published
config.json on the Hugging Face Hub); its record here is read from that document by the same
parser as a user's config file: num_hidden_layers, num_attention_heads, num_key_value_heads
(Falcon-7B: multi_query), head_dim (or hidden_size / num_attention_heads),
max_position_embeddings (Falcon-7B's document leaves it to FalconConfig's default, 2048) and the
sliding window with the layers it applies to (`window_numbers`). Of the presets only
mistral-7b (v0.1) has one: sliding_window 4096 on all 32 layers; qwen2-7b's document names
131072 but sets use_sliding_window false, so its layers attend to every token; the Llama, Gemma
(1) and Falcon documents have none. `llmbench.models.hf` builds the same documents with
transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

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
    sliding_window: int | None = Field(
        None, gt=0, description="tokens a windowed layer attends to, itself included (config.json's"
        " sliding_window); a rolling-buffer cache holds at most this many per windowed layer")
    window_layers: list[int] | None = Field(
        None, description="the windowed layers (0-based); null with a window: every layer")

    @field_validator("kv_heads")
    @classmethod
    def _divides(cls, v: int, info: ValidationInfo) -> int:
        heads = info.data.get("heads")
        if heads and heads % v:
            raise ValueError(f"kv_heads {v} does not divide heads {heads}")
        return v

    @model_validator(mode="after")
    def _window_layers_exist(self) -> Architecture:
        if self.window_layers is not None:
            if self.sliding_window is None:
                raise ValueError("window_layers without a sliding_window")
            bad = [i for i in self.window_layers if not 0 <= i < self.layers]
            if bad:
                raise ValueError(f"window layer {bad[0]} is not one of the {self.layers} layers")
            if len(set(self.window_layers)) != len(self.window_layers):
                raise ValueError("window_layers lists a layer twice")
        return self

    @property
    def layout(self) -> str:
        return layout_name(self.heads, self.kv_heads)

    @property
    def windowed_layers(self) -> int:
        """How many layers attend within the sliding window (0 without one)."""
        if self.sliding_window is None:
            return 0
        return self.layers if self.window_layers is None else len(self.window_layers)

    def kv_bytes_per_token(self, bytes_per_element: int, kv_heads: int | None = None) -> int:
        """2 (K and V) * layers * kv_heads * head_dim * bytes per element."""
        kv = self.kv_heads if kv_heads is None else kv_heads
        return 2 * self.layers * kv * self.head_dim * bytes_per_element

    def kv_cache_bytes(self, bytes_per_element: int, *, seq: int, batch: int = 1,
                       kv_heads: int | None = None, windowed: bool = False) -> int:
        """The cache of `batch` sequences of `seq` tokens. Full: every layer holds every token,
        kv_bytes_per_token * seq * batch. Windowed (a rolling buffer): a windowed layer holds the
        last min(seq, sliding_window) tokens, the others every token:

            2 * kv_heads * head_dim * bytes * batch * (full layers * seq
                                                       + windowed layers * min(seq, window))
        """
        kv = self.kv_heads if kv_heads is None else kv_heads
        per_layer_token = 2 * kv * self.head_dim * bytes_per_element
        win = self.windowed_layers if windowed else 0
        held = (self.layers - win) * seq + win * min(seq, self.sliding_window or seq)
        return per_layer_token * held * batch


# The preset documents: llmbench/models/hf_configs/<preset>.json.
HF_CONFIGS = Path(__file__).with_name("hf_configs")

# What transformers' config classes assume for the fields a config.json may leave out, for the
# model types llmbench builds (`llmbench.models.hf`): the presets and `hf.load_config` read a
# document with these under it, as transformers would build it. (`from_hf_config` reads a
# user's file as written.) Where a class has no num_key_value_heads of its own (llama) it is
# num_attention_heads; Falcon's ffn_hidden_size defaults to 4 x hidden_size, its num_kv_heads
# to num_attention_heads.
HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"max_position_embeddings": 2048, "tie_word_embeddings": False,
              "attention_bias": False, "mlp_bias": False},
    "mistral": {"max_position_embeddings": 131072, "tie_word_embeddings": False,
                "num_key_value_heads": 8},
    "qwen2": {"max_position_embeddings": 32768, "tie_word_embeddings": False,
              "num_key_value_heads": 32},
    "gemma": {"max_position_embeddings": 8192, "tie_word_embeddings": True,
              "attention_bias": False, "head_dim": 256, "num_key_value_heads": 16},
    "falcon": {"max_position_embeddings": 2048, "tie_word_embeddings": True, "bias": False,
               "multi_query": True, "parallel_attn": True, "new_decoder_architecture": False,
               "num_ln_in_parallel_attn": None},
}

# Each preset's Hub repository and its checkpoint's published total (embeddings included):
# `llmbench.models.hf` builds each document with transformers and its count must be this.
_PUBLISHED: dict[str, tuple[str, int]] = {
    "llama-2-7b": ("meta-llama/Llama-2-7b-hf", 6_738_415_616),
    "llama-2-70b": ("meta-llama/Llama-2-70b-hf", 68_976_648_192),
    "llama-3-8b": ("meta-llama/Meta-Llama-3-8B", 8_030_261_248),
    "llama-3-70b": ("meta-llama/Meta-Llama-3-70B", 70_553_706_496),
    "mistral-7b": ("mistralai/Mistral-7B-v0.1", 7_241_732_096),
    "falcon-7b": ("tiiuae/falcon-7b", 6_921_720_704),
    "qwen2-7b": ("Qwen/Qwen2-7B-Instruct", 7_615_616_512),
    "gemma-7b": ("google/gemma-7b", 8_537_680_896),
    "gemma-2b": ("google/gemma-2b", 2_506_172_416),
}


def preset_document(name: str) -> dict[str, Any]:
    """The shipped config.json of a preset, with transformers' defaults under it."""
    data = read_config(HF_CONFIGS / f"{name}.json")[1]
    return {**HF_DEFAULTS.get(data.get("model_type"), {}), **data}


def _preset(name: str, layers: int | None = None) -> Architecture:
    repo, params = _PUBLISHED[name]
    numbers = kv_numbers(preset_document(name), str(HF_CONFIGS / f"{name}.json"), layers=layers)
    return Architecture(name=name, **numbers, params=params if layers is None else None,
                        source=f"{repo}/config.json")


def preset(name: str, *, layers: int | None = None) -> Architecture:
    """A preset; `layers` cuts (or extends) its depth, its windowed layers following the
    document's rule."""
    if name not in PRESETS:
        raise UsageError(f"unknown model {name!r} (presets: {', '.join(PRESETS)}; or "
                         "--config path/to/config.json)")
    return PRESETS[name] if layers is None else _preset(name, layers)


def _first(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def read_config(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(the file, its JSON object): a config.json, or a folder holding one; one-line
    UsageErrors naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
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
    return path, data


def from_hf_config(path: str | Path, *, layers: int | None = None) -> Architecture:
    """Read the KV-cache-relevant numbers from a Hugging Face config.json (no transformers).

    Understands the Llama/Mistral/Qwen/Gemma names and the Falcon/GPT-style aliases; a
    multimodal config's `text_config` is used when the top level has no layer count. `layers`
    replaces the document's layer count (its windowed layers follow the document's rule).
    """
    path, data = read_config(path)
    if _first(data, "num_hidden_layers", "n_layer", "num_layers") is None and isinstance(
            data.get("text_config"), dict):
        data = {**data["text_config"], "_name_or_path": data.get("_name_or_path"),
                "model_type": data["text_config"].get("model_type", data.get("model_type"))}
    name = data.get("_name_or_path") or path.parent.name or path.stem
    return Architecture(name=str(name), **kv_numbers(data, str(path), layers=layers),
                        source=str(path))


# Where the window applies, by model type, when the document does not list `layer_types`
# (transformers' config classes, checked on transformers 5.24): layer i is windowed when
# rule(i, document) holds. Qwen2 and Qwen3 window only with use_sliding_window (their classes
# default it to false) and only the layers from max_window_layers (default 28) up; Qwen2-MoE the
# even-numbered ones below max_window_layers; Gemma-2 the even-numbered ones (every other);
# Gemma-3 all but every sliding_window_pattern-th (default 6). Any other type with a window:
# every layer (Mistral, Mixtral, Phi-3, ...). Types whose config class has a window when the
# document names none: Mistral and Gemma-2, 4096; Qwen2/Qwen3 with use_sliding_window, 4096.
_WINDOW_RULES: dict[str, Any] = {
    "qwen2": lambda i, d: i >= d.get("max_window_layers", 28),
    "qwen3": lambda i, d: i >= d.get("max_window_layers", 28),
    "qwen2_moe": lambda i, d: i % 2 == 0 and i < d.get("max_window_layers", 28),
    "gemma2": lambda i, d: i % 2 == 0,
    "gemma3": lambda i, d: (i + 1) % (d.get("sliding_window_pattern") or 6) != 0,
    "gemma3_text": lambda i, d: (i + 1) % (d.get("sliding_window_pattern") or 6) != 0,
}
_GATED = ("qwen2", "qwen3", "qwen2_moe")  # the window only with use_sliding_window
_DEFAULT_WINDOW = {"mistral": 4096, "gemma2": 4096, "qwen2": 4096, "qwen3": 4096,
                   "qwen2_moe": 4096}


def window_numbers(data: dict[str, Any], layers: int) -> dict[str, Any]:
    """The sliding window of a config document and the layers it applies to, as transformers
    builds the model: {"sliding_window": W or None, "window_layers": the windowed layers' indices,
    or None for every layer (or without a window)}. A document's own `layer_types` list names
    each layer ("sliding_attention" is windowed); otherwise `_WINDOW_RULES`."""
    model_type = data.get("model_type")
    none = {"sliding_window": None, "window_layers": None}
    if (model_type in _GATED or "use_sliding_window" in data) and \
            not data.get("use_sliding_window"):
        return none
    window = data.get("sliding_window", _DEFAULT_WINDOW.get(model_type))
    if not window:  # null, or Qwen2-MoE's 0 when off
        return none
    types = data.get("layer_types")
    if isinstance(types, list):
        windowed = [i for i, t in enumerate(types[:layers]) if t == "sliding_attention"]
    elif model_type in _WINDOW_RULES:
        windowed = [i for i in range(layers) if _WINDOW_RULES[model_type](i, data)]
    else:
        windowed = list(range(layers))
    if not windowed:
        return none
    return {"sliding_window": window,
            "window_layers": None if len(windowed) == layers else windowed}


def kv_numbers(data: dict[str, Any], where: str, *, layers: int | None = None
               ) -> dict[str, Any]:
    """layers, heads, kv_heads, head_dim, hidden_size, context, sliding window and windowed
    layers of a config document: the one parser of the presets' documents and users' files
    (`layers` replaces the document's count). A one-line UsageError starting with `where` when
    a number is missing or impossible."""
    if layers is None:
        layers = _first(data, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(data, "num_attention_heads", "n_head", "num_heads")
    if layers is None:
        raise UsageError(f"{where}: missing num_hidden_layers (or n_layer)")
    if heads is None:
        raise UsageError(f"{where}: missing num_attention_heads (or n_head)")
    kv = _first(data, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
    if kv is None:
        kv = 1 if data.get("multi_query") else heads  # HF's default when the key is absent
    if data.get("model_type") == "falcon":  # FalconAttention reads num_kv_heads (default: the
        # query heads) only in the new decoder architecture; else multi_query means one
        if data.get("new_decoder_architecture"):
            kv = data.get("num_kv_heads") or heads
        else:
            kv = 1 if data.get("multi_query") else heads
    head_dim = data.get("head_dim")
    hidden = _first(data, "hidden_size", "n_embd", "d_model")
    if head_dim is None:
        if hidden is None:
            raise UsageError(f"{where}: missing head_dim, and no hidden_size to derive it from")
        head_dim = hidden // heads
    context = _first(data, "max_position_embeddings", "n_positions", "max_sequence_length",
                     "seq_length")
    numbers = {"layers": layers, "heads": heads, "kv_heads": kv, "head_dim": head_dim,
               "hidden_size": hidden or None, "context": context or None}
    if isinstance(layers, int) and layers > 0:  # else the record's check names the problem
        numbers.update(window_numbers(data, layers))
    try:  # the record checks them (positive, kv heads divide heads)
        checked = Architecture(name="check", **numbers)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {first_problem(exc)[1]}") from None
    return checked.model_dump(include=set(numbers))


PRESETS: dict[str, Architecture] = {name: _preset(name) for name in _PUBLISHED}

