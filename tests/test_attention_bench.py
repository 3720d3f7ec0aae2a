import pytest

from llmbench import kernels
from llmbench.benches.attention import AttentionBenchmark, AttentionConfig, _scaling
from llmbench.benches.base import PlanContext
from llmbench.core.errors import UsageError
from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo, dtype_unsupported
from llmbench.core.profiles import select_profile
from llmbench.core.results import CaseResult
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.core.timing import TimeStats

BENCH = AttentionBenchmark()


def gpu_machine(cc):
    cpu = CpuInfo(model="x", logical_cores=8, usable_cores=8)
    return HardwareInfo(device="cuda", cpu=cpu, nvml="ok",
                        gpus=[GpuInfo(index=0, name="Tesla T4", compute_capability=cc)])


@pytest.mark.parametrize("kwargs, message", [
    ({"seqs": [0]}, "seq must be positive"),
    ({"heads": 8, "kv_heads": 3}, "kv_heads 3 does not divide heads 8"),
    ({"impls": ["standard", "magic"]}, "unknown impl 'magic'"),
    ({"head_dim": 0}, "greater than 0"),
    ({"dtype": "fp8"}, "fp8"),
])
def test_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionConfig(**kwargs)


def test_resolve_fills_defaults_for_the_cpu(hw):
    if hw.device != "cpu":
        pytest.skip("CPU defaults")
    cfg = BENCH.resolve(AttentionConfig(heads=4), hw)
    assert (cfg.device, cfg.dtype, cfg.kv_heads) == ("cpu", "fp32", 4)


def test_resolve_rejects_cuda_without_gpu(hw):
    if hw.device == "cuda":
        pytest.skip("a GPU is present")
    with pytest.raises(UsageError, match="--device cuda: no usable CUDA GPU"):
        BENCH.resolve(AttentionConfig(device="cuda"), hw)


def test_resolve_rejects_explicit_impl_that_cannot_take_the_head_dim(hw):
    with pytest.raises(UsageError, match="--impl flash-attn: flash-attn supports head dims up"):
        BENCH.resolve(AttentionConfig(impls=["flash-attn"], head_dim=512, device="cpu"), hw)
    # Asked for all: the same impl is just listed as unavailable.
    cfg = BENCH.resolve(AttentionConfig(head_dim=512, device="cpu"), hw)
    ctx = PlanContext(hw=hw, profile=select_profile(hw, device="cpu").profile, device="cpu")
    plans = {p.params["impl"]: p for p in BENCH.plan(cfg, ctx)}
    assert "up to 256" in plans["flash-attn"].unavailable


def test_dtype_support_by_device():
    assert "8.0" in dtype_unsupported("cuda", "bf16", gpu_machine((7, 5)))
    assert "5.3" in dtype_unsupported("cuda", "fp16", gpu_machine((5, 0)))
    assert dtype_unsupported("cuda", "fp16", gpu_machine((7, 5))) is None
    with pytest.raises(UsageError, match="--dtype bf16: bf16 needs compute capability >= 8.0"):
        BENCH.resolve(AttentionConfig(dtype="bf16"), gpu_machine((7, 5)))


def test_plan_names_params_and_tiles(hw):
    cfg = BENCH.resolve(AttentionConfig(seqs=[256, 512], impls=["standard", "tiled"],
                                        device="cpu"), hw)
    profile = select_profile(hw, device="cpu").profile
    plans = BENCH.plan(cfg, PlanContext(hw=hw, profile=profile, device="cpu"))
    assert [p.name for p in plans] == ["standard/seq=256/fwd", "tiled/seq=256/fwd",
                                       "standard/seq=512/fwd", "tiled/seq=512/fwd"]
    tile = profile.tile_for(64)
    assert plans[1].params["block_m"] == tile.block_m
    assert plans[1].params["block_n"] == tile.block_n
    assert "block_m" not in plans[0].params
    assert plans[0].required_memory_bytes > plans[0].predicted_memory_bytes


