import pytest

from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo
from llmbench.core.profiles import (
    KernelTile,
    ProfileError,
    load_profile,
    normalize_gpu_name,
    peak_toml,
    profiles_dir,
    select_profile,
    shipped_profiles,
    tile_toml,
)


def machine(cc=None, name="NVIDIA H100 80GB HBM3", ghz=2.0, isa="AVX2", cores=4):
    cpu = CpuInfo(model="test", logical_cores=cores, usable_cores=cores, isa=isa, max_ghz=ghz)
    gpus = [GpuInfo(index=0, name=name, compute_capability=cc)] if cc else []
    return HardwareInfo(device="cuda" if cc else "cpu", gpus=gpus, cpu=cpu, nvml="ok")


def test_shipped_profiles_validate():
    profiles = shipped_profiles()
    assert set(profiles) == {"cpu", "sm70", "sm75", "sm80", "sm86", "sm89", "sm90", "sm100",
                             "sm120"}
    for name, p in profiles.items():
        assert p.name == name
        assert p.tile_for(64).head_dim[0] <= 64 <= p.tile_for(64).head_dim[1]


@pytest.mark.parametrize("cc, expected, reason", [
    ((9, 0), "sm90", "exact match"),
    ((8, 0), "sm80", "exact match"),
    ((7, 5), "sm75", "exact match"),
    ((7, 0), "sm70", "exact match"),
    ((10, 0), "sm100", "exact match"),
    ((12, 0), "sm120", "exact match"),
    ((8, 7), "sm86", "nearest lower family sm86"),
    ((10, 3), "sm100", "nearest lower family sm100"),
    ((12, 1), "sm120", "nearest lower family sm120"),
    ((11, 0), "sm100", "nearest lower family sm100 is compute capability 10.x, not 11.x: "
                       "no peak figures"),
    ((6, 0), "sm70", "compute capability 6.0 is below every GPU profile: the lowest, sm70, "
                     "is compute capability 7.x, not 6.x: no peak figures"),
])
def test_selection_by_compute_capability(cc, expected, reason):
    choice = select_profile(machine(cc))
    assert choice.profile.name == expected
    assert reason in choice.reason


@pytest.mark.parametrize("cc", [(3, 5), (5, 2), (6, 1), (7, 2), (8, 9), (9, 9), (11, 0),
                                (13, 0)])
def test_a_cuda_device_never_gets_the_cpu_profile(cc):
    choice = select_profile(machine(cc))
    assert choice.profile.kind == "cuda"
    # A family of another major version gives no peak rather than a wrong one.
    same_major = choice.profile.compute_capability[0] == cc[0]
    assert (choice.profile.peak_tflops("fp16", machine(cc)) is not None) == same_major


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
    ("num_stages = 3", "num_stages = 3\ndkdv = { block_m = 96, block_n = 64, num_warps = 4, "
     "num_stages = 1 }", "attention[0].dkdv.block_m: must be a power of two"),
    ("num_stages = 3", "num_stages = 3\ndq = { block_m = 64, num_warps = 4, num_stages = 1 }",
     "attention[0].dq.block_n: required field"),
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


def test_sku_names_match_exactly_not_as_substrings():
    sm86 = shipped_profiles()["sm86"]
    a4000 = sm86.peak_figures(machine((8, 6), "NVIDIA RTX A4000"))
    assert a4000.sku == "RTX A4000" and a4000.tflops["fp32"] == 19.2  # not the A40's 37.4
    assert sm86.peak_figures(machine((8, 6), "NVIDIA A40")).tflops["fp32"] == 37.4
    # NVML's spelling with and without "NVIDIA ", in any case and spacing.
    for name in ("NVIDIA GeForce RTX 3090", "GeForce RTX 3090", "nvidia  geforce rtx 3090"):
        assert sm86.peak_figures(machine((8, 6), name)).sku == "RTX 3090"
    assert normalize_gpu_name(" NVIDIA  H100   PCIe ") == "h100 pcie"


def test_peak_source_names_the_datasheet_or_says_the_sku_is_not_listed():
    sm90 = shipped_profiles()["sm90"]
    h100 = sm90.peak_figures(machine((9, 0), "NVIDIA H100 80GB HBM3"))
    assert h100.sku == "H100 SXM5"  # the family's own reference SKU is matched by name too
    assert "datasheet" in h100.source and "(SKU H100 SXM5)" in h100.source
    h20 = sm90.peak_figures(machine((9, 0), "NVIDIA H20"))
    assert (h20.tflops["bf16"], h20.tflops["fp8"], h20.memory_gbps) == (148, 296, 4000)
    unknown = sm90.peak_figures(machine((9, 0), "NVIDIA H100 94GB Prototype"))
    assert unknown.sku is None and unknown.tflops["bf16"] == 989.4
    assert unknown.source.startswith("family reference H100 SXM5")
    assert unknown.source.endswith(
        "NVIDIA H100 94GB Prototype is not listed in profile sm90")
    # A family of another major version: no figures at all.
    sm100 = shipped_profiles()["sm100"]
    future = sm100.peak_figures(machine((11, 0), "NVIDIA Future GPU"))
    assert future.tflops == {} and future.memory_gbps is None
    assert "compute capability 10.x" in future.source and "11.0" in future.source


