"""The analytic memory model (llmbench.train.memory_model): exact counts against what autograd
saves, tensor by tensor, and predictions against llmbench's own RSS measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmbench.train.memory_model import (
    Arch,
    activation_memory,
    korthikanti_layer_bytes,
    layer_activations,
    predict,
)

MINI1 = Arch.from_size("mini", n_layers=1)


# ------------------------------------------------------------------ pure arithmetic


def test_module_imports_no_torch() -> None:
    code = ("import sys, llmbench.train.memory_model as m; "
            "m.predict(m.Arch.from_size('mini'), batch=2, seq=65, policy='sqrt'); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


def test_layer_parts_fp32_by_hand() -> None:
    # b=2, s=64, h=256, f=704, 8 heads: norms 2 x (3 sbh + sb) fp32, attention q, out + lse,
    # K, V, MLP 4 sbf.
    t = 2 * 64
    layer = layer_activations(MINI1, batch=2, positions=64)
    assert layer.norms == 2 * 4 * (3 * t * 256 + t)
    assert layer.attention == 4 * (2 * t * 256 + t * 8)
    assert layer.kv == 4 * 2 * t * 256
    assert layer.scores == 0
    assert layer.mlp == 4 * 4 * t * 704
    assert layer.weight_copies == 0


def test_gqa_narrows_kv_only_with_flash() -> None:
    gqa = Arch.from_size("mini", n_layers=1, n_kv_heads=2)
    flash = layer_activations(gqa, batch=2, positions=64)
    assert flash.kv == layer_activations(MINI1, batch=2, positions=64).kv // 4
    standard = layer_activations(gqa, batch=2, positions=64, attention="standard")
    assert standard.kv == 4 * 2 * 128 * 256  # expanded to the query heads
    assert standard.scores == 4 * 2 * 8 * 64 * 64 + 64 * 64


@pytest.mark.parametrize(("kv", "attention", "autocast", "inventory"), [
    # unique bytes autograd saved (saved_tensors_hooks), parameters and the input tokens apart
    (None, "flash", None, 3283456),
    (None, "flash", "bf16", 4053504),
    (2, "standard", None, 3545600),
    (2, "standard", "bf16", 3987968),
])
def test_whole_model_matches_recorded_inventory(kv: int | None, attention: str,
                                                autocast: str | None, inventory: int) -> None:
    arch = Arch.from_size("mini", n_layers=1, n_kv_heads=kv)
    assert activation_memory(arch, batch=2, positions=64, autocast=autocast,
                             attention=attention).total == inventory


def test_checkpointing_keeps_segment_inputs() -> None:
    arch = Arch.from_size("base", n_layers=8)
    none = predict(arch, batch=4, seq=257)
    every = predict(arch, batch=4, seq=257, policy="every")
    sqrt = predict(arch, batch=4, seq=257, policy="sqrt")
    kept = 4 * 256 * 512 * 4
    assert every.activations.kept_inputs == 8 * kept and every.activations.layers == 0
    assert sqrt.activations.kept_inputs == 3 * kept  # ceil(sqrt(8)) = 3-layer segments
    assert none.activations.layers == 8 * none.layer.total
    assert every.activations.head == none.activations.head
    assert sqrt.step_peak_bytes > every.step_peak_bytes  # a 3-layer segment is recomputed


def test_korthikanti() -> None:
    assert korthikanti_layer_bytes(4096, 32, 1, 2048) == 2048 * 4096 * (34 + 5 * 32 * 2048
                                                                        // 4096)


def test_param_count_matches_hf_presets() -> None:
    from llmbench.models.hf import load_config

    for preset in ("llama-3-8b", "qwen2-7b", "gemma-2b", "falcon-7b", "mistral-7b"):
        cfg = load_config(preset, layers=2)
        arch = Arch.from_hf(cfg)
        assert arch.param_count() == cfg.param_count() == sum(arch.param_tensors())


def test_log_softmax_dominates_large_vocabularies() -> None:
    from llmbench.models.hf import load_config

    arch = Arch.from_hf(load_config("llama-3-8b", layers=2))
    p = predict(arch, batch=2, seq=257, param_dtype="bf16")
    assert p.activations.head > 2 * 256 * 128256 * 4


# ------------------------------------------------------------------ against torch

torch = pytest.importorskip("torch")


def saved_bytes(model: torch.nn.Module, tokens: torch.Tensor,
                autocast: torch.dtype | None = None) -> int:
    """Unique storage bytes autograd saves in lm_loss's forward, parameters and buffers and
    the input tokens apart."""
    from llmbench.train.loop import lm_loss

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen.setdefault(st.data_ptr(), st.nbytes())
        return t

    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(),
                                                      tokens]}
    ctx = torch.autocast("cpu", dtype=autocast, enabled=autocast is not None)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        lm_loss(model, tokens)
    return sum(n for k, n in seen.items() if k not in skip) - 4  # the loss's scalar weight


def tiny_hf(tmp_path: Path, model_type: str, layers: int = 1) -> object:
    from llmbench.models.hf import load_config

    base = {"llama": "llama-3-8b", "qwen2": "qwen2-7b", "gemma": "gemma-2b",
            "falcon": "falcon-7b"}[model_type]
    raw = json.loads((Path("llmbench/models/hf_configs") / f"{base}.json").read_text())
    raw.update(hidden_size=256, num_attention_heads=8, vocab_size=512,
               num_hidden_layers=layers, bos_token_id=1, eos_token_id=2)
    if model_type != "falcon":
        raw.update(intermediate_size=704, num_key_value_heads=2, head_dim=32)
    path = tmp_path / f"{model_type}.json"
    path.write_text(json.dumps(raw))
    return load_config(str(path))


class Logits(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=tokens, use_cache=False).logits


@pytest.mark.parametrize(("attention", "autocast"), [("sdpa", None), ("standard", "bf16")])
def test_builtin_saved_tensors_exact(attention: str, autocast: str | None) -> None:
    from llmbench.models.sizes import build

    torch.manual_seed(0)
    model = build("tiny", n_layers=2, n_kv_heads=2, attention=attention).train()
    tokens = torch.randint(0, 256, (2, 33))
    arch = Arch.from_size("tiny", n_layers=2, n_kv_heads=2)
    got = saved_bytes(model, tokens, autocast and torch.bfloat16)
    want = activation_memory(arch, batch=2, positions=32, autocast=autocast,
                             attention="flash" if attention == "sdpa" else "standard")
    assert got == want.total


@pytest.mark.parametrize(("model_type", "attention", "dtype"), [
    ("llama", "sdpa", "fp32"), ("llama", "eager", "bf16"), ("qwen2", "sdpa", "bf16"),
    ("gemma", "sdpa", "bf16"), ("falcon", "sdpa", "fp32"), ("falcon", "sdpa", "bf16")])
def test_hf_saved_tensors_exact(tmp_path: Path, model_type: str, attention: str,
                                dtype: str) -> None:
    pytest.importorskip("transformers")
    from llmbench.models.hf import build

    cfg = tiny_hf(tmp_path, model_type, layers=2)
    torch.manual_seed(0)
    inner = build(cfg, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    inner.config._attn_implementation = attention
    model = Logits(inner.train())
    tokens = torch.randint(0, 512, (2, 33))
    got = saved_bytes(model, tokens)
    want = activation_memory(Arch.from_hf(cfg), batch=2, positions=32, param_dtype=dtype,
                             attention="flash" if attention == "sdpa" else "standard")
    extra = 2 * 2 * 8 if model_type == "falcon" else 0
    assert got - extra == want.total  # Falcon: two int64 scalars a layer


@pytest.mark.parametrize("extra", [
    {"model_type": "llama", "num_key_value_heads": 2, "tie_word_embeddings": False},
    {"model_type": "qwen2", "num_key_value_heads": 1, "tie_word_embeddings": True},
    {"model_type": "falcon", "new_decoder_architecture": True, "num_kv_heads": 2, "bias": True},
    {"model_type": "falcon", "multi_query": True, "parallel_attn": True},
])
def test_param_shapes_are_the_real_models(tmp_path, extra):
    """Every parameter tensor's shape (what an optimizer keeps a state and a step for), as
    transformers builds the model: Falcon's query_key_value is one fused matrix."""
    pytest.importorskip("transformers")
    from llmbench.models.hf import build, load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 64, "intermediate_size": 96,
                                "num_hidden_layers": 2, "num_attention_heads": 4,
                                "vocab_size": 50, **extra}))
    cfg = load_config(str(path))
    real = sorted(tuple(p.shape) for p in build(cfg, device="meta").parameters())
    assert sorted(Arch.from_hf(cfg).param_shapes()) == real
