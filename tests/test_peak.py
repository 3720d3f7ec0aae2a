"""`llmbench peak` and the calibration it saves: the FLOP and byte conventions, the dtypes each
device is offered, a real small run on this CPU (its summary is the best of its cases, --save
writes a calibration that reads back), and the calibration's key: another device, driver,
torch or version is never read back."""

import json
import re

import pytest

import llmbench
from llmbench.benches.peak import (
    PeakBenchmark,
    PeakConfig,
    PeakSummary,
    cpu_stream_sizes,
    gbps_of,
    gemm_flops,
    moved_bytes,
    run_case,
    tflops_of,
)
from llmbench.core import hardware
from llmbench.core.benchmark import PlanContext
from llmbench.core.calibration import (
    Calibration,
    calibration_key,
    calibration_path,
    load_calibration,
    save_calibration,
)
from llmbench.core.errors import UsageError
from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo
from llmbench.core.profiles import select_profile
from llmbench.core.results import CaseResult
from llmbench.core.timing import TimeStats, TimingPolicy
from tests.conftest import assert_bad_input, run_cli

MIB = 2**20
GIB = 2**30
# A small sweep: a few seconds on 2 cores.
SMALL = ["--square", "128,256", "--hidden", "64", "--tokens", "256", "--stream-size", "8MiB",
         "--max-time", "0.2"]


def gpu_record(name="NVIDIA H100 80GB HBM3", cc=(9, 0), driver="570.86.15"):
    """What detect() returns on a one-GPU machine."""
    cpu = CpuInfo(model="AMD EPYC 7763 64-Core Processor", logical_cores=16, usable_cores=16,
                  isa="AVX2", max_ghz=3.5)
    gpu = GpuInfo(index=0, name=name, compute_capability=cc, memory_total_bytes=80 * GIB)
    return HardwareInfo(device="cuda", gpus=[gpu], cpu=cpu, driver=driver, nvml="ok",
                        torch="2.7.0+cu128", torch_cuda="12.8")


def calibration_for(hw, device, **figures):
    return Calibration(**calibration_key(hw, device), llmbench=llmbench.__version__,
                       created_at="2026-11-30T12:00:00+00:00",
                       **{"gemm_tflops": {"fp32": 0.3},
                          "gemm_shape": {"fp32": "2048 x 2048 x 2048"},
                          "copy_gbps": 20.0, "triad_gbps": 15.0, **figures})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------------------- conventions


def test_flop_and_byte_conventions():
    assert gemm_flops(2, 3, 4) == 48  # 2·M·N·K
    assert gemm_flops(4096, 4096, 4096) == 137_438_953_472
    assert moved_bytes("copy", 100) == 200  # STREAM copy: read one array, write one
    assert moved_bytes("triad", 100) == 300  # a = b + s*c: read two, write one
    assert moved_bytes("h2d", 100) == moved_bytes("d2h", 100) == 100
    assert tflops_of(2e12, 1000.0) == pytest.approx(2.0)  # 2e12 FLOP in 1 s
    assert tflops_of(137_438_953_472, 100.0) == pytest.approx(1.37438953472)
    assert gbps_of(3e9, 500.0) == pytest.approx(6.0)  # decimal GB


def test_the_cases_count_by_those_conventions():
    policy = TimingPolicy(warmup_s=0, min_runs=3, min_time_s=0, max_time_s=0.05).model_dump()
    gemm = run_case({"params": {"kind": "gemm", "device": "cpu", "dtype": "fp32", "m": 64,
                                "n": 32, "k": 16}, "timing": policy})
    assert gemm["flops_per_call"] == 2 * 64 * 32 * 16
    assert gemm["tflops"] == pytest.approx(65536 / (gemm["time_ms"].median * 1e-3) / 1e12)
    for kind, factor in (("copy", 2), ("triad", 3)):
        out = run_case({"params": {"kind": kind, "device": "cpu", "array_bytes": 4 * MIB},
                        "timing": policy})
        assert out["bytes_per_call"] == factor * 4 * MIB
        assert out["gbps"] == pytest.approx(factor * 4 * MIB / (out["time_ms"].median * 1e-3)
                                            / 1e9)


