import json

import pytest
import torch

from llmbench.benches.kvcache import (
    KVCacheBenchmark,
    KVCacheConfig,
    analytic_table,
    kv_variants,
    measured_variants,
    resolve_architecture,
    scaled_copy,
)
from llmbench.core.errors import UsageError
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.models import KVCache, ModelConfig, Transformer
from llmbench.models.presets import PRESETS, Architecture, preset
from tests.conftest import ROOT, assert_bad_input, run_cli, run_cli_inprocess


def test_acceptance_figures():
    rows = analytic_table(preset("llama-3-8b"), dtype="fp16", seq=8192, batch=1,
                          memory_bytes=None)
    published = next(r for r in rows if r["published"])
    assert published["bytes_per_token"] == 131_072
    assert published["total_bytes"] == 2**30
    assert published["variant"] == "GQA-8"
    assert published["saving_vs_mha_pct"] == 75.0


def test_variants_and_savings():
    assert kv_variants(32) == [32, 16, 8, 4, 2, 1]
    assert kv_variants(71) == [71, 1]
    rows = analytic_table(preset("falcon-7b"), dtype="fp8", seq=2048, batch=2,
                          memory_bytes=None)
    assert [r["variant"] for r in rows] == ["MHA", "MQA"]
    assert rows[1]["bytes_per_token"] == 2 * 32 * 1 * 64 * 1
    assert rows[1]["saving_vs_mha_pct"] == pytest.approx(100 * 70 / 71)
    assert measured_variants(preset("llama-3-8b")) == [32, 8, 1]
    assert measured_variants(preset("gemma-7b")) == [16, 4, 1]
    assert measured_variants(preset("falcon-7b")) == [71, 1]


def test_memory_budget_inverse():
    rows = analytic_table(preset("llama-3-8b"), dtype="fp16", seq=8192, batch=4,
                          memory_bytes=80 * 2**30)
    gqa = next(r for r in rows if r["published"])
    assert gqa["max_context"] == 80 * 2**30 // (131_072 * 4)
    assert gqa["max_batch"] == 80  # 1 GiB per sequence at 8192
    assert gqa["max_batch"] * 131_072 * 8192 <= 80 * 2**30 < (gqa["max_batch"] + 1) \
        * 131_072 * 8192


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_scaled_copy_cache_bytes_equal_formula(name):
    arch = preset(name)
    cfg = KVCacheConfig(model=name, measure_seq=64)
    for kv in measured_variants(arch):
        mc = scaled_copy(arch, cfg, kv)
        assert mc["n_heads"] == arch.heads and mc["n_kv_heads"] == kv
        model = Transformer(ModelConfig(**mc))
        for dtype, e in ((torch.float16, 2), (torch.float32, 4)):
            cache = model.new_cache(batch=2, max_seq=64, dtype=dtype)
            assert cache.nbytes == KVCache.analytic_bytes(
                layers=mc["n_layers"], kv_heads=kv, head_dim=mc["head_dim"], seq=64, batch=2,
                bytes_per_element=e)


def test_architecture_sources():
    assert resolve_architecture(KVCacheConfig()).name == "llama-3-8b"
    a = resolve_architecture(KVCacheConfig(model="llama-2-7b", kv_heads=8))
    assert (a.kv_heads, a.name) == (8, "llama-2-7b (modified)")
    a = resolve_architecture(KVCacheConfig(layers=2, heads=8, head_dim=64))
    assert (a.layers, a.kv_heads, a.name) == (2, 8, "custom")
    path = ROOT / "tests" / "data" / "llama3_8b_config.json"
    assert resolve_architecture(KVCacheConfig(config_path=str(path))).kv_heads == 8
    with pytest.raises(UsageError, match="without --model or --config, give --head-dim"):
        resolve_architecture(KVCacheConfig(layers=2, heads=8))
    with pytest.raises(UsageError, match="kv_heads 3 does not divide heads 8"):
        resolve_architecture(KVCacheConfig(layers=2, heads=8, kv_heads=3, head_dim=64))
    with pytest.raises(UsageError, match="not both"):
        resolve_architecture(KVCacheConfig(model="gemma-2b", config_path=str(path)))


