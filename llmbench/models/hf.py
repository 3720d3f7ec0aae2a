"""Hugging Face architectures: load a config document, count its parameters, build it.

A spec is a preset (its config.json ships in `hf_configs/`, see `presets.py`) or a user's
config.json (or a folder holding one). `load_config` reads and checks it without torch or
transformers, and can cut its depth (`layers`) keeping its widths; `HFConfig.param_count` is the
count transformers' model will have, from the widths alone; `build` makes that model with
random weights (`AutoModelForCausalLM.from_config`: nothing is downloaded). transformers is
imported only by `build` (the optional `hf` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmbench.core.errors import UsageError, first_problem, one_line
from llmbench.models.presets import HF_CONFIGS, HF_DEFAULTS, PRESETS, kv_numbers, read_config

# The model types whose parameter layout `HFConfig.param_count` knows (and `build` builds).
SUPPORTED = ("llama", "mistral", "qwen2", "gemma", "falcon")


def supported_model_types() -> tuple[str, ...]:
    return SUPPORTED


class HFConfig(BaseModel):
    """A checked config document: the raw dict transformers is given, and the figures that
    size the model (as transformers reads them, its defaults filled in)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str = Field(description="the config.json read")
    model_type: str
    raw: dict[str, Any] = Field(description="the document, num_hidden_layers as cut")
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0, description="the MLP width (Falcon: ffn_hidden_size)")
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int | None = Field(None, gt=0)
    tie_word_embeddings: bool
    # The parameter layout of the model type, read from the document.
    qkv_bias: bool = Field(description="the query/key/value projections carry biases")
    o_bias: bool = Field(description="the attention output projection carries a bias")
    mlp_bias: bool
    mlp_matrices: int = Field(description="3: gated (SwiGLU, GeGLU); 2: up and down (Falcon)")
    norms_per_layer: int
    norm_bias: bool = Field(description="LayerNorm (weight and bias), not RMSNorm (weight)")

    def param_count(self) -> int:
        """Embeddings, per layer the attention projections (GQA's narrower K and V, biases)
        the MLP and the norms, the final norm, and the output head unless it is tied."""
        h, inter, vocab = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        attention = h * (q + 2 * kv) + q * h
        attention += (q + 2 * kv) * self.qkv_bias + h * self.o_bias
        mlp = self.mlp_matrices * h * inter + ((self.mlp_matrices - 1) * inter + h) * self.mlp_bias
        norm = h * (2 if self.norm_bias else 1)
        layer = attention + mlp + self.norms_per_layer * norm
        head = 0 if self.tie_word_embeddings else vocab * h
        return vocab * h + self.num_hidden_layers * layer + norm + head


def _positive(data: dict[str, Any], key: str, where: str, default: Any = None) -> int:
    value = data.get(key, default)
    if value is None:
        raise UsageError(f"{where}: missing {key}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: {key} must be a positive integer (got {value!r})")
    return value


