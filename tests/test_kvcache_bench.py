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
from llmbench.models.presets import PRESETS, preset
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
