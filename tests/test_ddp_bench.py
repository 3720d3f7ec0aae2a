"""`llmbench ddp`: DDP and FSDP2 training steps of the tiny model on 2 Gloo ranks."""

import json

import pytest

from llmbench.benches.ddp import RUN_SCHEME, zero_rows
from llmbench.models.presets import PRESETS
from llmbench.train import zero
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def ddp_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "ddp.json"
    proc = run_cli("ddp", "--nproc", "2", "--iters", "2", "--warmup", "1", "--batch", "4",
                   "--seq", "32", "--zero-ranks", "2,8", "--json", str(out), "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc


def test_both_strategies_ran_on_both_ranks(ddp_doc):
    doc, proc = ddp_doc
    assert [c["name"] for c in doc["cases"]] == ["ddp", "fsdp"]
    assert all(c["status"] == "ok" for c in doc["cases"]), [c["reason"] for c in doc["cases"]]
    for case in doc["cases"]:
        m = case["metrics"]
        assert len(m["peak_memory_bytes_per_rank"]) == 2
        assert m["peak_memory_bytes"] == max(m["peak_memory_bytes_per_rank"]) > 0
        assert m["time_ms"]["n"] == 2
        assert m["tokens_per_s"] == pytest.approx(2 * 4 * 32 / (m["time_ms"]["median"] / 1e3))
    assert "ZeRO model-state memory per rank" in proc.stdout


def test_gradients_match_one_process_on_the_global_batch(ddp_doc):
    doc, _ = ddp_doc
    for case in doc["cases"]:
        assert case["metrics"]["grad_rel_error"] < 1e-5, case["name"]


def test_measured_model_states_match_zero_stage_0_and_3(ddp_doc):
    doc, _ = ddp_doc
    params = doc["summary"]["params"]
    ddp, fsdp = doc["cases"]
    # The tiny model's parameter tensors: 4 blocks x 9 (wq wk wv wo w1 w2 w3, two norms), the
    # embedding (tied with the output layer) and the final norm; each has AdamW's 4-byte step.
    tensors = 4 * 9 + 2
    assert ddp["metrics"]["zero_stage"] == 0 and fsdp["metrics"]["zero_stage"] == 3
    assert ddp["metrics"]["predicted_state_bytes"] == 16 * params + 4 * tensors
    assert fsdp["metrics"]["predicted_state_bytes"] == 16 * params / 2 + 4 * tensors
    # Counted from the ranks' real tensors: DDP replicates, FSDP shards (tiny's dims are even,
    # so FSDP needs no padding and the shard is exactly half).
    for case in (ddp, fsdp):
        m = case["metrics"]
        assert m["model_state_bytes_per_rank"] == [m["predicted_state_bytes"]] * 2
    assert ddp["metrics"]["gradient_bytes"] == 4 * params


def test_ddp_reports_the_communication_share(ddp_doc):
    doc, _ = ddp_doc
    m = doc["cases"][0]["metrics"]
    step, no_sync = m["time_ms"]["median"], m["no_sync_time_ms"]["median"]
    assert m["comm_exposed_ms"] == pytest.approx(step - no_sync)
    assert m["comm_share_pct"] == pytest.approx(100 * (step - no_sync) / step)
    assert m["allreduce_time_ms"]["median"] > 0
    assert "no_sync_time_ms" not in doc["cases"][1]["metrics"]  # FSDP has no no_sync


def test_zero_table_for_the_model_and_the_preset(ddp_doc):
    doc, _ = ddp_doc
    rows = doc["summary"]["zero"]
    assert [(r["model"], r["ranks"]) for r in rows] == [
        ("tiny", 2), ("tiny", 8), ("llama-3-8b", 2), ("llama-3-8b", 8)]
    llama8 = rows[3]
    psi = PRESETS["llama-3-8b"].params
    assert llama8["bytes_per_rank"]["0"] == 16 * psi
    assert llama8["bytes_per_rank"]["1"] == pytest.approx(4 * psi + 12 * psi / 8)
    assert llama8["bytes_per_rank"]["2"] == pytest.approx(2 * psi + 14 * psi / 8)
    assert llama8["bytes_per_rank"]["3"] == pytest.approx(16 * psi / 8)


def test_zero_rows_use_the_scheme():
    rows = zero_rows(1000, "m", RUN_SCHEME, "fp32", [4])
    assert rows[0]["bytes_per_rank"]["2"] == zero.per_rank_bytes(1000, 4, 2, RUN_SCHEME)
    assert rows[0]["bytes_per_param"] == [4, 4, 8]
