"""`llmbench tune attention --compile-only`: Triton compiles the kernels for real GPU targets on
this CPU (bundled ptxas), so a profile tile that would not launch on a GPU fails CI here."""

import importlib.util
import json

import pytest

from llmbench.benches.tune import TuneBenchmark, TuneConfig
from llmbench.core.benchmark import PlanContext
from llmbench.core.hardware import CpuInfo, GpuInfo, HardwareInfo
from llmbench.core.profiles import shipped_profiles
from llmbench.kernels.triton_aot import ARCHS, REGISTERS_PER_BLOCK, CompiledKernel, misfit
from tests.conftest import assert_bad_input, run_cli, run_cli_inprocess

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")

KERNELS = ["fwd", "bwd_delta", "bwd_dkdv", "bwd_dq"]


def test_typed_params_and_summary(every_target):
    from llmbench.benches import params_of, summary_of
    from llmbench.benches.tune import TuneCase, TuneSummary
    from llmbench.core.results import ResultDocument

    doc = ResultDocument.model_validate(every_target[1])
    params = [params_of(doc, c) for c in doc.cases]
    assert all(isinstance(p, TuneCase) for p in params)
    assert {p.kernel for p in params} >= {"fwd", "bwd_dkdv", "bwd_dq"}
    assert all(p.impl is None and p.arch for p in params)
    s = summary_of(doc)
    assert isinstance(s, TuneSummary) and s.compile_only and s.winners == {}
    t = s.targets["sm80"]
    assert t.cases >= 1 and 0 < t.max_shared_memory_bytes <= t.shared_memory_limit_bytes


@pytest.fixture(scope="module")
def every_target(tmp_path_factory):
    """One run over every target, forward and backward: the profiles as shipped."""
    path = tmp_path_factory.mktemp("compile") / "all.json"
    proc = run_cli("tune", "attention", "--compile-only", "--mode", "fwd+bwd", "--json",
                   str(path), "-q", timeout=900)
    return proc, (json.loads(path.read_text()) if path.exists() else None)


def test_every_shipped_tile_fits_its_target(every_target):
    proc, doc = every_target
    assert proc.returncode == 0, proc.stderr
    assert doc is not None
    shipped = shipped_profiles()
    expected = {(arch, min(256, t.head_dim[1]), kernel) for arch in ARCHS
                for t in shipped[arch].attention for kernel in KERNELS}
    got = {(c["params"]["arch"], c["params"]["head_dim"], c["params"]["kernel"])
           for c in doc["cases"]}
    assert got == expected
    for c in doc["cases"]:
        p, m = c["params"], c["metrics"]
        assert c["status"] == "ok", (c["name"], c["reason"])
        limit = shipped[p["arch"]].shared_memory_per_block_kib * 1024
        assert m["shared_memory_limit_bytes"] == limit
        assert 0 < m["shared_memory_bytes"] <= limit or p["kernel"] == "bwd_delta", c["name"]
        assert m["registers"] * p["num_warps"] * 32 <= REGISTERS_PER_BLOCK, c["name"]
        # What ships must not spill registers to local memory either (slow, not wrong), except on
        # Turing, where Triton's code spills at every candidate above head dim 64 and the
        # profile takes the least-spilling tiles that fit (profiles/sm75.toml says which).
        if p["arch"] != "sm75":
            assert m["stack_frame_bytes"] == 0, (c["name"], m["stack_frame_bytes"])
        # The tile compiled is the one the profile gives for that head dim and kernel.
        tile = shipped[p["arch"]].tile_for(p["head_dim"])
        want = {"fwd": tile.forward, "bwd_dkdv": tile.backward().dkdv,
                "bwd_dq": tile.backward().dq}.get(p["kernel"])
        if want is not None:
            assert {k: p[k] for k in want.launch()} == want.launch(), c["name"]
        assert p["dtype"] == ("bf16" if ARCHS[p["arch"]] >= (8, 0) else "fp16")
    assert "sm80" in proc.stdout and "% of limit" in proc.stdout


