"""amp, checkpoint, optim, accum: small real runs in this process, and their bad input."""

import pytest

from llmbench.benches.accum import AccumBenchmark, AccumConfig, default_micro
from llmbench.benches.amp import AmpBenchmark, AmpConfig
from llmbench.benches.checkpoint import CheckpointBenchmark, CheckpointConfig
from llmbench.benches.optim import (
    OptimBenchmark,
    OptimConfig,
    analytic_breakdown,
    parameter_count,
    parse_param_count,
)
from llmbench.core.errors import UsageError
from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo
from llmbench.core.runner import RunOptions, run_benchmark

INLINE = RunOptions(isolate=False)


def gpu(cc):
    return HardwareInfo(device="cuda", cpu=CpuInfo(model="x", logical_cores=4, usable_cores=4),
                        nvml="ok", gpus=[GpuInfo(index=0, name="old", compute_capability=cc)])


def test_amp_small_run(hw, fast_timing):
    cfg = AmpConfig(steps=6, batch=2, seq=16, device="cpu", demo="underflow",
                    timing=fast_timing)
    doc = run_benchmark(AmpBenchmark(), cfg, options=INLINE, hw=hw)
    cases = {c.name: c for c in doc.cases}
    assert list(cases) == ["fp32", "fp16+scaler", "bf16", "underflow-demo"]
    for name in ("fp32", "fp16+scaler", "bf16"):
        m = cases[name].metrics
        assert cases[name].status == "ok", cases[name].reason
        assert len(m["loss_curve"]) == 6 and m["time_ms"].n == 3  # steps after 3 warm-ups
        assert m["activation_memory_bytes"] > 0 and m["peak_memory_bytes"] > 0
        assert abs(m["loss_diff_vs_fp32"]) < 0.05
        assert m["arithmetic_intensity"] == m["flops_per_step"] / m["bytes_moved"]
    # bf16 autocast keeps fp32 weights and states: the same lower-bound traffic, less activation
    assert (cases["bf16"].metrics["bytes_moved"] - cases["fp32"].metrics["bytes_moved"]
            == 2 * (cases["bf16"].metrics["activation_memory_bytes"]
                    - cases["fp32"].metrics["activation_memory_bytes"]))
    assert cases["fp16+scaler"].metrics["scale_trace"] == [65536.0] * 6
    assert "scale_trace" not in cases["bf16"].metrics
    demo = cases["underflow-demo"].metrics
    assert 0 <= demo["zeroed_fraction_scaled"] <= demo["zeroed_fraction_unscaled"] <= 1
    assert demo["nonzero_fp32_elements"] <= demo["gradient_elements"]
    assert set(doc.summary["parity"]) == {"fp32", "fp16+scaler", "bf16"}


def test_amp_rejects_fp16_where_the_device_has_none():
    with pytest.raises(UsageError, match="--variants fp16: fp16 needs compute capability"):
        AmpBenchmark().resolve(AmpConfig(variants=["fp16"]), gpu((5, 0)))
    with pytest.raises(UsageError, match="--variants bf16: bf16 needs compute capability"):
        AmpBenchmark().resolve(AmpConfig(variants=["bf16"]), gpu((7, 5)))
    with pytest.raises(ValueError):
        AmpConfig(steps=2)


def test_checkpoint_small_sweep(hw, fast_timing):
    # seq 128: each layer input is 256 KiB, well above the tens of KiB of RSS noise that made the
    # depth exponent of the small sqrt policy flaky at seq 32.
    cfg = CheckpointConfig(model="tiny", layers=[2, 4, 8], batch=4, seq=128, device="cpu",
                           timing=fast_timing)
    doc = run_benchmark(CheckpointBenchmark(), cfg, options=INLINE, hw=hw)
    names = [c.name for c in doc.cases]
    assert names[0] == "depth-independent/layers=1" and "sqrt/layers=8" in names
    by = {c.name: c for c in doc.cases}
    for case in doc.cases:
        assert case.status == "ok", case.reason
    for policy in ("every", "sqrt"):
        assert by[f"{policy}/layers=8"].metrics["activation_saved_pct"] > 50
    assert by["none/layers=8"].metrics["overhead_pct"] == 0.0
    # recomputation: every and sqrt both run all 8 layers' forward again, but for the last
    # down-projection of each segment (torch's early stop): every has 8 segments, sqrt 3
    flops = {p: by[f"{p}/layers=8"].metrics["flops_per_step"] for p in ("none", "sqrt", "every")}
    assert flops["none"] < flops["every"] < flops["sqrt"]
    fits = doc.summary["activation_fit"]
    assert set(fits) == {"none", "every", "every-2", "sqrt"}
    assert 0.8 < fits["none"]["exponent"] < 1.2
    assert fits["sqrt"]["exponent_raw"] < 0.5 * fits["none"]["exponent_raw"]
    assert fits["sqrt"]["exponent"] < fits["none"]["exponent"]
    # The same document through its typed records, as the renderer reads it.
    from llmbench.benches import params_of, summary_of
    from llmbench.benches.checkpoint import ActivationFit, CheckpointCase

    typed = [params_of(doc, c) for c in doc.cases]
    assert all(isinstance(p, CheckpointCase) for p in typed)
    assert {p.policy for p in typed} >= {"none", "sqrt"}
    fit = summary_of(doc).activation_fit["none"]
    assert isinstance(fit, ActivationFit) and fit.exponent == fits["none"]["exponent"]


