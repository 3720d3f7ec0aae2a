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


def test_typed_params_and_summary(ddp_doc):
    from llmbench.benches import params_of, summary_of
    from llmbench.benches.ddp import DDPCase, DDPSummary, ZeroRow
    from llmbench.core.results import ResultDocument

    doc = ResultDocument.model_validate(ddp_doc[0])
    params = [params_of(doc, c) for c in doc.cases]
    assert all(isinstance(p, DDPCase) for p in params)
    assert [p.strategy for p in params] == ["ddp", "fsdp"]
    assert {(p.model, p.seq, p.batch, p.nproc, p.backend) for p in params} == {
        ("tiny", 32, 4, 2, "gloo")}
    s = summary_of(doc)
    assert isinstance(s, DDPSummary) and s.params > 0 and s.zero_formula
    assert all(isinstance(r, ZeroRow) for r in s.zero)
    assert {r.ranks for r in s.zero} == {2, 8}
    assert s.zero[0].params == s.params and s.zero[0].bytes_per_param == [4, 4, 8]


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


def test_absolute_rss_peak_per_rank_on_cpu(ddp_doc):
    """CPU: the process's resident-set high-water mark over the measured step, absolute, for
    both strategies and both ranks; it holds at least the rank's model states. No CUDA
    figures."""
    doc, proc = ddp_doc
    for case in doc["cases"]:
        m = case["metrics"]
        assert len(m["peak_rss_bytes_per_rank"]) == 2, case["name"]
        assert m["peak_rss_bytes"] == max(m["peak_rss_bytes_per_rank"]) > 0
        for rss, state in zip(m["peak_rss_bytes_per_rank"], m["model_state_bytes_per_rank"],
                              strict=True):
            assert rss >= state, case["name"]
        assert "peak_allocated_bytes" not in m and "peak_reserved_bytes" not in m
    assert "RSS/rank" in proc.stdout and "allocated/rank" not in proc.stdout


def test_ddp_table_shows_cuda_absolute_peaks(ddp_doc):
    """CUDA runs report allocated and reserved peaks; the table gets a column for each."""
    from rich.console import Console

    from llmbench.core.results import ResultDocument
    from llmbench.report.dist import render_ddp

    raw, _ = ddp_doc
    raw = json.loads(json.dumps(raw))
    for case in raw["cases"]:
        m = case["metrics"]
        for key in ("peak_rss_bytes", "peak_rss_bytes_per_rank"):
            m.pop(key)
        m["peak_allocated_bytes"], m["peak_allocated_bytes_per_rank"] = 3 * 2**30, [3 * 2**30] * 2
        m["peak_reserved_bytes"], m["peak_reserved_bytes_per_rank"] = 5 * 2**30, [5 * 2**30] * 2
    console = Console(record=True, width=260, color_system=None)
    render_ddp(ResultDocument.model_validate(raw), console)
    text = console.export_text()
    assert "allocated/rank" in text and "reserved/rank" in text and "RSS/rank" not in text
    assert "3 GiB" in text and "5 GiB" in text


