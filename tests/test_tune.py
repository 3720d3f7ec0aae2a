import importlib.util

import pytest

from llmbench.benches.attention_varlen import parse_lengths
from llmbench.benches.tune import TuneConfig, tuned_profile_toml
from llmbench.core.errors import UsageError
from llmbench.core.profiles import load_profile, shipped_profiles
from tests.conftest import assert_bad_input, run_cli, run_cli_inprocess

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed")


@needs_triton
def test_tune_dry_run_writes_a_profile_that_loads(tmp_path):
    out = tmp_path / "tuned.toml"
    proc = run_cli("tune", "attention", "--interpret", "--write-profile", str(out), "-q",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "winners" in proc.stdout and "% of best" in proc.stdout
    profile = load_profile(out)
    assert profile.name == "cpu-tuned"
    env = run_cli("env", "--profile", str(out), "--head-dim", "32")
    assert env.returncode == 0 and str(out) in env.stdout


def test_tune_needs_a_gpu_or_interpret(hw):
    if hw.device == "cuda":
        pytest.skip("a GPU is present")
    proc = run_cli("tune", "attention")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("llmbench: error: tuning times the Triton kernel on "
                                          "a CUDA GPU")


@pytest.mark.parametrize("args, message", [
    (["--block-m", "96"], "--block-m: must be a power of two"),
    (["--stages", "0"], "--stages: must be from 1 to 8, got 0"),
    (["--warps", "3"], "--warps: must be 1, 2, 4, 8, 16 or 32, got 3"),
    (["--head-dims", "300"], "--head-dims: head dims must be from 1 to 256"),
])
def test_tune_bad_configs(args, message):
    assert_bad_input(run_cli_inprocess("tune", "attention", "--interpret", *args), message)


def test_search_space():
    cfg = TuneConfig()
    assert len(cfg.space()) == 3 * 3 * 2 * 4
    assert TuneConfig(interpret=True).space() == [(16, 16, 1, 1), (32, 16, 2, 1)]


def test_tuned_profile_toml_round_trip(tmp_path):
    base = shipped_profiles()["sm90"]
    text = tuned_profile_toml(base, {
        "64": {"block_m": 128, "block_n": 64, "num_warps": 4, "num_stages": 3,
               "throughput_tflops": 500.0},
        "128": {"block_m": 64, "block_n": 64, "num_warps": 8, "num_stages": 2,
                "throughput_tflops": 600.0}})
    path = tmp_path / "t.toml"
    path.write_text(text)
    p = load_profile(path)
    assert p.name == "sm90-tuned" and p.compute_capability == (9, 0)
    # Tuned up to 128; above it the base profile's own tiles stay.
    assert [t.head_dim for t in p.attention] == [(1, 64), (65, 128), (129, 256)]
    assert p.tile_for(128).num_warps == 8 and p.tile_for(128).block_m == 64
    assert p.tile_for(256) == base.tile_for(256).model_copy(update={"head_dim": (129, 256)})
    # The backward tiles are the base's at each tuned head dim, not the tuned forward tile.
    for d in (64, 128):
        assert p.tile_for(d).backward() == base.tile_for(d).backward()
    assert p.peak_tflops("bf16") == base.peak_tflops("bf16")
    assert p.peak.devices == base.peak.devices
    with pytest.raises(UsageError, match="nothing to write"):
        tuned_profile_toml(base, {})


def test_parse_lengths():
    assert parse_lengths("128,512,2048") == [128, 512, 2048]
    rnd = parse_lengths("random:5:10:20", seed=3)
    assert len(rnd) == 5 and all(10 <= n <= 20 for n in rnd)
    assert rnd == parse_lengths("random:5:10:20", seed=3)
    for bad in ("random:5:20:10", "a,b", "0,4", "random:x"):
        with pytest.raises(UsageError):
            parse_lengths(bad)
