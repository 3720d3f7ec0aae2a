"""Hugging Face architectures (llmbench.models.hf): the shipped preset documents, their
parameter counts against transformers' own, building and running one, and bad input."""

import json
import subprocess
import sys

import pytest

from llmbench.core.errors import UsageError
from llmbench.models import hf
from llmbench.models.presets import HF_CONFIGS, PRESETS
from tests.conftest import ROOT

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

# The checkpoints' published totals (embeddings included).
PUBLISHED = {
    "llama-2-7b": 6_738_415_616, "llama-2-70b": 68_976_648_192, "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496, "mistral-7b": 7_241_732_096, "falcon-7b": 6_921_720_704,
    "qwen2-7b": 7_615_616_512, "gemma-7b": 8_537_680_896, "gemma-2b": 2_506_172_416,
}


def test_every_preset_ships_a_document_and_its_record_is_read_from_it():
    assert sorted(p.stem for p in HF_CONFIGS.glob("*.json")) == sorted(PRESETS) == \
        sorted(PUBLISHED)
    for name, arch in PRESETS.items():
        cfg = hf.load_config(name)
        assert cfg.name == name and cfg.model_type in hf.supported_model_types()
        assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
                cfg.head_dim, cfg.hidden_size, cfg.max_position_embeddings) == \
            (arch.layers, arch.heads, arch.kv_heads, arch.head_dim, arch.hidden_size,
             arch.context)
        assert cfg.param_count() == arch.params == PUBLISHED[name]


@pytest.mark.parametrize("layers", [None, 2])
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_analytic_count_is_transformers_count(name, layers):
    cfg = hf.load_config(name, layers=layers)
    model = hf.build(cfg, device="meta")
    assert model.num_parameters() == cfg.param_count()
    if layers is None:
        assert cfg.param_count() == PUBLISHED[name]
    else:
        assert cfg.num_hidden_layers == 2 and cfg.raw["num_hidden_layers"] == 2
        full = hf.load_config(name)
        assert (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size) == \
            (full.hidden_size, full.intermediate_size, full.vocab_size)
        assert cfg.param_count() < full.param_count()


SMALL = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 4, "vocab_size": 128, "max_position_embeddings": 64}
# One small config per layout: GQA, biases, tied and untied heads, Falcon's three decoders.
LAYOUTS = {
    "llama-gqa-biases": {"model_type": "llama", "num_key_value_heads": 2,
                         "attention_bias": True, "mlp_bias": True},
    "mistral": {"model_type": "mistral", "num_key_value_heads": 1},
    "qwen2": {"model_type": "qwen2", "num_key_value_heads": 2},
    "qwen2-tied": {"model_type": "qwen2", "num_key_value_heads": 4, "tie_word_embeddings": True},
    "gemma": {"model_type": "gemma", "num_key_value_heads": 1, "head_dim": 32},
    "falcon-7b-style": {"model_type": "falcon", "multi_query": True, "parallel_attn": True},
    "falcon-40b-style": {"model_type": "falcon", "new_decoder_architecture": True,
                         "num_kv_heads": 2, "bias": True},
    "falcon-new-mha": {"model_type": "falcon", "new_decoder_architecture": True,
                       "num_ln_in_parallel_attn": 1},
    "falcon-sequential": {"model_type": "falcon", "multi_query": False,
                          "parallel_attn": False, "ffn_hidden_size": 80},
}


def _write(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(fields))
    return path


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_small_configs_build_count_and_run_on_the_cpu(tmp_path, layout):
    fields = {**SMALL, **LAYOUTS[layout]}
    if fields["model_type"] == "falcon":
        del fields["intermediate_size"]  # Falcon's MLP width is ffn_hidden_size (4 x hidden)
    path = _write(tmp_path / layout, **fields)
    cfg = hf.load_config(str(path))
    assert cfg.name == layout and cfg.source == str(path)
    model = hf.build(cfg)
    assert model.num_parameters() == cfg.param_count()
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    tokens = torch.randint(0, 128, (2, 8))
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    assert logits.shape == (2, 8, 128) and torch.isfinite(logits).all()


def test_a_folder_a_dtype_and_a_cut_depth(tmp_path):
    _write(tmp_path / "mine", **SMALL, model_type="qwen2", num_key_value_heads=2,
           layer_types=["full_attention"] * 2)
    cfg = hf.load_config(str(tmp_path / "mine"), layers=1)
    assert cfg.num_hidden_layers == 1 and cfg.raw["layer_types"] == ["full_attention"]
    model = hf.build(cfg, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.num_parameters() == cfg.param_count()
    assert len(model.model.layers) == 1


def test_loading_needs_neither_torch_nor_transformers():
    code = ("import sys; from llmbench.models import hf; "
            "c = hf.load_config('llama-3-8b', layers=2); print(c.param_count()); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(hf.load_config("llama-3-8b", layers=2).param_count()),
                                  "[]"]


def _one_line_error(call) -> str:
    with pytest.raises(UsageError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_bad_specs(tmp_path):
    message = _one_line_error(lambda: hf.load_config("llama-9-1b"))
    assert "'llama-9-1b'" in message and "llama-3-8b" in message and "gemma-2b" in message
    missing = tmp_path / "nope" / "config.json"
    assert _one_line_error(lambda: hf.load_config(str(missing))) == \
        f"{missing}: no such config file"
    message = _one_line_error(lambda: hf.load_config("llama-3-8b", layers=0))
    assert "layers" in message and ">= 1" in message


@pytest.mark.parametrize("fields, problem", [
    ({"intermediate_size": None}, "missing intermediate_size"),
    ({"vocab_size": None}, "missing vocab_size"),
    ({"hidden_size": "64"}, "hidden_size must be a positive integer (got '64')"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer (got 0)"),
    ({"num_key_value_heads": 3}, "kv_heads 3 does not divide heads 4"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
    ({"model_type": None}, "missing model_type (supported: llama, mistral, qwen2, gemma, "
                           "falcon)"),
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported (supported: llama, "
                             "mistral, qwen2, gemma, falcon)"),
    ({"model_type": "made-up"}, "model_type 'made-up' is not supported"),
])
def test_bad_config_files(tmp_path, fields, problem):
    document = {**SMALL, "model_type": "llama", **fields}
    path = _write(tmp_path, **{k: v for k, v in document.items() if v is not None})
    message = _one_line_error(lambda: hf.load_config(str(path)))
    assert message.startswith(f"{path}: ") and problem in message


def test_build_refuses_a_type_it_does_not_support(tmp_path):
    cfg = hf.load_config(str(_write(tmp_path, **SMALL, model_type="llama")))
    message = _one_line_error(lambda: hf.build(cfg.model_copy(update={"model_type": "gpt2"})))
    assert "'gpt2'" in message and "llama, mistral, qwen2, gemma, falcon" in message