def test_every_shipped_sku_has_names_figures_and_a_source():
    seen: dict[str, str] = {}
    for p in shipped_profiles().values():
        if p.kind != "cuda":
            continue
        for sku in (p.peak.reference_sku(), *p.peak.devices):
            assert sku.names and sku.source and sku.memory_gbps, (p.name, sku.sku)
            assert {"fp32", "fp16"} <= set(sku.tflops), (p.name, sku.sku)
            for name in sku.names:
                key = normalize_gpu_name(name)
                assert key not in seen, f"{name} listed by {seen.get(key)} and {p.name}"
                seen[key] = p.name


def test_shared_memory_per_block_is_the_opt_in_maximum():
    kib = {n: p.shared_memory_per_block_kib for n, p in shipped_profiles().items()}
    assert kib == {"cpu": None, "sm70": 96, "sm75": 64, "sm80": 163, "sm86": 99, "sm89": 99,
                   "sm90": 227, "sm100": 227, "sm120": 99}


def test_every_cuda_profile_gives_backward_tiles_for_every_head_dim_range():
    for p in shipped_profiles().values():
        if p.kind != "cuda":
            continue
        assert p.attention[0].head_dim[0] == 1 and p.attention[-1].head_dim[1] >= 256
        for a, b in zip(p.attention, p.attention[1:], strict=False):
            assert b.head_dim[0] == a.head_dim[1] + 1, p.name  # no gaps
        for tile in p.attention:
            assert tile.dkdv is not None and tile.dq is not None, (p.name, tile.head_dim)
            back = tile.backward()
            assert (back.dkdv, back.dq) == (tile.dkdv, tile.dq)


def test_backward_tiles_fall_back_to_the_forward_tile(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    tile = load_profile(path).tile_for(64)
    forward = KernelTile(block_m=128, block_n=64, num_warps=4, num_stages=3)
    assert tile.forward == forward
    assert tile.backward().dkdv == tile.backward().dq == forward
    path.write_text(GOOD.replace("num_stages = 3", "num_stages = 3\n"
                                 "dkdv = { block_m = 32, block_n = 128, num_warps = 4, "
                                 "num_stages = 2 }", 1))
    back = load_profile(path).tile_for(64).backward()
    assert back.dkdv == KernelTile(block_m=32, block_n=128, num_warps=4, num_stages=2)
    assert back.dq == forward
    assert back.kwargs() == {
        "dkdv": {"block_m": 32, "block_n": 128, "num_warps": 4, "num_stages": 2},
        "dq": {"block_m": 128, "block_n": 64, "num_warps": 4, "num_stages": 3}}


def test_old_substring_match_field_still_loads_as_an_exact_name(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(GOOD + '[[peak.devices]]\nmatch = "H100 PCIe"\nmemory_gbps = 2000\n'
                    "tflops = { bf16 = 756 }\n")
    p = load_profile(path)
    assert p.peak_tflops("bf16", machine((8, 0), "NVIDIA H100 PCIe")) == 756
    assert p.peak_tflops("bf16", machine((8, 0), "NVIDIA H100 PCIe 2")) == 10


def test_cpu_peak_is_cores_times_clock_times_flops_per_cycle():
    cpu = shipped_profiles()["cpu"]
    hw = machine(ghz=3.0, isa="AVX2", cores=4)
    assert cpu.peak_tflops("fp32", hw) == pytest.approx(4 * 3.0e9 * 32 / 1e12)
    hw = machine(ghz=2.0, isa="SOMETHING_NEW", cores=2)
    assert cpu.peak_tflops("fp32", hw) == pytest.approx(2 * 2.0e9 * 16 / 1e12)
    assert cpu.peak_tflops("bf16", hw) == cpu.peak_tflops("fp32", hw)  # no bf16 entry: fp32's
    assert cpu.peak_figures(hw).source == (
        "theoretical: 2 usable cores x 2 GHz x 16 fp32 FLOP/cycle (DEFAULT)")
    assert cpu.peak_tflops("fp32", machine(ghz=None)) is None


def test_tiles_and_peak_written_as_toml_load_back(tmp_path):
    for p in shipped_profiles().values():
        lines = [f'name = "{p.name}"', f'kind = "{p.kind}"']
        if p.compute_capability:
            lines.append(f"compute_capability = {list(p.compute_capability)}")
        for tile in p.attention:
            lines += ["", *tile_toml(tile)]
        lines += ["", *peak_toml(p.peak)]
        path = tmp_path / f"{p.name}.toml"
        path.write_text("\n".join(lines) + "\n")
        again = load_profile(path)
        assert again.attention == p.attention and again.peak == p.peak, p.name