def test_measured_run_inline(hw, fast_timing):
    cfg = KVCacheConfig(model="llama-3-8b", measure_seq=48, measure_layers=1, device="cpu",
                        dtype="fp32", timing=fast_timing)
    doc = run_benchmark(KVCacheBenchmark(), cfg, options=RunOptions(isolate=False), hw=hw)
    assert [c.name for c in doc.cases] == ["mha/ctx=48", "gqa-8/ctx=48", "mqa/ctx=48"]
    for case in doc.cases:
        assert case.status == "ok", case.reason
        m = case.metrics
        assert m["cache_matches_formula"] is True
        assert m["cache_bytes"] == m["analytic_cache_bytes"] == \
            2 * 1 * case.params["kv_heads"] * 16 * 48 * 4
        assert m["cache_tokens"] == 48
        assert m["decode_tokens_per_s"] > 0 and m["speedup_vs_mha_x"] > 0
    assert doc.summary["scaled_copy"]["of_layers"] == 32
    assert doc.config["arch"]["name"] == "llama-3-8b" and doc.config["seq"] == 8192


def test_cli_analytic_json():
    proc = run_cli("kvcache", "--model", "llama-3-8b", "--seq", "8192", "--dtype", "fp16",
                   "--no-measure", "--memory", "80GiB", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    row = next(r for r in doc["summary"]["analytic"] if r["published"])
    assert (row["bytes_per_token"], row["total_bytes"]) == (131_072, 2**30)
    assert doc["cases"] == []
    table = run_cli("kvcache", "--model", "falcon-7b", "--dtype", "fp16", "--no-measure")
    assert "8,192" in table.stdout and "MQA ← published" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt-5"], "unknown model 'gpt-5'"),
    (["--config", "/nonexistent/config.json"], "no such config file"),
    (["--layers", "2", "--heads", "8", "--kv-heads", "3", "--head-dim", "64"],
     "kv_heads 3 does not divide heads 8"),
    (["--memory", "lots"], "not a size"),
    (["--heads", "8"], "give --layers, --head-dim"),
    (["--seq", "0"], "--seq must be positive, got 0"),
    (["--impl", "magic"], "unknown impl 'magic'"),
    (["--window", "0"], "--window: must be a positive number of tokens, got 0"),
    (["--window", "-4096"], "--window: must be a positive number of tokens, got -4096"),
])
def test_cli_bad_input(args, message):
    assert_bad_input(run_cli_inprocess("kvcache", *args, "--no-measure"), message)


def test_cli_config_file_missing_fields(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"num_attention_heads": 8, "hidden_size": 512}')
    proc = run_cli("kvcache", "--config", str(p), "--no-measure")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"llmbench: error: {p}: missing num_hidden_layers (or n_layer)"


def test_measured_dtype_on_gpus_without_bf16():
    """A T4 or V100 measures a bf16 cache in fp16 (same bytes) instead of failing."""
    from llmbench.benches.kvcache import measured_dtype
    from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo

    def gpu(cc):
        return HardwareInfo(device="cuda", nvml="ok", gpus=[
            GpuInfo(index=0, name="g", compute_capability=cc)],
            cpu=CpuInfo(model="x", logical_cores=1, usable_cores=1))

    assert measured_dtype("bf16", "cuda", gpu((7, 5))) == "fp16"
    assert measured_dtype("fp8", "cuda", gpu((7, 0))) == "fp16"
    assert measured_dtype("bf16", "cuda", gpu((8, 0))) == "bf16"
    assert measured_dtype("int8", "cuda", gpu((9, 0))) == "bf16"
    assert measured_dtype("fp32", "cuda", gpu((7, 5))) == "fp32"


# ------------------------------------------------------------------ sliding window

MISTRAL_TOKEN_BYTES = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads, head dim 128, bf16


def test_mistral_window_gives_both_caches():
    """Mistral-7B v0.1 attends to 4096 tokens on every layer: at 32k tokens in bf16 the full
    cache is 4 GiB, a rolling buffer 512 MiB."""
    arch = preset("mistral-7b")
    assert (arch.sliding_window, arch.window_layers, arch.windowed_layers) == (4096, None, 32)
    rows = analytic_table(arch, dtype="bf16", seq=32768, batch=1, memory_bytes=None)
    gqa = next(r for r in rows if r["published"])
    assert gqa["total_bytes"] == MISTRAL_TOKEN_BYTES * 32768 == 4 * 2**30
    assert gqa["windowed_total_bytes"] == MISTRAL_TOKEN_BYTES * 4096 == 512 * 2**20
    mqa = rows[-1]
    assert mqa["windowed_total_bytes"] == 2 * 32 * 1 * 128 * 2 * 4096
    short = analytic_table(arch, dtype="bf16", seq=1000, batch=3, memory_bytes=None)
    assert all(r["windowed_total_bytes"] == r["total_bytes"] for r in short)  # no binding


