import json

import pytest

from llmbench import kernels
from llmbench.benches.attention import (
    AttentionBenchmark,
    AttentionConfig,
    _scaling,
    check_lengths,
    run_case,
)
from llmbench.core.benchmark import PlanContext
from llmbench.core.errors import UsageError
from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo, dtype_unsupported
from llmbench.core.profiles import select_profile
from llmbench.core.results import CaseResult
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.core.timing import TimeStats
from llmbench.kernels.problem import AttentionProblem, attention_flops
from tests.conftest import assert_bad_input, run_cli, run_cli_inprocess

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
    ({"kv_seq": 0}, "greater than 0"),
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


def test_isolated_case_runs_in_a_child_and_its_peak_is_the_predicted_one(hw, fast_timing):
    """A case in its own process, as the benchmark runs them: GQA (torch.matmul copies K and
    V per query head), forward + backward; the peak it measures (on a CPU, the resident set
    following the live tensors) is the one predicted, within 5 %."""
    cfg = AttentionConfig(seqs=[512], device="cpu", heads=8, kv_heads=2, head_dim=64,
                          mode="fwd+bwd", impls=["standard"], check_rows=16, check_seq=32,
                          timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=True, timeout_s=120), hw=hw)
    (case,) = doc.cases
    assert case.status == "ok", case.reason
    assert case.metrics["max_abs_error"] < 1e-5
    assert case.metrics["grad_max_abs_error"] < 1e-4
    predicted, measured = (case.metrics[k] for k in ("predicted_memory_bytes",
                                                     "peak_memory_bytes"))
    # 8 heads x 512^2 fp32 score matrices are 8 MiB each: scores, probabilities, dP and dS
    # are far above the granularity of the resident set
    assert predicted > 3 * 8 * 2**20
    assert measured == pytest.approx(predicted, rel=0.05)


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


# ------------------------------------------------------------------ keys of another length


def test_resolve_rejects_kv_seq_with_varlen(hw):
    with pytest.raises(UsageError, match="--kv-seq sets the key length of a dense batch"):
        BENCH.resolve(AttentionConfig(kv_seq=64, varlen=[16, 32], device="cpu"), hw)


def test_plan_records_the_key_length(hw):
    cfg = BENCH.resolve(AttentionConfig(seqs=[1, 16], kv_seq=4096, impls=["standard", "tiled"],
                                        device="cpu"), hw)
    profile = select_profile(hw, device="cpu").profile
    plans = BENCH.plan(cfg, PlanContext(hw=hw, profile=profile, device="cpu"))
    assert [p.name for p in plans] == ["standard/seq=1/kv=4096/fwd", "tiled/seq=1/kv=4096/fwd",
                                       "standard/seq=16/kv=4096/fwd",
                                       "tiled/seq=16/kv=4096/fwd"]
    assert all(p.params["kv_seq"] == 4096 for p in plans)
    square = BENCH.plan(BENCH.resolve(AttentionConfig(seqs=[16], impls=["standard"],
                                                      device="cpu"), hw),
                        PlanContext(hw=hw, profile=profile, device="cpu"))
    assert "kv_seq" not in square[0].params and square[0].name == "standard/seq=16/fwd"
    # inputs: q (8 heads x 16 x 64 fp32) and K, V of 4096 keys
    problem = BENCH._problem(cfg, 16, hw)
    assert plans[2].required_memory_bytes == problem.input_bytes + plans[2].predicted_memory_bytes
    assert problem.kv_bytes == 2 * 8 * 4096 * 64 * 4


def test_check_lengths_keep_the_shape():
    assert check_lengths(96, 96, 64) == (64, 64)
    assert check_lengths(1, 8192, 512) == (1, 512)
    assert check_lengths(8192, 1024, 512) == (512, 64)
    assert check_lengths(20, 45, 512) == (20, 45)


@pytest.mark.parametrize("seq, kv_seq", [(16, 64), (48, 16), (1, 37)])
def test_inline_run_with_another_key_length(hw, fast_timing, seq, kv_seq):
    cfg = AttentionConfig(seqs=[seq], kv_seq=kv_seq, device="cpu", heads=4, kv_heads=2,
                          head_dim=16, mode="fwd+bwd", impls=["standard", "sdpa-flash", "tiled"],
                          check_seq=32, timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=False), hw=hw)
    flops = attention_flops(AttentionProblem(
        batch=1, heads=4, kv_heads=2, seq=seq, seq_k=kv_seq, head_dim=16, dtype="fp32",
        causal=True, mode="fwd+bwd", device="cpu"))
    for case in doc.cases:
        assert case.status == "ok", case.reason
        assert case.name.endswith(f"/seq={seq}/kv={kv_seq}/fwd+bwd")
        assert case.metrics["max_abs_error"] < 1e-5
        assert case.metrics["grad_max_abs_error"] < 1e-4
        assert case.metrics["flops_per_call"] == flops
        assert (case.metrics["grad_check_seq"], case.metrics["grad_check_kv_seq"]) == \
            check_lengths(seq, kv_seq, 32)
    assert doc.config["kv_seq"] == kv_seq


