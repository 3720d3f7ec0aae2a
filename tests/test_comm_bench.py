"""`llmbench comm`: the real torchrun launch of 2 Gloo ranks on this CPU."""

import json
import os
import subprocess
import sys

import pytest

from llmbench.benches.comm import CommConfig, bus_factor, ring_steps, rounded_sizes
from llmbench.core.errors import UsageError
from tests.conftest import ROOT, run_cli

ALL = "all_reduce,all_gather,reduce_scatter,broadcast,all_to_all"
SMALL = ["--sizes", "1KiB:4KiB", "--iters", "3", "--windows", "3", "--warmup", "1", "-q"]


def test_bus_factors_are_nccl_tests():
    assert bus_factor("all_reduce", 8) == pytest.approx(2 * 7 / 8)
    assert bus_factor("all_gather", 8) == bus_factor("reduce_scatter", 8) == 7 / 8
    assert bus_factor("all_to_all", 4) == 3 / 4
    assert bus_factor("broadcast", 8) == 1.0
    assert bus_factor("all_reduce", 1) == 0.0


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_broadcast_busbw_is_algbw_at_any_rank_count(n):
    """nccl-tests' BroadcastGetBw: busbw = algbw whatever the ranks, one rank included."""
    assert bus_factor("broadcast", n) == 1.0
    assert ring_steps("all_reduce", 4) == 6 and ring_steps("all_gather", 4) == 3


def test_sizes_round_to_whole_elements_per_rank():
    assert rounded_sizes([1024, 4096], 3, 4) == [1020, 4092]
    with pytest.raises(UsageError, match="below one 4-byte element per rank"):
        rounded_sizes([4], 2, 4)


def test_config_rejects_bad_collectives_and_order():
    with pytest.raises(ValueError, match="unknown collective 'allreduce'"):
        CommConfig(collectives=["allreduce"])
    with pytest.raises(ValueError, match="out of order"):
        CommConfig(sizes=[4096, 1024])


@pytest.fixture(scope="module")
def comm_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("comm") / "comm.json"
    proc = run_cli("comm", "--nproc", "2", "--collectives", ALL, *SMALL, "--json", str(out),
                   timeout=240)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc


def test_comm_runs_every_collective_on_two_gloo_ranks(comm_doc):
    doc, proc = comm_doc
    assert doc["benchmark"] == "comm"
    assert doc["config"]["nproc"] == 2 and doc["config"]["backend"] == "gloo"
    assert [c["name"] for c in doc["cases"]][:3] == [
        "all_reduce/size=1KiB", "all_reduce/size=2KiB", "all_reduce/size=4KiB"]
    assert len(doc["cases"]) == 15
    assert all(c["status"] == "ok" for c in doc["cases"]), [c["reason"] for c in doc["cases"]]
    assert "busbw GB/s" in proc.stdout


def test_typed_params_and_summary(comm_doc):
    from llmbench.benches import params_of, summary_of
    from llmbench.benches.comm import CommCase, CommSummary
    from llmbench.core.results import ResultDocument

    doc = ResultDocument.model_validate(comm_doc[0])
    params = [params_of(doc, c) for c in doc.cases]
    assert all(isinstance(p, CommCase) for p in params)
    assert (params[0].collective, params[0].bytes) == ("all_reduce", 1024)
    assert {(p.dtype, p.nproc, p.backend, p.device) for p in params} == {
        ("fp32", 2, "gloo", "cpu")}
    s = summary_of(doc)
    assert isinstance(s, CommSummary) and s.ring_model is not None
    assert s.ring_model.fitted_on == "all_reduce" and s.ring_model.world_size == 2


def test_comm_bandwidths_follow_the_formulas(comm_doc):
    doc, _ = comm_doc
    n = 2
    factor = {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n,
              "reduce_scatter": (n - 1) / n, "all_to_all": (n - 1) / n, "broadcast": 1.0}
    for case in doc["cases"]:
        m, p = case["metrics"], case["params"]
        seconds = m["time_ms"]["median"] / 1e3
        assert m["algbw_gb_per_s"] == pytest.approx(p["bytes"] / seconds / 1e9, rel=1e-9)
        assert m["busbw_gb_per_s"] == pytest.approx(
            m["algbw_gb_per_s"] * factor[p["collective"]], rel=1e-9)
        assert m["result_checked"] is True
        # Both ranks took part in every case; a sample is a window's time per call, averaged
        # over the ranks (nccl-tests' -a 1).
        flat = m["window_ms_by_rank"]
        per_rank = [flat[:3], flat[3:]]
        assert len(flat) == 6 and min(flat) > 0 and len(m["median_ms_per_rank"]) == 2
        assert m["time_ms"]["samples"] == pytest.approx(
            [(a + b) / 2 for a, b in zip(*per_rank, strict=True)], rel=1e-12)
        assert m["time_ms"]["n"] == 3
        assert m["predicted_time_ms"] > 0


def test_comm_ring_model_is_fitted_on_all_reduce(comm_doc):
    doc, _ = comm_doc
    model = doc["summary"]["ring_model"]
    assert model["fitted_on"] == "all_reduce" and model["points"] == 3
    assert model["world_size"] == 2 and model["latency_us"] >= 0
    # The prediction is the formula with the fitted numbers.
    case = doc["cases"][0]
    beta = 1 / (model["bandwidth_gb_per_s"] * 1e9) if model["bandwidth_gb_per_s"] else 0.0
    expected = 2 * model["latency_us"] / 1e6 + 1.0 * case["params"]["bytes"] * beta
    assert case["metrics"]["predicted_time_ms"] == pytest.approx(expected * 1e3, rel=1e-9)


def test_under_torchrun_only_rank_0_writes(tmp_path):
    """A launch the user made: every rank runs the cases; rank 0 alone prints and writes.
    A 32 MiB case raises a rank's peak (buffers, the check, Gloo's own) by at most 3x the
    buffer over a 4 KiB one: the check compares in the buffer's dtype, chunk by chunk."""
    out = tmp_path / "comm.json"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "llmbench", "comm", "--collectives", "all_reduce,broadcast", "--sizes",
         "4KiB,32MiB", "--iters", "2", "--windows", "1", "--warmup", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("busbw GB/s") == 1  # one table, from rank 0
    assert proc.stderr.count("results written to") == 1
    doc = json.loads(out.read_text())
    assert doc["config"]["nproc"] == 2
    assert [c["status"] for c in doc["cases"]] == ["ok"] * 4
    assert all(len(c["metrics"]["median_ms_per_rank"]) == 2 for c in doc["cases"])
    peak = {c["name"]: c["metrics"]["peak_memory_bytes"] for c in doc["cases"]}
    for op in ("all_reduce", "broadcast"):
        grown = peak[f"{op}/size=32MiB"] - peak[f"{op}/size=4KiB"]
        assert 32 * 2**20 * 0.9 <= grown <= 3 * 32 * 2**20, (op, grown)


def test_nproc_must_match_an_existing_launch():
    proc = run_cli("comm", "--nproc", "3", env={"RANK": "0", "WORLD_SIZE": "2",
                                                "MASTER_ADDR": "127.0.0.1",
                                                "MASTER_PORT": "1"})
    assert proc.returncode == 2
    assert "this process is one of 2 ranks started by torchrun" in proc.stderr