def test_checkpoint_config_errors():
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        CheckpointConfig(every=0)
    with pytest.raises(ValueError, match="unknown policy 'half'"):
        CheckpointConfig(policies=["half"])
    with pytest.raises(ValueError, match="layers must be at least 1"):
        CheckpointConfig(layers=[0])


def test_optim_small_run(hw, fast_timing):
    cfg = OptimConfig(optimizers=["sgd", "adamw", "lion", "adam8bit"], batch=2, seq=16,
                      device="cpu", compare_decay=True, decay_steps=8, timing=fast_timing)
    doc = run_benchmark(OptimBenchmark(), cfg, options=INLINE, hw=hw)
    by = {c.name: c for c in doc.cases}
    for name, per_param in (("sgd", 0), ("adamw", 8), ("lion", 4)):
        m = by[name].metrics
        assert by[name].status == "ok", by[name].reason
        assert m["state_matches_analytic"] is True
        assert m["elementwise_state_bytes_per_param"] == per_param
        assert m["training_peak_bytes"] >= m["weights_bytes"]
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        assert by["adam8bit"].status == "unavailable"
    d = by["decay-comparison"].metrics
    assert abs(d["adamw_decay_ratio_median"] - 1) < 1e-2
    assert abs(d["adamw_decay_ratio_p10"] - 1) < 1e-2
    assert d["adam+l2_decay_ratio_median"] > 2  # L2 goes through 1/sqrt(v): far from 1
    assert d["adam+l2_decay_ratio_small_grads"] > d["adam+l2_decay_ratio_large_grads"]
    assert doc.summary["params"] == by["sgd"].metrics["params"]
    # the optimizer's step moves its states twice (read, write): AdamW's 8 B/param more than
    # SGD's none, plus its per-tensor step counters
    extra = by["adamw"].metrics["bytes_moved"] - by["sgd"].metrics["bytes_moved"]
    assert extra == 2 * by["adamw"].metrics["state_bytes"]
    assert by["adamw"].metrics["arithmetic_intensity"] == 0.0  # element-wise work only


def test_optim_analytic_for_large_models():
    assert parse_param_count("7b") == 7_000_000_000
    assert parse_param_count("1.5B") == 1_500_000_000
    assert parse_param_count("350m") == 350_000_000
    assert parse_param_count("llama") is None
    assert parameter_count("llama-3-8b") == 8_030_261_248
    row = analytic_breakdown(7_000_000_000, "adamw", "fp32")
    assert row["bytes_per_param"] == 16 and row["total_bytes"] == 112_000_000_000
    assert analytic_breakdown(10, "adam", "bf16")["bytes_per_param"] == 8
    assert analytic_breakdown(10, "sgd", "fp32")["bytes_per_param"] == 8
    with pytest.raises(ValueError, match="unknown model '13q'"):
        OptimConfig(model="13q")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        OptimConfig(optimizers=["rmsprop"])


def test_optim_preset_is_analytic_only(hw):
    doc = run_benchmark(OptimBenchmark(), OptimConfig(model="llama-2-7b", device="cpu"),
                        options=INLINE, hw=hw)
    assert doc.cases == []
    adam = next(r for r in doc.summary["analytic"] if r["optimizer"] == "adam")
    assert adam["total_bytes"] == 16 * 6_738_415_616
    with pytest.raises(UsageError, match="--compare-decay trains a built-in size"):
        OptimBenchmark().resolve(OptimConfig(model="7b", compare_decay=True), hw)


def test_accum_small_run(hw, fast_timing):
    cfg = AccumConfig(batch=8, micro=[8, 4, 2], seq=32, device="cpu", timing=fast_timing)
    doc = run_benchmark(AccumBenchmark(), cfg, options=INLINE, hw=hw)
    assert [c.name for c in doc.cases] == ["8x1", "4x2", "2x4"]
    for case in doc.cases:
        assert case.status == "ok", case.reason
        assert case.metrics["grad_rel_error"] < 1e-5
    assert doc.cases[0].metrics["grad_max_abs_error"] == 0.0
    # the same FLOPs however the batch is split; each further micro-batch reads the weights
    # twice more and reads and writes the gradients to accumulate
    flops = {c.metrics["flops_per_step"] for c in doc.cases}
    assert len(flops) == 1
    moved = [c.metrics["bytes_moved"] for c in doc.cases]
    assert moved[0] < moved[1] < moved[2]
    assert default_micro(32) == [32, 16, 8, 4]
    assert default_micro(6) == [6, 3, 1]
    with pytest.raises(UsageError, match="--micro 5 does not divide --batch 32"):
        AccumBenchmark().resolve(AccumConfig(micro=[5]), hw)