def test_stream_arrays_follow_streams_rule():
    assert cpu_stream_sizes(480 * MIB) == [2 * GIB]  # 4 x a 480 MiB L3
    assert cpu_stream_sizes(32 * MIB) == [128 * MIB, 256 * MIB]
    assert cpu_stream_sizes(None) == [128 * MIB, 256 * MIB]  # unknown: 32 MiB assumed
    assert cpu_stream_sizes(2 * MIB) == [64 * MIB, 128 * MIB]  # at least 64 MiB


# ---------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("cc, dtypes", [
    ((7, 0), ["fp32", "fp16"]),
    ((8, 0), ["fp32", "tf32", "fp16", "bf16"]),
    ((8, 9), ["fp32", "tf32", "fp16", "bf16", "fp8"]),
    ((9, 0), ["fp32", "tf32", "fp16", "bf16", "fp8"]),
])
def test_a_gpu_gets_every_dtype_it_computes(cc, dtypes):
    config = PeakBenchmark().resolve(PeakConfig(), gpu_record(cc=cc))
    assert config.dtypes == dtypes
    assert config.square == [1024, 2048, 4096, 8192] and config.stream_sizes == [GIB, 2 * GIB]


@pytest.mark.parametrize("cc, dtype, why", [
    ((8, 0), "fp8", "fp8 GEMMs (torch._scaled_mm) need compute capability >= 8.9"),
    ((7, 0), "bf16", "bf16 needs compute capability >= 8.0"),
    ((7, 5), "tf32", "TF32 tensor cores need compute capability >= 8.0"),
])
def test_a_gpu_refuses_a_dtype_it_cannot_compute(cc, dtype, why):
    with pytest.raises(UsageError, match=f"^--dtype {dtype}: {re.escape(why)}"):
        PeakBenchmark().resolve(PeakConfig(dtype=dtype), gpu_record(cc=cc))


def test_fp8_needs_dimensions_in_sixteens():
    with pytest.raises(UsageError, match="^--square: fp8 .* multiple of 16, got 1000"):
        PeakBenchmark().resolve(PeakConfig(dtype="fp8", square=[1000]), gpu_record())


def test_a_gpu_plans_gemms_stream_and_host_copies():
    hw = gpu_record()
    bench = PeakBenchmark()
    config = bench.resolve(PeakConfig(dtype="bf16"), hw)
    ctx = PlanContext(hw=hw, profile=select_profile(hw).profile, device="cuda")
    names = [p.name for p in bench.plan(config, ctx)]
    assert names[:4] == ["gemm bf16 1024x1024x1024", "gemm bf16 2048x2048x2048",
                         "gemm bf16 4096x4096x4096", "gemm bf16 8192x8192x8192"]
    assert names[4:6] == ["gemm bf16 8192x16384x4096", "gemm bf16 8192x4096x16384"]
    assert names[6:] == ["copy 1GiB", "copy 2GiB", "triad 1GiB", "triad 2GiB", "h2d 256MiB",
                         "h2d 1GiB", "d2h 256MiB", "d2h 1GiB"]