def test_an_oversized_tile_is_an_error_and_exits_1(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("\n".join([
        'name = "big"', 'kind = "cuda"', "compute_capability = [8, 0]",
        "[[attention]]", "head_dim = [1, 256]", "block_m = 128", "block_n = 128",
        "num_warps = 8", "num_stages = 3",
        "[peak]", 'reference = "X"', "memory_gbps = 1", "tflops = { bf16 = 1 }"]))
    out = tmp_path / "big.json"
    proc = run_cli("tune", "attention", "--compile-only", "--arch", "sm80", "--profile",
                   str(big), "--head-dims", "256", "--mode", "fwd", "--json", str(out), "-q")
    assert proc.returncode == 1, proc.stderr
    (case,) = json.loads(out.read_text())["cases"]
    assert case["status"] == "error"
    assert case["reason"].startswith("does not fit: needs ")
    assert "the target allows 166,912 B" in case["reason"]
    assert case["metrics"]["shared_memory_bytes"] > case["metrics"]["shared_memory_limit_bytes"]
    assert proc.stderr.strip().splitlines()[-1].startswith("llmbench: error: 1 of 1 case(s)")


def test_the_grid_skips_what_does_not_fit(tmp_path):
    out = tmp_path / "grid.json"
    proc = run_cli("tune", "attention", "--compile-only", "--grid", "--arch", "sm86",
                   "--head-dims", "128", "--mode", "fwd", "--block-m", "128", "--block-n",
                   "128", "--warps", "8", "--stages", "3", "--json", str(out), "-q")
    assert proc.returncode == 0, proc.stderr  # the search space may hold what does not fit
    (case,) = json.loads(out.read_text())["cases"]
    assert case["status"] == "skipped" and "the target allows 101,376 B" in case["reason"]
    assert case["params"]["tiles"] == "grid" and case["params"]["dtype"] == "bf16"


@pytest.mark.parametrize("args, message", [
    (["--arch", "sm70"], "--arch: unknown target 'sm70' (llmbench's Triton kernel needs "
                         "compute capability 7.5 or newer)"),
    (["--arch", "sm80,sm99"], "--arch: unknown target 'sm99'"),
    (["--interpret"], "--compile-only compiles for GPU targets and --interpret runs on the CPU"),
    (["--write-profile", "x.toml"],
     "--write-profile writes timed winners; --compile-only times nothing"),
])
def test_bad_compile_only_input(args, message):
    assert_bad_input(run_cli_inprocess("tune", "attention", "--compile-only", *args), message)


def test_arch_and_grid_need_compile_only():
    proc = run_cli("tune", "attention", "--interpret", "--arch", "sm80")
    assert proc.returncode == 2
    assert "--arch and --grid go with --compile-only" in proc.stderr


def test_misfit_names_shared_memory_and_registers():
    fits = CompiledKernel(shared_memory_bytes=1000, registers=128, stack_frame_bytes=0,
                          num_warps=8, ptxas=None)
    assert misfit(fits, 1000) is None
    assert misfit(fits, 999) == ("needs 1,000 B of shared memory per block, the target allows "
                                 "999 B")
    heavy = CompiledKernel(shared_memory_bytes=0, registers=255, stack_frame_bytes=0,
                           num_warps=16, ptxas=None)
    assert "130,560 registers per block (255 per thread x 512 threads)" in misfit(heavy, 1)


def test_gpu_tuning_prunes_by_the_compiled_figure():
    """On a GPU, `tune` compiles each candidate for that GPU before timing anything: here an
    A100's record (no GPU needed to compile for it)."""
    hw = HardwareInfo(device="cuda", nvml="ok", cpu=CpuInfo(model="x", logical_cores=2,
                                                            usable_cores=2),
                      gpus=[GpuInfo(index=0, name="NVIDIA A100-SXM4-80GB",
                                    compute_capability=(8, 0))])
    profile = shipped_profiles()["sm80"]
    cfg = TuneBenchmark().resolve(TuneConfig(head_dims=[128], block_m=[16, 256],
                                             block_n=[16, 256], num_warps=[4],
                                             num_stages=[4]), hw)
    plans = TuneBenchmark().plan(cfg, PlanContext(hw=hw, profile=profile, device="cuda"))
    by_tile = {(p.params["block_m"], p.params["block_n"]): p for p in plans}
    assert by_tile[(16, 16)].unavailable is None
    big = by_tile[(256, 256)].unavailable
    assert big.startswith("does not fit: fwd needs ") and "allows 166,912 B" in big
    # The backward tiles a timed case runs with are the profile's.
    assert by_tile[(16, 16)].params["dkdv"] == profile.tile_for(128).backward().dkdv.launch()
    assert by_tile[(16, 16)].params["dq"] == profile.tile_for(128).backward().dq.launch()