def doc_config(cfg, hw):
    return BENCH.resolve(cfg, hw)


def test_inline_run_all_impls(hw, fast_timing):
    cfg = AttentionConfig(seqs=[128, 256], device="cpu", heads=4, kv_heads=2, head_dim=32,
                          check_rows=64, timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=False), hw=hw)
    by_name = {c.name: c for c in doc.cases}
    assert len(doc.cases) == 2 * len(kernels.default_names())
    runnable = {"standard", "sdpa-flash", "sdpa-math", "tiled"}
    if kernels.get("triton").device_reason(BENCH._problem(doc_config(cfg, hw), 256, hw)) is None:
        runnable.add("triton")  # Triton's interpreter is on (conftest)
    for impl in sorted(runnable):
        case = by_name[f"{impl}/seq=256/fwd"]
        assert case.status == "ok", case.reason
        assert case.metrics["max_abs_error"] < 1e-5
        assert case.metrics["error_rows_checked"] == 64
        assert case.time().n >= 3
        assert case.metrics["throughput_tflops"] > 0
        assert case.metrics["speedup_vs_standard_x"] > 0
    assert by_name["standard/seq=256/fwd"].metrics["speedup_vs_standard_x"] == 1.0
    assert by_name["flash-attn/seq=128/fwd"].status == "unavailable"
    assert set(doc.summary["scaling"]) == runnable
    assert doc.summary["standard_limit"]["predicted_max_seq"] > 10_000
    assert doc.config["dtype"] == "fp32" and doc.config["kv_heads"] == 2


def test_inline_fwd_bwd_checks_gradients(hw, fast_timing):
    cfg = AttentionConfig(seqs=[96], device="cpu", heads=2, head_dim=16, mode="fwd+bwd",
                          impls=["standard", "tiled", "sdpa-flash"], check_seq=64,
                          timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=False), hw=hw)
    for case in doc.cases:
        assert case.status == "ok", case.reason
        assert case.metrics["grad_max_abs_error"] < 1e-4
        assert case.metrics["grad_check_seq"] == 64
        assert case.name.endswith("/fwd+bwd")


def test_isolated_case_runs_in_a_child(hw, fast_timing):
    cfg = AttentionConfig(seqs=[64], device="cpu", heads=2, head_dim=16, impls=["tiled"],
                          timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=True, timeout_s=120), hw=hw)
    (case,) = doc.cases
    assert case.status == "ok", case.reason
    assert case.metrics["peak_memory_bytes"] >= 0
    assert case.metrics["max_abs_error"] < 1e-5


def test_skips_a_case_that_cannot_fit(hw, fast_timing):
    # batch 4096 x 64 heads at seq 16384 needs petabytes for the standard score matrix.
    cfg = AttentionConfig(seqs=[16384], batch=4096, heads=64, impls=["standard"],
                          device="cpu", timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=False), hw=hw)
    (case,) = doc.cases
    assert case.status == "skipped"
    assert "needs about" in case.reason and "free on cpu" in case.reason
    assert doc.summary["standard_limit"]["first_failed_seq"] == 16384


def fake_case(impl, seq, mem, ms):
    return CaseResult(name=f"{impl}/seq={seq}/fwd", params={"impl": impl, "seq": seq},
                      status="ok", metrics={"peak_memory_bytes": mem,
                                            "time_ms": TimeStats.from_samples([ms])})


def test_scaling_exponents():
    seqs = [1024, 2048, 4096, 8192]
    cases = [fake_case("standard", s, 8 * s * s, 1e-6 * s * s) for s in seqs]
    cases += [fake_case("sdpa-flash", s, 256 * s, 1e-7 * s * s) for s in seqs]
    fits = _scaling(cases)
    assert fits["standard"]["memory_exponent"] == pytest.approx(2.0)
    assert fits["sdpa-flash"]["memory_exponent"] == pytest.approx(1.0)
    assert fits["sdpa-flash"]["time_exponent"] == pytest.approx(2.0)
