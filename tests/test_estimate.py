"""`llmbench estimate`: the per-GPU table and JSON for presets, config files, built-in sizes
and explicit widths; --validate's real measurement here; bad input, one line and exit 2."""

import json
import subprocess
import sys

import pytest

from llmbench.benches.estimate import EstimateBenchmark, EstimateConfig
from llmbench.core.runner import RunOptions, run_benchmark

INLINE = RunOptions(isolate=False)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llmbench", "estimate", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_llama3_8b_on_eight_h100s(tmp_path):
    out = tmp_path / "e.json"
    run = _cli("--model", "llama-3-8b", "--zero", "3", "--gpus", "8", "--seq", "8192",
               "--checkpoint", "every", "--memory", "80GiB", "--profile", "sm90",
               "--json", str(out))
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    s = doc["summary"]
    assert s["params"] == 8_030_261_248
    g = s["per_gpu"]
    assert g["bytes_per_param"] == 16.0
    assert g["model_state_bytes"] == pytest.approx(16 * 8_030_261_248 / 8, rel=1e-6)
    assert s["fits"] is True and s["max_batch"] >= 1 and s["max_seq"] >= 8192
    assert s["peak_tflops"] == 989.4 and s["tokens_per_s"] > 0
    assert {r["policy"] for r in s["by_policy"]} == {"none", "every", "every-2", "sqrt"}
    assert "does not fit" not in run.stdout and "fits in 80 GiB" in run.stdout
    assert "peak" in run.stdout and "activations" in run.stdout


def _config(folder, **fields):
    """A config.json with 8 query heads and 2 key/value heads, and `fields`."""
    path = folder / "config.json"
    path.write_text(json.dumps({"num_attention_heads": 8, "num_key_value_heads": 2, **fields}))
    return path


def test_a_config_file_and_explicit_widths(hw, tmp_path):
    path = _config(tmp_path, model_type="qwen2", hidden_size=512, intermediate_size=1024,
                   num_hidden_layers=4, vocab_size=1000)
    doc = run_benchmark(EstimateBenchmark(), EstimateConfig(hf_config=str(path), seq=256),
                        options=INLINE, hw=hw)
    from llmbench.models.hf import load_config

    assert doc.summary["params"] == load_config(str(path)).param_count()
    assert doc.summary["model"] == tmp_path.name
    custom = EstimateConfig(hidden=512, intermediate=1024, heads=8, vocab=1000, layers=4)
    assert custom.model_name == "custom" and custom.arch.kv_heads == 8
    modified = EstimateConfig(model="llama-3-8b", layers=2)
    assert modified.arch.layers == 2 and modified.model_name == "llama-3-8b"


def test_standard_attention_keeps_the_scores(hw):
    flash = EstimateConfig(model="mistral-7b", seq=4096)
    standard = EstimateConfig(model="mistral-7b", seq=4096, attention="standard")
    a = run_benchmark(EstimateBenchmark(), flash, options=INLINE, hw=hw).summary
    b = run_benchmark(EstimateBenchmark(), standard, options=INLINE, hw=hw).summary
    assert a["activation_parts"]["scores"] == 0
    # 32 heads x 4096^2 probabilities per layer
    assert b["activation_parts"]["scores"] >= 32 * 4096 * 4096 * 2
    assert b["per_gpu"]["activation_bytes"] > a["per_gpu"]["activation_bytes"]


def _validated(hw, **kw):
    """--validate, each case in its own process (the allocator setting it makes is the
    case's own), checked against the acceptance tolerances."""
    cfg = EstimateConfig(measure=True, device="cpu", **kw)
    doc = run_benchmark(EstimateBenchmark(), cfg, options=RunOptions(), hw=hw)
    assert [c.name for c in doc.cases] == ["validate/none", "validate/every", "validate/sqrt"]
    for case in doc.cases:
        assert case.status == "ok", case.reason
        m = case.metrics
        assert m["states_match"] is True, (case.name, m["predicted_state_bytes"])
        assert abs(m["activation_error_pct"]) <= 10, (case.name, m["activation_error_pct"])
        assert abs(m["peak_error_pct"]) <= 15, (case.name, m["peak_error_pct"])
    return doc


def test_validate_the_built_in_model_here(hw):
    doc = _validated(hw, model="mini", layers=4, batch=4, seq=257, precision="fp32")
    none, every = doc.cases[0].metrics, doc.cases[1].metrics
    assert every["activation_memory_bytes"] < none["activation_memory_bytes"] / 5


def test_validate_an_hf_config_here(hw, tmp_path):
    path = _config(tmp_path, model_type="llama", hidden_size=256, intermediate_size=704,
                   num_hidden_layers=2, vocab_size=512)
    # fp32: at these small widths pure bf16's step peak is underpredicted by ~27 % (at the
    # presets' real widths, benchmarks/estimate_validation.py, it is within 1 %)
    _validated(hw, hf_config=str(path), batch=4, seq=257, precision="fp32")


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "llama-9"], "unknown model 'llama-9'"),
    (["--zero", "4"], "--zero"),
    (["--gpus", "0"], "--gpus"),
    (["--optimizer", "adamax"], "unknown optimizer 'adamax'"),
    (["--model", "mini", "--hf-config", "llama-3-8b"], "not both"),
    (["--hidden", "64"], "without --model or --hf-config, give"),
    (["--model", "llama-3-8b", "--kv-heads", "3"], "does not divide"),
    (["--hidden", "64", "--intermediate", "128", "--heads", "4", "--vocab", "9", "--layers",
      "2", "--validate"], "--validate trains a built-in size or an --hf-config"),
])
def test_bad_input_is_one_line(args, message):
    run = _cli(*args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_config_missing_fields_is_one_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    run = _cli("--hf-config", str(path))
    assert run.returncode == 2 and "missing num_hidden_layers" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_the_stacked_bar_per_policy(hw):
    pytest.importorskip("matplotlib")
    from llmbench.report.plots import estimate

    doc = run_benchmark(EstimateBenchmark(), EstimateConfig(model="llama-3-8b",
                                                            memory_bytes=80 * 2**30),
                        options=INLINE, hw=hw)
    ((title, png),) = estimate(doc)
    assert "checkpoint policy" in title and png.startswith(b"\x89PNG")
