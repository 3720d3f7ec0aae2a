import json

import pytest

from llmbench.core.errors import UsageError
from llmbench.models.presets import PRESETS, from_hf_config, preset
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data"

# Published numbers (config.json on the Hugging Face Hub): layers, heads, kv heads, head dim.
PUBLISHED = {
    "llama-2-7b": (32, 32, 32, 128), "llama-2-70b": (80, 64, 8, 128),
    "llama-3-8b": (32, 32, 8, 128), "llama-3-70b": (80, 64, 8, 128),
    "mistral-7b": (32, 32, 8, 128), "falcon-7b": (32, 71, 1, 64),
    "qwen2-7b": (28, 28, 4, 128), "gemma-7b": (28, 16, 16, 256),
    "gemma-2b": (18, 8, 1, 256),
}


def test_presets_hold_the_published_numbers():
    assert set(PRESETS) == set(PUBLISHED)
    for name, (layers, heads, kv, head_dim) in PUBLISHED.items():
        a = preset(name)
        assert (a.layers, a.heads, a.kv_heads, a.head_dim) == (layers, heads, kv, head_dim)


@pytest.mark.parametrize("name, per_token", [
    ("llama-3-8b", 131_072), ("llama-2-7b", 524_288), ("falcon-7b", 8_192),
    ("llama-2-70b", 327_680), ("gemma-2b", 18_432),
])
def test_fp16_bytes_per_token(name, per_token):
    assert preset(name).kv_bytes_per_token(2) == per_token


def test_real_llama3_config_file():
    a = from_hf_config(DATA / "llama3_8b_config.json")
    assert (a.layers, a.heads, a.kv_heads, a.head_dim, a.context) == (32, 32, 8, 128, 8192)
    assert a.kv_bytes_per_token(2) == 131_072


def test_falcon_style_multi_query_config():
    a = from_hf_config(DATA / "falcon_7b_config.json")
    assert (a.layers, a.heads, a.kv_heads, a.head_dim, a.context) == (32, 71, 1, 64, None)


def test_explicit_head_dim_wins_over_hidden_size():
    a = from_hf_config(DATA / "gemma_7b_config.json")
    assert a.head_dim == 256  # not 3072 / 16 = 192
    assert a.kv_heads == 16


def test_missing_kv_heads_means_mha_and_text_config_is_read(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"text_config": {"num_hidden_layers": 2, "num_attention_heads": 4,
                                             "hidden_size": 256}}))
    a = from_hf_config(p)
    assert (a.layers, a.heads, a.kv_heads, a.head_dim) == (2, 4, 4, 64)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a model config"),
    ('{"num_attention_heads": 8, "hidden_size": 512}', "missing num_hidden_layers"),
    ('{"num_hidden_layers": 2, "hidden_size": 512}', "missing num_attention_heads"),
    ('{"num_hidden_layers": 2, "num_attention_heads": 8}', "missing head_dim"),
    ('{"num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 3, '
     '"hidden_size": 512}', "kv_heads 3 does not divide heads 8"),
])
def test_bad_config_files(tmp_path, content, message):
    p = tmp_path / "config.json"
    p.write_text(content)
    with pytest.raises(UsageError, match=message) as info:
        from_hf_config(p)
    assert str(info.value).startswith(str(p))


def test_missing_config_file_and_unknown_preset(tmp_path):
    with pytest.raises(UsageError, match="no such config file"):
        from_hf_config(tmp_path / "nope.json")
    with pytest.raises(UsageError, match="unknown model 'gpt-5'"):
        preset("gpt-5")
