"""Real devices as the HardwareInfo record llmbench builds from NVML and torch, and what llmbench
makes of each: profile and why, default dtype, peak and its source, forward and backward tiles,
attention implementations, and the `llmbench env` report rendered for the record."""

import importlib.util
import io

import pytest
from rich.console import Console

from llmbench import kernels
from llmbench.benches.attention import AttentionBenchmark, AttentionConfig
from llmbench.benches.environment import describe
from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo, default_dtype
from llmbench.core.profiles import select_profile
from llmbench.kernels.problem import AttentionProblem
from llmbench.report.env import render

GIB = 1024**3
MIB = 1024**2


def record(name, cc, memory_bytes, sms):
    """What detect() returns on a one-GPU machine with this GPU."""
    cpu = CpuInfo(model="AMD EPYC 7763 64-Core Processor", logical_cores=16, physical_cores=8,
                  usable_cores=16, isa="AVX2", max_ghz=3.5, ram_total_bytes=256 * GIB)
    gpu = GpuInfo(index=0, name=name, compute_capability=cc, memory_total_bytes=memory_bytes,
                  sm_count=sms, uuid="GPU-5f1a9c2e-0000-0000-0000-000000000000")
    return HardwareInfo(device="cuda", gpus=[gpu], cpu=cpu, driver="570.86.15",
                        cuda_driver="12.8", nvml="ok", torch="2.7.0+cu128", torch_cuda="12.8",
                        cudnn="90701")


# name as NVML/torch report it, compute capability, memory, SMs; profile, reason; default dtype;
# the SKU matched (None: the family reference) and its dense peak in that dtype.
MATRIX = [
    ("NVIDIA A100-SXM4-80GB", (8, 0), 81920 * MIB, 108, "sm80", "exact match", "bf16",
     "A100 SXM4 80GB", 312),
    ("NVIDIA H100 80GB HBM3", (9, 0), 81559 * MIB, 132, "sm90", "exact match", "bf16",
     "H100 SXM5", 989.4),
    ("NVIDIA H200", (9, 0), 143771 * MIB, 132, "sm90", "exact match", "bf16", "H200 SXM", 989.4),
    ("NVIDIA L4", (8, 9), 23034 * MIB, 58, "sm89", "exact match", "bf16", "L4", 121),
    ("NVIDIA GeForce RTX 4090", (8, 9), 24564 * MIB, 128, "sm89", "exact match", "bf16",
     "RTX 4090", 165.2),
    ("NVIDIA RTX A4000", (8, 6), 16376 * MIB, 48, "sm86", "exact match", "bf16", "RTX A4000",
     76.7),
    ("Tesla T4", (7, 5), 15360 * MIB, 40, "sm75", "exact match", "fp16", "T4", 65),
    ("Tesla V100-SXM2-32GB", (7, 0), 32768 * MIB, 80, "sm70", "exact match", "fp16",
     "V100 SXM2", 125),
    ("NVIDIA B200", (10, 0), 183359 * MIB, 148, "sm100", "exact match", "bf16", "B200", 2250),
    ("NVIDIA GeForce RTX 5090", (12, 0), 32607 * MIB, 170, "sm120", "exact match", "bf16",
     "RTX 5090", 209.5),
    ("NVIDIA H20", (9, 0), 97871 * MIB, 78, "sm90", "exact match", "bf16", "H20", 148),
    # Not in the table: the family reference, and the source says so.
    ("NVIDIA A10G", (8, 6), 23028 * MIB, 80, "sm86", "exact match", "bf16", None, 125),
    # A family of another major version: its tiles, no peak.
    ("NVIDIA Future GPU", (11, 0), 200 * GIB, 160, "sm100",
     "nearest lower family sm100 is compute capability 10.x, not 11.x", "bf16", None, None),
]
IDS = [row[0] for row in MATRIX]