def test_a_gpu_summary_is_the_best_beside_its_datasheet():
    """The H100's figures (profile sm90: 989.4 TFLOP/s bf16, 3350 GB/s) against made-up
    case results: best per dtype and kind, and the efficiencies."""
    hw = gpu_record()
    bench = PeakBenchmark()
    config = bench.resolve(PeakConfig(dtype="bf16"), hw)
    ctx = PlanContext(hw=hw, profile=select_profile(hw).profile, device="cuda")
    plans = bench.plan(config, ctx)
    stats = TimeStats.from_samples([1.0])
    figures = {"gemm": [600.0, 700.0, 750.0, 720.0, 740.0, 730.0], "copy": [2900.0, 3000.0],
               "triad": [3050.0, 3010.0], "h2d": [50.0, 55.0], "d2h": [52.0, 51.0]}
    cases = []
    for plan in plans:
        value = figures[plan.params["kind"]].pop(0)
        key = "tflops" if plan.params["kind"] == "gemm" else "gbps"
        cases.append(CaseResult(name=plan.name, params=plan.params, status="ok",
                                metrics={"time_ms": stats, key: value}))
    cases, raw = bench.summarize(config, cases, ctx)
    summary = PeakSummary.model_validate(raw)
    assert summary.gemm["bf16"].tflops == 750.0
    assert summary.gemm["bf16"].shape == "4096 x 4096 x 4096"
    assert summary.gemm["bf16"].efficiency_pct == pytest.approx(100 * 750 / 989.4)
    assert summary.bandwidth["triad"].gbps == 3050.0
    assert summary.bandwidth["triad"].array_bytes == GIB
    assert summary.bandwidth["copy"].efficiency_pct == pytest.approx(100 * 3000 / 3350)
    assert summary.bandwidth["h2d"].gbps == 55.0 and summary.bandwidth["h2d"].efficiency_pct is None
    assert cases[0].metrics["of_peak_pct"] == pytest.approx(100 * 600 / 989.4)
    assert "H100" in summary.source and summary.memory_note is None


@pytest.mark.parametrize("dtype, why", [
    ("fp8", "fp8 GEMMs (torch._scaled_mm) are measured on NVIDIA GPUs"),
    ("tf32", "TF32 is a mode of NVIDIA tensor cores"),
])
def test_a_gpu_dtype_on_the_cpu_is_one_line_and_exit_2(dtype, why):
    assert_bad_input(run_cli("peak", "--dtype", dtype, timeout=60), f"--dtype {dtype}: {why}")


# ---------------------------------------------------------------------------- a real run


