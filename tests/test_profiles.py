import pytest

from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo
from llmbench.core.profiles import (
    ProfileError,
    load_profile,
    profiles_dir,
    select_profile,
    shipped_profiles,
)


def machine(cc=None, name="NVIDIA H100 80GB HBM3", ghz=2.0, isa="AVX2", cores=4):
    cpu = CpuInfo(model="test", logical_cores=cores, usable_cores=cores, isa=isa, max_ghz=ghz)
    gpus = [GpuInfo(index=0, name=name, compute_capability=cc)] if cc else []
    return HardwareInfo(device="cuda" if cc else "cpu", gpus=gpus, cpu=cpu, nvml="ok")


def test_shipped_profiles_validate():
    profiles = shipped_profiles()
    assert set(profiles) == {"cpu", "sm75", "sm80", "sm86", "sm89", "sm90"}
    for name, p in profiles.items():
        assert p.name == name
        assert p.tile_for(64).head_dim[0] <= 64 <= p.tile_for(64).head_dim[1]


@pytest.mark.parametrize("cc, expected, reason", [
    ((9, 0), "sm90", "exact match"),
    ((8, 0), "sm80", "exact match"),
    ((7, 5), "sm75", "exact match"),
    ((8, 7), "sm86", "nearest lower family sm86"),
    ((10, 0), "sm90", "nearest lower family sm90"),
    ((12, 0), "sm90", "nearest lower"),
    ((7, 0), "cpu", "below every GPU profile"),
])
def test_selection_by_compute_capability(cc, expected, reason):
    choice = select_profile(machine(cc))
    assert choice.profile.name == expected
    assert reason in choice.reason


def test_cpu_machine_and_cpu_device_get_cpu():
    assert select_profile(machine()).profile.name == "cpu"
    assert select_profile(machine((9, 0)), device="cpu").profile.name == "cpu"


def test_override_by_name_and_path(tmp_path):
    assert select_profile(machine(), "sm80").profile.name == "sm80"
    path = profiles_dir() / "sm86.toml"
    assert select_profile(machine(), str(path)).profile.name == "sm86"
    with pytest.raises(ProfileError, match="unknown profile 'sm99'"):
        select_profile(machine(), "sm99")
    with pytest.raises(ProfileError, match="profile file not found"):
        select_profile(machine(), str(tmp_path / "nope.toml"))


GOOD = """
name = "custom"
kind = "cuda"
compute_capability = [8, 0]
[[attention]]
head_dim = [1, 64]
block_m = 128
block_n = 64
num_warps = 4
num_stages = 3
[[attention]]
head_dim = [65, 256]
block_m = 64
block_n = 64
num_warps = 8
num_stages = 2
[peak]
reference = "X"
memory_gbps = 100
tflops = { bf16 = 10 }
"""


@pytest.mark.parametrize("old, new, message", [
    ("block_m = 128", "block_m = 96", "attention[0].block_m: must be a power of two"),
    ("num_stages = 3", "num_stages = 0", "attention[0].num_stages: must be from 1 to 8"),
    ("num_warps = 8", "num_warps = 3", "attention[1].num_warps: must be 1, 2, 4"),
    ("block_n = 64\nnum_warps = 4", "num_warps = 4", "attention[0].block_n: required field"),
    ("head_dim = [65, 256]", "head_dim = [60, 256]", "attention: head_dim ranges"),
    ("memory_gbps = 100", "memory_gbps = -1", "peak.memory_gbps"),
    ("tflops = { bf16 = 10 }", "tflops = { bf16 = 0 }", "bf16 must be > 0"),
    ('kind = "cuda"', 'kind = "tpu"', "kind"),
    ("compute_capability = [8, 0]", "", "compute_capability: required for a cuda profile"),
    ('reference = "X"', 'reference = "X"\ncolour = "red"', "peak.colour: unknown field"),
    ("[[attention]]", "[[attention]", "invalid TOML"),
])
def test_malformed_profile_names_file_and_field(tmp_path, old, new, message):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_good_profile_loads(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    p = load_profile(path)
    assert p.tile_for(64).block_m == 128
    assert p.tile_for(128).num_warps == 8
    assert p.tile_for(512).head_dim == (65, 256)  # past the last range: the last tile


def test_peak_figures_pick_the_sku():
    sm90 = shipped_profiles()["sm90"]
    assert sm90.peak_tflops("bf16", machine((9, 0), "NVIDIA H100 80GB HBM3")) == 989.4
    assert sm90.peak_tflops("bf16", machine((9, 0), "NVIDIA H100 PCIe")) == 756
    assert sm90.peak_memory_gbps(machine((9, 0), "NVIDIA H200")) == 4800
    assert sm90.peak_memory_gbps(machine((9, 0), "NVIDIA GH200 480GB")) == 4000
    sm75 = shipped_profiles()["sm75"]
    assert sm75.peak_tflops("bf16", machine((7, 5), "Tesla T4")) is None  # no bf16 on Turing


def test_cpu_peak_is_cores_times_clock_times_flops_per_cycle():
    cpu = shipped_profiles()["cpu"]
    hw = machine(ghz=3.0, isa="AVX2", cores=4)
    assert cpu.peak_tflops("fp32", hw) == pytest.approx(4 * 3.0e9 * 32 / 1e12)
    hw = machine(ghz=2.0, isa="SOMETHING_NEW", cores=2)
    assert cpu.peak_tflops("fp32", hw) == pytest.approx(2 * 2.0e9 * 16 / 1e12)
    assert cpu.peak_tflops("fp32", machine(ghz=None)) is None