# The shipped tiles by profile: forward, dK/dV, dQ at head dims 64, 128, 256, as
# "block_m x block_n / warps / stages". Each was compiled for its target with Triton and fits
# the target's shared memory per block without spilling registers (Turing: the least spill);
# tests/test_tune_compile.py compiles them again.
TILES = {
    "sm75": {64: ("32x32/4/2", "32x64/8/3", "16x16/4/1"),
             128: ("16x32/4/1", "16x32/4/1", "16x16/4/1"),
             256: ("16x16/4/1", "16x16/4/1", "16x16/4/1")},
    "sm80": {64: ("128x128/8/3", "32x64/8/3", "128x32/8/3"),
             128: ("128x64/8/3", "32x64/8/3", "128x32/8/3"),
             256: ("64x64/8/2", "16x32/4/1", "64x64/8/2")},
    "sm86": {64: ("128x128/8/3", "32x64/8/3", "128x32/8/3"),
             128: ("128x64/8/3", "32x64/8/3", "128x32/8/3"),
             256: ("64x32/4/2", "32x32/4/1", "32x32/4/2")},
    "sm90": {64: ("128x128/8/3", "32x128/8/3", "128x32/8/3"),
             128: ("128x128/8/3", "32x64/8/3", "128x32/8/3"),
             256: ("64x64/8/3", "16x32/4/1", "128x32/8/3")},
    "sm100": {64: ("128x128/8/3", "32x128/8/3", "128x32/8/3"),
              128: ("128x128/8/3", "32x128/8/3", "128x32/8/3"),
              256: ("64x64/8/3", "32x128/8/3", "128x32/8/2")},
    "sm120": {64: ("128x128/8/3", "64x32/8/2", "128x32/8/3"),
              128: ("128x64/8/3", "32x64/8/3", "128x32/8/3"),
              256: ("32x64/4/2", "32x32/4/1", "32x32/4/2")},
}
TILES["sm70"] = TILES["sm75"]  # nominal: the Triton kernel does not run on Volta
TILES["sm89"] = TILES["sm86"]


def short(tile):
    return f"{tile.block_m}x{tile.block_n}/{tile.num_warps}/{tile.num_stages}"


@pytest.mark.parametrize("name, cc, mem, sms, profile, reason, dtype, sku, peak", MATRIX,
                         ids=IDS)
def test_profile_dtype_peak_and_tiles(name, cc, mem, sms, profile, reason, dtype, sku, peak):
    hw = record(name, cc, mem, sms)
    choice = select_profile(hw)
    assert choice.profile.name == profile
    assert reason in choice.reason
    assert default_dtype("cuda", hw) == dtype
    figures = choice.profile.peak_figures(hw)
    assert figures.sku == sku
    assert figures.tflops.get(dtype) == peak
    if sku is not None:
        assert figures.source.startswith("NVIDIA ") and figures.source.endswith(f"(SKU {sku})")
    elif peak is not None:
        assert f"{name} is not listed in profile {profile}" in figures.source
    else:
        assert figures.source.startswith("no peak")
    for head_dim, (fwd, dkdv, dq) in TILES[profile].items():
        tile = choice.profile.tile_for(head_dim)
        back = tile.backward()
        assert (short(tile.forward), short(back.dkdv), short(back.dq)) == (fwd, dkdv, dq)


def expected_unavailable(impl, cc, dtype):
    """Why each implementation cannot run on a GPU of this compute capability, or None."""
    flash_attn_installed = importlib.util.find_spec("flash_attn") is not None
    triton_installed = importlib.util.find_spec("triton") is not None
    return {
        "sdpa-flash": "compute capability >= 8.0" if cc < (8, 0) else None,
        "sdpa-cudnn": "compute capability >= 8.0" if cc < (8, 0) else None,
        "flash-attn": ("not installed" if not flash_attn_installed
                       else "compute capability >= 8.0" if cc < (8, 0) else None),
        "triton": ("not installed" if not triton_installed
                   else "compute capability >= 7.5" if cc < (7, 5) else None),
    }.get(impl)


@pytest.mark.parametrize("name, cc, mem, sms, profile, reason, dtype, sku, peak", MATRIX,
                         ids=IDS)