def test_presets_without_a_window():
    for name in PRESETS:
        if name != "mistral-7b":
            assert preset(name).sliding_window is None, name
    # qwen2-7b's document names sliding_window 131072 with use_sliding_window false
    doc = json.loads((ROOT / "llmbench/models/hf_configs/qwen2-7b.json").read_text())
    assert doc["sliding_window"] == 131072 and doc["use_sliding_window"] is False
    rows = analytic_table(preset("llama-3-8b"), dtype="fp16", seq=8192, batch=1,
                          memory_bytes=2**30)
    assert all("windowed_total_bytes" not in r for r in rows)


def _config(tmp_path, **fields):
    base = {"num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "hidden_size": 3584, "max_position_embeddings": 32768}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**base, **fields}))
    return str(path)


def test_qwen2_window_only_with_use_sliding_window_and_above_max_window_layers(tmp_path):
    qwen = {"model_type": "qwen2", "sliding_window": 1024, "max_window_layers": 20}
    on = resolve_architecture(KVCacheConfig(config_path=_config(
        tmp_path, **qwen, use_sliding_window=True)))
    assert (on.sliding_window, on.window_layers) == (1024, list(range(20, 28)))
    rows = analytic_table(on, dtype="bf16", seq=4096, batch=2, memory_bytes=None)
    gqa = next(r for r in rows if r["published"])
    per_layer_token = 2 * 4 * 128 * 2  # K and V, 4 KV heads, head dim 128, bf16
    assert gqa["windowed_total_bytes"] == per_layer_token * 2 * (20 * 4096 + 8 * 1024)
    assert gqa["total_bytes"] == per_layer_token * 2 * 28 * 4096
    off = resolve_architecture(KVCacheConfig(config_path=_config(
        tmp_path, **qwen, use_sliding_window=False)))
    assert off.sliding_window is None
    absent = resolve_architecture(KVCacheConfig(config_path=_config(tmp_path, **qwen)))
    assert absent.sliding_window is None  # Qwen2Config's default: use_sliding_window false
    cut = resolve_architecture(KVCacheConfig(config_path=_config(
        tmp_path, **qwen, use_sliding_window=True), layers=24))
    assert (cut.layers, cut.window_layers) == (24, [20, 21, 22, 23])


def test_gemma2_alternates_and_layer_types_name_each_layer(tmp_path):
    gemma2 = resolve_architecture(KVCacheConfig(config_path=_config(
        tmp_path, model_type="gemma2", num_hidden_layers=6, sliding_window=4096)))
    assert gemma2.window_layers == [0, 2, 4]
    assert gemma2.kv_cache_bytes(2, seq=8192, windowed=True) == \
        2 * 4 * 128 * 2 * (3 * 8192 + 3 * 4096)
    typed = resolve_architecture(KVCacheConfig(config_path=_config(
        tmp_path, num_hidden_layers=4, sliding_window=512,
        layer_types=["full_attention", "sliding_attention", "sliding_attention",
                     "full_attention"])))
    assert typed.window_layers == [1, 2]
    mistral_v3 = resolve_architecture(KVCacheConfig(config_path=_config(
        tmp_path, model_type="mistral", sliding_window=None)))
    assert mistral_v3.sliding_window is None


def test_window_flag_sets_or_overrides(tmp_path):
    a = resolve_architecture(KVCacheConfig(model="llama-3-8b", window=1024))
    assert (a.sliding_window, a.windowed_layers, a.name) == (1024, 32, "llama-3-8b (modified)")
    assert a.kv_cache_bytes(2, seq=8192, windowed=True) == 131_072 * 1024
    m = resolve_architecture(KVCacheConfig(model="mistral-7b", window=2048, layers=4))
    assert (m.sliding_window, m.layers, m.windowed_layers) == (2048, 4, 4)
    qwen = _config(tmp_path, model_type="qwen2", sliding_window=1024, max_window_layers=20,
                   use_sliding_window=True)
    q = resolve_architecture(KVCacheConfig(config_path=qwen, window=64))
    assert (q.sliding_window, q.window_layers) == (64, list(range(20, 28)))


def test_windowed_budget_inverse():
    arch = preset("mistral-7b")
    rows = analytic_table(arch, dtype="bf16", seq=32768, batch=1, memory_bytes=2**30)
    gqa = next(r for r in rows if r["published"])
    assert gqa["windowed_max_context"] is None  # the 512 MiB buffer fits: any context does
    assert gqa["windowed_max_batch"] == 2  # 1 GiB / 512 MiB
    small = analytic_table(arch, dtype="bf16", seq=32768, batch=1, memory_bytes=256 * 2**20)
    assert next(r for r in small if r["published"])["windowed_max_context"] == \
        256 * 2**20 // MISTRAL_TOKEN_BYTES
    half = Architecture(name="half", layers=4, heads=8, kv_heads=8, head_dim=64,
                        sliding_window=100, window_layers=[1, 3])
    row = analytic_table(half, dtype="fp16", seq=1000, batch=1, memory_bytes=10**6)[0]
    per = 2 * 8 * 64 * 2  # one token of one layer
    # 2 full layers * c + 2 windowed layers * 100 tokens must fit in 10**6 bytes
    expected = (10**6 // per - 2 * 100) // 2
    assert row["windowed_max_context"] == expected
    assert (2 * expected + 200) * per <= 10**6 < (2 * (expected + 1) + 200) * per


def test_rolling_buffer_decodes_like_the_window():
    """A one-layer model: the last token decoded through the rolling buffer sees exactly its
    last W positions, as a forward of only those tokens (at their own positions) does."""
    from llmbench.benches.kvcache import RollingKVCache

    torch.manual_seed(0)
    ctx, window = 24, 6
    model = Transformer(ModelConfig(vocab_size=64, dim=64, n_layers=1, n_heads=4, n_kv_heads=2,
                                    head_dim=16, max_seq_len=ctx)).eval()
    tokens = torch.randint(0, 64, (2, ctx), generator=torch.Generator().manual_seed(1))
    cache = RollingKVCache(1, 2, 2, ctx, 16, torch.float32, "cpu", window=window, windowed=[0])
    with torch.inference_mode():
        model(tokens[:, :window], cache=cache, start=0)
        for t in range(window, ctx):
            out = model(tokens[:, t:t + 1], cache=cache, start=t)
        reference = model(tokens[:, ctx - window:], start=ctx - window)[:, -1:]
        unwindowed = model(tokens, start=0)[:, -1:]
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, unwindowed, rtol=1e-3, atol=1e-3)  # the window matters
    assert cache.nbytes == 2 * 1 * 2 * 16 * window * 2 * 4  # K, V; 2 KV heads; batch 2; fp32
    assert cache.length == ctx
    with pytest.raises(ValueError, match="one token at a time"):
        model(tokens[:, :4], cache=cache, start=ctx - 4)


def test_measured_window_matches_the_windowed_formula(hw, fast_timing):
    cfg = KVCacheConfig(layers=2, heads=2, head_dim=16, window=8, measure_seq=24,
                        measure_layers=1, device="cpu", dtype="fp32", timing=fast_timing)
    doc = run_benchmark(KVCacheBenchmark(), cfg, options=RunOptions(isolate=False), hw=hw)
    assert [c.params["kv_heads"] for c in doc.cases] == [2, 1]
    for case in doc.cases:
        assert case.status == "ok", case.reason
        kv, m = case.params["kv_heads"], case.metrics
        assert (case.params["window"], case.params["windowed_layers"]) == (8, 1)
        # 1 layer, head dim 16, fp32, batch 1: the buffer holds 8 of the 24 positions
        assert m["cache_bytes"] == m["analytic_cache_bytes"] == 2 * 1 * kv * 16 * 8 * 4
        assert m["full_cache_bytes"] == 2 * 1 * kv * 16 * 24 * 4
        assert m["cache_matches_formula"] is True
        assert (m["prefill_tokens"], m["decoded_tokens"], m["cache_tokens"]) == (1, 23, 24)
    assert doc.summary["window"] == {"tokens": 8, "windowed_layers": 2, "layers": 2,
                                     "source": "--window", "binds": True}
    assert doc.summary["scaled_copy"]["window"] == 8


def test_cli_window_table():
    proc = run_cli_inprocess("kvcache", "--model", "mistral-7b", "--dtype", "bf16",
                             "--no-measure")
    assert proc.returncode == 0, proc.stderr
    assert "sliding window 4,096 on all 32 layers" in proc.stdout
    assert "windowed" in proc.stdout and "512 MiB" in proc.stdout and "4 GiB" in proc.stdout
    assert "which one a server holds" in proc.stdout


def test_table_keeps_brackets_in_the_model_name(tmp_path):
    path = _config(tmp_path, _name_or_path="lab/model-[v2]", model_type="mistral")
    proc = run_cli_inprocess("kvcache", "--config", path, "--no-measure")
    assert proc.returncode == 0, proc.stderr
    assert "lab/model-[v2]: 28 layers" in proc.stdout