def test_a_small_run_and_save(tmp_path, cache):
    out = tmp_path / "peak.json"
    proc = run_cli("peak", *SMALL, "--save", "--json", str(out), "--device", "cpu",
                   env={"LLMBENCH_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert all(c["status"] == "ok" for c in doc["cases"]), doc["cases"]
    gemms = [c for c in doc["cases"] if c["params"]["kind"] == "gemm"]
    assert len(gemms) == 4 and all(c["metrics"]["tflops"] > 0 for c in gemms)
    best = max(gemms, key=lambda c: c["metrics"]["tflops"])
    summary = doc["summary"]
    assert summary["gemm"]["fp32"]["tflops"] == best["metrics"]["tflops"]
    assert summary["gemm"]["fp32"]["shape"] == best["params"]["shape"]
    for kind in ("copy", "triad"):
        runs = [c["metrics"]["gbps"] for c in doc["cases"] if c["params"]["kind"] == kind]
        assert summary["bandwidth"][kind]["gbps"] == max(runs) > 0
    # the CPU profile has no memory bandwidth: said, not made up
    assert summary["bandwidth"]["copy"]["efficiency_pct"] is None and summary["memory_note"]
    hw = hardware.detect()
    cal = load_calibration(hw, "cpu")
    assert cal is not None
    assert summary["calibration"] == str(calibration_path(hw, "cpu"))
    # (rich folds the line at 80 columns when stderr is not a terminal)
    assert f"calibration saved to {summary['calibration']}" in proc.stderr.replace("\n", "")
    assert cal.gemm_tflops == {"fp32": summary["gemm"]["fp32"]["tflops"]}
    assert cal.gemm_shape == {"fp32": summary["gemm"]["fp32"]["shape"]}
    assert cal.copy_gbps == summary["bandwidth"]["copy"]["gbps"]
    assert cal.triad_gbps == summary["bandwidth"]["triad"]["gbps"]
    assert cal.h2d_gbps is None and cal.device_name == hw.cpu.model and cal.driver is None
    assert "best of the sweep" in proc.stdout and "GEMM fp32" in proc.stdout


def test_without_save_nothing_is_written(cache):
    doc = llmbench.run("peak", square=[128], hidden=[64], tokens=128, stream_size=["4MiB"],
                       max_time=0.1, device="cpu")
    assert [c.status for c in doc.cases] == ["ok"] * 5
    assert doc.summary["calibration"] is None
    assert not cache.exists()


def test_bf16_on_the_cpu_where_torch_computes_it(cache):
    why = hardware.dtype_unsupported("cpu", "bf16", hardware.detect())
    options = {"dtype": "bf16", "square": [128], "hidden": [64], "tokens": 128,
               "stream_size": ["4MiB"], "max_time": 0.1, "device": "cpu"}
    if why is not None:
        with pytest.raises(UsageError, match=f"^--dtype bf16: {re.escape(why)}"):
            llmbench.run("peak", **options)
        return
    doc = llmbench.run("peak", **options)
    gemms = [c for c in doc.cases if c.params["kind"] == "gemm"]
    assert {c.params["dtype"] for c in gemms} == {"bf16"} and all(c.ok for c in gemms)
    assert doc.summary["gemm"]["bf16"]["tflops"] == max(c.metrics["tflops"] for c in gemms)


# ---------------------------------------------------------------------------- calibration


def test_calibration_round_trip(cache):
    hw = hardware.detect()
    cal = calibration_for(hw, "cpu")
    path = save_calibration(cal, hw, "cpu")
    assert path == calibration_path(hw, "cpu") and path.is_relative_to(cache / "calibration")
    assert load_calibration(hw, "cpu") == cal
    assert cal.bandwidth_gbps == 20.0  # the higher of copy and triad
    assert cal.describe() == f"calibration of 2026-11-30 (llmbench peak, torch {hw.torch})"


def test_a_gpu_calibration_is_keyed_by_name_driver_and_torch(cache):
    hw = gpu_record()
    key = calibration_key(hw, "cuda")
    assert key == {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3",
                   "driver": "570.86.15", "torch": "2.7.0+cu128"}
    assert calibration_path(hw, "cuda").name.startswith(
        "cuda-nvidia-h100-80gb-hbm3-driver-570.86.15-torch-2.7.0-cu128-")
    cal = calibration_for(hw, "cuda", triad_gbps=3000.0, h2d_gbps=55.0, d2h_gbps=52.0)
    save_calibration(cal, hw, "cuda")
    assert load_calibration(hw, "cuda") == cal
    assert cal.bandwidth_gbps == 3000.0
    for other in (gpu_record(driver="575.51.03"), gpu_record(name="NVIDIA H200"),
                  hw.model_copy(update={"torch": "2.8.0+cu128"})):
        assert calibration_path(other, "cuda") != calibration_path(hw, "cuda")
        assert load_calibration(other, "cuda") is None


def test_another_key_version_or_garbage_is_not_loaded(cache):
    hw = hardware.detect()
    path = calibration_path(hw, "cpu")
    path.parent.mkdir(parents=True)
    theirs = calibration_for(hw, "cpu").model_copy(update={"device_name": "another CPU"})
    path.write_text(theirs.model_dump_json())  # another machine's, under this one's name
    assert load_calibration(hw, "cpu") is None
    path.write_text(json.dumps({**calibration_for(hw, "cpu").model_dump(), "version": 2}))
    assert load_calibration(hw, "cpu") is None
    path.write_text("{not json")
    assert load_calibration(hw, "cpu") is None
    path.write_text(json.dumps({"version": 1}))
    assert load_calibration(hw, "cpu") is None
    path.write_text(calibration_for(hw, "cpu").model_dump_json())
    assert load_calibration(hw, "cpu") is not None
    with pytest.raises(ValueError, match="another machine: device_name"):
        save_calibration(theirs, hw, "cpu")