def _flag(data: dict[str, Any], key: str, where: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false (got {value!r})")
    return value


def _layout(model_type: str, data: dict[str, Any], where: str) -> dict[str, Any]:
    """The parameter layout transformers builds for this model type (its modeling file)."""
    if model_type == "falcon":
        bias = _flag(data, "bias", where)
        if not _flag(data, "parallel_attn", where):
            norms = 2  # input_layernorm, post_attention_layernorm
        else:
            ln = data.get("num_ln_in_parallel_attn")
            if ln is None and _flag(data, "new_decoder_architecture", where):
                ln = 2
            norms = 2 if ln == 2 else 1  # ln_attn and ln_mlp, or input_layernorm
        return {"qkv_bias": bias, "o_bias": bias, "mlp_bias": bias, "mlp_matrices": 2,
                "norms_per_layer": norms, "norm_bias": True}
    layout = {"qkv_bias": False, "o_bias": False, "mlp_bias": False, "mlp_matrices": 3,
              "norms_per_layer": 2, "norm_bias": False}
    if model_type in ("llama", "gemma"):
        bias = _flag(data, "attention_bias", where)
        layout.update(qkv_bias=bias, o_bias=bias)
    if model_type == "llama":
        layout["mlp_bias"] = _flag(data, "mlp_bias", where)
    if model_type == "qwen2":
        layout["qkv_bias"] = True
    return layout


def _unsupported(model_type: Any, where: str) -> UsageError:
    return UsageError(f"{where}: model_type {model_type!r} is not supported (supported: "
                      f"{', '.join(SUPPORTED)})")


def _locate(spec: str) -> tuple[str | None, Path]:
    """(the preset's name or None, the config file or folder)."""
    if spec in PRESETS:
        return spec, HF_CONFIGS / f"{spec}.json"
    path = Path(spec)
    if path.exists() or spec.endswith(".json") or "/" in spec or "\\" in spec:
        return None, path
    raise UsageError(f"unknown model {spec!r}: not a preset ({', '.join(PRESETS)}), nor a "
                     "config.json or a folder holding one")


def load_config(spec: str, *, layers: int | None = None) -> HFConfig:
    """The preset named `spec`, or the config.json at `spec` (a file, or a folder holding
    config.json), checked; `layers` replaces num_hidden_layers and keeps every width. Bad
    input: a one-line UsageError naming the file and the field."""
    name, path = _locate(spec)
    path, raw = read_config(path)
    where = str(path)
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)
                               or layers < 1):
        raise UsageError(f"layers must be an integer >= 1 (got {layers!r})")
    model_type = raw.get("model_type")
    if model_type is None:
        raise UsageError(f"{where}: missing model_type (supported: {', '.join(SUPPORTED)})")
    if model_type not in SUPPORTED:
        raise _unsupported(model_type, where)
    raw = dict(raw)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        _positive(raw, key, where)
    if layers is not None:
        raw["num_hidden_layers"] = layers
        if isinstance(raw.get("layer_types"), list):  # one entry per layer (newer configs)
            raw["layer_types"] = raw["layer_types"][:layers]
    data = {**HF_DEFAULTS[model_type], **raw}  # as transformers reads it
    hidden, heads = data["hidden_size"], data["num_attention_heads"]
    if model_type == "falcon":
        intermediate = _positive(data, "ffn_hidden_size", where, default=4 * hidden)
        if hidden % heads:
            raise UsageError(f"{where}: hidden_size {hidden} is not a multiple of "
                             f"num_attention_heads {heads}")
        data.pop("head_dim", None)  # Falcon's is always hidden_size / num_attention_heads
    else:
        intermediate = _positive(data, "intermediate_size", where)
    for key in ("num_key_value_heads", "head_dim", "max_position_embeddings"):
        if data.get(key) is not None:
            _positive(data, key, where)
    numbers = kv_numbers(data, where)
    try:
        return HFConfig(
            name=name or str(raw.get("_name_or_path") or (
                path.parent.name if path.name == "config.json" else path.stem)),
            source=where, model_type=model_type, raw=raw, hidden_size=hidden,
            intermediate_size=intermediate, num_hidden_layers=numbers["layers"],
            num_attention_heads=heads, num_key_value_heads=numbers["kv_heads"],
            head_dim=numbers["head_dim"], vocab_size=data["vocab_size"],
            max_position_embeddings=numbers["context"],
            tie_word_embeddings=_flag(data, "tie_word_embeddings", where),
            **_layout(model_type, data, where))
    except ValueError as exc:  # pydantic's ValidationError is one
        field, problem = first_problem(exc)
        raise UsageError(f"{where}: {'.'.join(map(str, field))}: {problem}") from None


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UsageError("building a Hugging Face model needs transformers "
                         "(pip install 'llmbench[hf]')") from None
    return transformers


ATTENTION = ("sdpa", "eager", "flex_attention")  # transformers' implementations llmbench builds


def build(cfg: HFConfig, *, dtype: Any = None, device: Any = "cpu", attention: str = "sdpa"
          ) -> Any:
    """transformers' causal LM for `cfg` with random weights, its parameters of `dtype`
    (torch.float32 when None) on `device` ("meta": shapes only, no memory). `attention`:
    "sdpa" (torch's fused scaled_dot_product_attention), "eager" (the textbook softmax(QK^T)V,
    which keeps the seq x seq probabilities for the backward pass) or "flex_attention"
    (torch's FlexAttention)."""
    if cfg.model_type not in SUPPORTED:
        raise _unsupported(cfg.model_type, cfg.source)
    import torch

    transformers = _transformers()
    if cfg.model_type not in transformers.CONFIG_MAPPING:
        raise UsageError(f"{cfg.source}: transformers {transformers.__version__} does not know "
                         f"model_type {cfg.model_type!r} (supported: {', '.join(SUPPORTED)})")
    # transformers 5 names the argument dtype (and defaults to the document's torch_dtype).
    major = int(transformers.__version__.split(".")[0])
    dtype_arg = {"dtype" if major >= 5 else "torch_dtype": dtype or torch.float32}
    if attention not in ATTENTION:
        raise UsageError(f"unknown attention {attention!r} for a Hugging Face model (choose "
                         f"from {', '.join(ATTENTION)})")
    try:
        config = transformers.CONFIG_MAPPING[cfg.model_type].from_dict(dict(cfg.raw))
        with torch.device(device):
            return transformers.AutoModelForCausalLM.from_config(
                config, attn_implementation=attention, **dtype_arg)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{cfg.source}: transformers cannot build it: "
                         f"{one_line(str(exc))}") from None