@pytest.fixture
def one_rank_group():
    """A world-size-1 gloo process group in this process (destroyed afterwards)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _tiny_model():
    from llmbench.train.loop import build_model

    return build_model("tiny", seed=0, device="cpu", dim=32, n_layers=2, n_heads=2)


def test_fsdp_keeps_a_cpu_run_on_the_cpu_of_a_gpu_host(one_rank_group, monkeypatch):
    """fully_shard without a mesh builds one for the host's accelerator (torch 2.13:
    `_init_default_mesh` asks torch._C._get_accelerator()), and would move the parameters to
    the GPU under --device cpu. shard_model passes a mesh for the device asked for."""
    import torch
    from torch.distributed.fsdp._fully_shard import _fsdp_init

    from llmbench.benches.ddp import _fully_shard, shard_model
    from llmbench.train.loop import lm_loss

    chosen: list[str] = []
    real = _fsdp_init.init_device_mesh

    def spy(device_type, *args, **kwargs):
        chosen.append(device_type)
        return real(device_type, *args, **kwargs)

    monkeypatch.setattr(_fsdp_init, "init_device_mesh", spy)
    monkeypatch.setattr(torch._C, "_get_accelerator", lambda: torch.device("cuda"))

    # Unfixed: the default mesh is a CUDA one (on this CPU-only torch, building it fails; on a
    # GPU host the parameters land on the GPU).
    unfixed = _tiny_model()
    try:
        _fully_shard()(unfixed)
    except Exception:  # noqa: BLE001 - here: "Torch not compiled with CUDA enabled"
        pass
    else:
        assert all(q.device.type == "cuda" for q in unfixed.parameters())
    assert chosen == ["cuda"]

    chosen.clear()
    model = shard_model(_tiny_model(), "cpu")
    assert chosen == []  # fully_shard never built its default mesh
    params = list(model.parameters())
    assert all(q.device.type == "cpu" and q.to_local().device.type == "cpu" for q in params)
    assert {q.device_mesh.device_type for q in params} == {"cpu"}
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 9))
    lm_loss(model, tokens).backward()  # the tokens and the parameters are on the same device
    assert all(q.grad is not None and q.grad.device.type == "cpu" for q in params)


def _batches(count, batch=4, seq=64):
    from llmbench.train.data import synthetic_batches

    return [synthetic_batches(vocab=256, batch=batch, seq=seq, count=1, seed=1 + r)[0]
            for r in range(count)]


def _concatenated_gradients(batches):
    """The old reference: one forward/backward over every rank's batch at once."""
    import torch

    from llmbench.train.loop import build_model, lm_loss

    model = build_model("tiny", seed=0, device="cpu")
    lm_loss(model, torch.cat(batches)).backward()
    return [q.grad for q in model.parameters()]


TINY = {"model": "tiny", "device": "cpu"}


def test_reference_gradients_equal_the_global_batch_gradient():
    from llmbench.benches.ddp import reference_gradients

    batches = _batches(4, batch=4, seq=32)
    accumulated = reference_gradients(TINY, 0, batches)
    concatenated = _concatenated_gradients(batches)
    assert len(accumulated) == len(concatenated)
    for a, c in zip(accumulated, concatenated, strict=True):
        assert float((a - c).abs().max()) <= 1e-5 * float(c.abs().max())


def test_reference_gradients_peak_does_not_grow_with_the_rank_count():
    """Each rank builds the reference; its peak must stay that of one batch, not N. The
    concatenated forward's peak grows ~linearly with N (4 batches of 4 x 64 on the tiny model:
    ~21 -> ~73 MiB, 3.4x). The accumulated one holds one batch's activations at a time and grows
    only by allocator slack from its second pass on (the first pass's freed activations are
    reused imperfectly: 1, 2, 4, 8 batches ~21, 26, 28, 28 MiB here). So 4 batches must stay
    under 2x the 1-batch peak: room for three times that slack, well short of the 3.4x."""
    from llmbench.benches.ddp import reference_gradients
    from llmbench.core.memory import cpu_method, measure_peak

    if cpu_method() != "rss-hwm":
        pytest.skip("needs Linux's resettable RSS high-water mark")
    one, four = _batches(1), _batches(4)
    reference_gradients(TINY, 0, one)  # warm-up: lazy initialisation stays out

    def peak(fn, batches):
        return measure_peak(lambda: fn(batches))[1].peak_bytes

    def accumulated(batches):
        return reference_gradients(TINY, 0, batches)

    new = peak(accumulated, one), peak(accumulated, four)
    old = peak(_concatenated_gradients, one), peak(_concatenated_gradients, four)
    assert old[1] > 2 * old[0], old  # the measurement sees the growth it is meant to catch
    assert new[1] < 2 * new[0], new