def test_run_case_passes_triton_backward_tiles(monkeypatch, fast_timing):
    import llmbench.kernels.tiled as tiled

    seen = []
    real = tiled.tiled_attention

    def spy(q, k, v, **kw):
        seen.append(kw)
        return real(q, k, v, **kw)

    monkeypatch.setattr(tiled, "tiled_attention", spy)
    dkdv = {"block_m": 32, "block_n": 16, "num_warps": 4, "num_stages": 1}
    params = {"impl": "tiled", "seq": 8, "kv_seq": 24, "batch": 1, "heads": 2, "kv_heads": 2,
              "head_dim": 16, "dtype": "fp32", "causal": True, "mode": "fwd+bwd",
              "device": "cpu", "block_m": 16, "block_n": 16, "num_warps": 4, "num_stages": 1,
              "dkdv": dkdv, "dq": None}
    metrics = run_case({"params": params, "seed": 0, "check_rows": 8, "check_seq": 16,
                        "timing": fast_timing.model_dump()})
    assert metrics["max_abs_error"] < 1e-5
    assert seen and all(kw["dkdv"] == dkdv and "dq" not in kw for kw in seen)
    assert all(kw["block_m"] == 16 for kw in seen)


def test_cli_kv_seq_runs_and_shows_it(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("attention", "--seq", "16", "--kv-seq", "64", "--impl",
                   "standard,sdpa-flash,tiled", "--heads", "2", "--head-dim", "16",
                   "--max-time", "0.2", "--no-isolate", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert {c["name"]: c["status"] for c in doc["cases"]} == {
        "standard/seq=16/kv=64/fwd": "ok", "sdpa-flash/seq=16/kv=64/fwd": "ok",
        "tiled/seq=16/kv=64/fwd": "ok"}
    assert doc["config"]["kv_seq"] == 64
    assert "kv seq" in proc.stdout and "bottom-right" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--kv-seq", "64", "--varlen", "16,32"], "--kv-seq sets the key length of a dense batch"),
    (["--kv-seq", "0"], "--kv-seq: Input should be greater than 0"),
])
def test_cli_kv_seq_bad_input(args, message):
    assert_bad_input(run_cli_inprocess("attention", *args, "--device", "cpu", timeout=120), message)


# ------------------------------------------------------------------ compiled implementations
# Each case compiles from cold caches (seconds on this CPU): few cases, small shapes.


def test_flex_reports_compile_and_mask_times_apart(hw, fast_timing):
    """GQA with a sliding window: flex runs fully causal and windowed, correct to fp64, its
    first call (the compilation) apart from its steady time, and its block mask's creation;
    the window summary covers it. (compiled's compile time: the fwd+bwd test below.)"""
    from rich.console import Console

    from llmbench.report.attention import render

    cfg = AttentionConfig(seqs=[96], device="cpu", heads=4, kv_heads=2, head_dim=32,
                          window=32, impls=["standard", "flex"], timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=False), hw=hw)
    by_name = {c.name: c for c in doc.cases}
    for mask in ("causal", "window=32"):
        case = by_name[f"flex/seq=96/fwd/{mask}"]
        assert case.status == "ok", case.reason
        assert case.metrics["max_abs_error"] < 1e-4
        # the first call compiled: far longer than a steady call
        assert case.metrics["compile_ms"] > 20 * case.time().median
        assert case.metrics["mask_ms"] > 0
    assert doc.summary["window"]["flex/seq=96"]["expected_flop_ratio"] == \
        doc.summary["window"]["standard/seq=96"]["expected_flop_ratio"]
    assert "compile_ms" not in by_name["standard/seq=96/fwd/causal"].metrics
    console = Console(record=True, width=220)
    render(doc, console)
    text = console.export_text()
    assert "compile" in text and "mask build" in text
    flex_row = next(line for line in text.splitlines() if line.startswith("flex "))
    assert flex_row.rstrip().endswith("ms") and " s " in flex_row  # compile in s, mask in ms


def test_fwd_bwd_checks_compiled_gradients_and_flex_says_why_not_here(hw, fast_timing):
    from llmbench.kernels.flex import backward_refusal

    cfg = AttentionConfig(seqs=[64], device="cpu", heads=2, head_dim=16, mode="fwd+bwd",
                          impls=["compiled", "flex"], check_seq=64, timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=False), hw=hw)
    compiled, flex = doc.cases
    assert compiled.status == "ok", compiled.reason
    assert compiled.metrics["grad_max_abs_error"] < 1e-4
    assert compiled.metrics["grad_check_seq"] == 64
    assert compiled.metrics["compile_ms"] > 20 * compiled.time().median
    if backward_refusal("cpu") is None:
        assert flex.status == "ok" and flex.metrics["grad_max_abs_error"] < 1e-4
    else:
        assert flex.status == "unavailable"
        assert flex.reason.startswith("no FlexAttention backward here: FlexAttention does not "
                                      "support backward on CPU")


def test_varlen_compares_flex_document_mask_with_padding(hw, fast_timing):
    lengths = [40, 90, 7]
    cfg = AttentionConfig(varlen=lengths, device="cpu", heads=4, kv_heads=2, head_dim=32,
                          window=16, timing=fast_timing)
    doc = run_benchmark(BENCH, cfg, options=RunOptions(isolate=False), hw=hw)
    by_impl = {c.params["impl"]: c for c in doc.cases}
    flex, padded = by_impl["flex-varlen"], by_impl["sdpa-padded"]
    for case in (flex, padded):
        assert case.status == "ok", case.reason
        assert case.metrics["max_abs_error"] < 1e-4
    # the packed case computes exactly the FLOPs the batch needs: one rule for both
    assert flex.metrics["flops_computed"] == flex.metrics["flops_needed"] == \
        padded.metrics["flops_needed"] == doc.summary["useful_flops"]
    assert flex.metrics["wasted_flops_pct"] == 0.0 < padded.metrics["wasted_flops_pct"]
    assert flex.metrics["compile_ms"] > 0 and flex.metrics["mask_ms"] > 0
    assert "compile_ms" not in padded.metrics