def test_attention_implementations_and_why_not(name, cc, mem, sms, profile, reason, dtype, sku,
                                               peak):
    for head_dim in (64, 128, 256):
        problem = AttentionProblem(batch=1, heads=8, kv_heads=8, seq=1024, head_dim=head_dim,
                                   dtype=dtype, causal=True, mode="fwd", device="cuda",
                                   compute_capability=cc)
        for impl_name, impl in kernels.IMPLS.items():
            why = impl.unavailable(problem)
            expected = expected_unavailable(impl_name, cc, dtype)
            if expected is None:
                assert why is None, (impl_name, why)
            else:
                assert why is not None and expected in why, (impl_name, why)


@pytest.mark.parametrize("name, cc, dtype", [
    ("Tesla T4", (7, 5), "fp16"), ("Tesla V100-SXM2-32GB", (7, 0), "fp16"),
    ("NVIDIA A100-SXM4-80GB", (8, 0), "bf16"),
])
def test_attention_without_flags_takes_a_dtype_the_gpu_computes(name, cc, dtype):
    # Before: bf16 on every GPU, so a T4 or V100 run without --dtype stopped at "use fp16".
    resolved = AttentionBenchmark().resolve(AttentionConfig(), record(name, cc, 16 * GIB, 40))
    assert resolved.dtype == dtype


def rendered(hw, **kwargs):
    out = io.StringIO()
    report = describe(hw=hw, **kwargs)
    render(report, Console(file=out, width=200, color_system=None, highlight=False))
    return report, out.getvalue()


@pytest.mark.parametrize("name, cc, mem, sms, profile, reason, dtype, sku, peak", MATRIX,
                         ids=IDS)
def test_env_report_for_the_record(name, cc, mem, sms, profile, reason, dtype, sku, peak):
    hw = record(name, cc, mem, sms)
    report, text = rendered(hw)
    assert report.profile["name"] == profile and report.dtype == report.default_dtype == dtype
    assert report.peak_tflops == peak
    assert f"profile {profile}: " in text and reason in text
    assert f"default dtype {dtype}" in text
    assert f"{name} · compute capability {cc[0]}.{cc[1]}" in text
    assert report.peak.source in " ".join(text.split())  # wrapped or not
    if peak is not None:
        assert f"peak: {peak:.4g} TFLOP/s {dtype}" in text
    else:
        assert f"peak: no {dtype} peak" in text
    for head_dim, row in zip((64, 128, 256), report.tiles, strict=True):
        assert row.head_dim == head_dim and not row.backward_from_forward
        assert (short(row.forward), short(row.dkdv), short(row.dq)) == \
            TILES[profile][head_dim]
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    for impl in report.implementations:
        assert impl.name in lines and (impl.available or impl.reason in lines[impl.name])


def test_env_report_v100_names_sm70_fp16_and_its_own_peak():
    _, text = rendered(record("Tesla V100-SXM2-32GB", (7, 0), 32768 * MIB, 80))
    assert "profile sm70: exact match for compute capability 7.0" in text
    assert "default dtype fp16" in text
    assert "peak: 125 TFLOP/s fp16 · 900 GB/s (NVIDIA Tesla V100 datasheet (SKU V100 SXM2))" \
        in text
    assert "llmbench's Triton kernel needs compute capability >= 7.5, not 7.0" in text


def test_env_report_h20_shows_its_own_peak_not_h100s():
    _, text = rendered(record("NVIDIA H20", (9, 0), 97871 * MIB, 78))
    assert "peak: 148 TFLOP/s bf16 · 4000 GB/s (NVIDIA HGX H20 specifications (SKU H20))" \
        in text
    assert "989" not in text


def test_env_report_with_an_explicit_dtype_the_gpu_cannot_compute():
    report, text = rendered(record("Tesla T4", (7, 5), 15360 * MIB, 40), dtype="bf16")
    assert report.dtype == "bf16" and report.default_dtype == "fp16"
    assert "dtype bf16 (default dtype fp16)" in text
    assert "bf16: bf16 needs compute capability >= 8.0" in text
    assert "peak: no bf16 peak" in text


def test_env_report_of_this_machine_stays_valid_json():
    report = describe()
    again = type(report).model_validate_json(report.model_dump_json())
    assert again == report
    assert report.tile.head_dim[0] <= report.head_dim <= report.tile.head_dim[1]
