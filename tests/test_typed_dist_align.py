"""The typed params and summaries of align, precision and schedule: a small run of each, read
back through `params_of` / `summary_of` (the test suite's strict mode also checks them in the
runner; comm's and ddp's are checked on their own test modules' documents)."""

import pytest

import llmbench
from llmbench.benches import params_of, summary_of
from llmbench.benches.align import AlignBenchmark, AlignCase, AlignConfig, AlignSummary
from llmbench.benches.ddp import DDPSummary
from llmbench.benches.precision import PrecisionCase
from llmbench.benches.schedule import ScheduleCase, ScheduleSummary
from llmbench.core.runner import RunOptions, run_benchmark


def _ok(doc):
    assert doc.cases and all(c.ok for c in doc.cases), [(c.name, c.reason) for c in doc.cases]
    return doc


def test_align_dpo_precompute_ref(tmp_path, monkeypatch, hw):
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path / "cache"))
    config = AlignConfig(method="dpo", steps=2, sft_steps=2, eval_samples=4, train_pairs=64,
                         heldout_pairs=16, batch=4, precompute_ref=True, device="cpu")
    doc = _ok(run_benchmark(AlignBenchmark(), config, options=RunOptions(isolate=False), hw=hw))
    params = [params_of(doc, c) for c in doc.cases]
    assert all(isinstance(p, AlignCase) for p in params)
    assert [(p.method, p.precompute_ref) for p in params] == [("dpo", False), ("dpo", True)]
    assert params[0].steps == 2 and params[0].batch == 4 and params[0].lr == 5e-4
    assert params[0].device == "cpu" and params[0].data is None
    s = summary_of(doc)
    assert isinstance(s, AlignSummary) and s.task == "even" and s.data is None
    assert s.precompute_ref_saved_bytes is not None
    assert s.precompute_ref_saved_bytes.models > 0


def test_precision():
    doc = _ok(llmbench.run("precision", formats="fp32,bf16"))
    params = [params_of(doc, c) for c in doc.cases]
    assert all(isinstance(p, PrecisionCase) for p in params)
    assert [p.format for p in params] == ["fp32", "bf16"]
    assert doc.summary == {}


def test_schedule():
    doc = _ok(llmbench.run("schedule", kinds="cosine,linear", total=100, warmup=10))
    params = [params_of(doc, c) for c in doc.cases]
    assert all(isinstance(p, ScheduleCase) for p in params)
    assert [(p.kind, p.min_lr_ratio) for p in params] == [("cosine", 0.1), ("linear", 0.0)]
    assert {(p.lr, p.total, p.warmup, p.num_cycles) for p in params} == {(3e-4, 100, 10, 0.5)}
    s = summary_of(doc)
    assert isinstance(s, ScheduleSummary) and s.steps_shown == list(range(0, 101, 10))


def test_old_ddp_summary_reads_with_defaults():
    from llmbench.core.results import ResultDocument

    raw = ResultDocument.model_validate(_ok(llmbench.run("precision", formats="fp32"))
                                        .model_dump(mode="json") | {"benchmark": "ddp"})
    assert summary_of(raw) == DDPSummary(params=0, zero=[], zero_formula=None)
    with pytest.raises(ValueError):
        params_of(raw, raw.cases[0])  # precision's params are not a ddp case
