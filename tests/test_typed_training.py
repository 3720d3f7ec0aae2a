"""amp, checkpoint, optim, accum, kvcache: every case's params and the summary read back through
their typed models (params_of, summary_of), and the renderers run on them."""

import io

from rich.console import Console

from llmbench.benches import params_of, summary_of
from llmbench.benches.accum import AccumBenchmark, AccumCase, AccumConfig, AccumSummary
from llmbench.benches.amp import AmpBenchmark, AmpCase, AmpConfig, AmpParity, AmpSummary
from llmbench.benches.kvcache import (
    KVAnalyticRow,
    KVCacheBenchmark,
    KVCacheCase,
    KVCacheConfig,
    KVCacheSummary,
    ScaledCopy,
)
from llmbench.benches.optim import (
    AnalyticRow,
    OptimBenchmark,
    OptimCase,
    OptimConfig,
    OptimSummary,
)
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.core.timing import TimingPolicy
from llmbench.models.presets import Architecture
from llmbench.report import render

INLINE = RunOptions(isolate=False)
# One timed call per case: these tests check the documents' shape, not the figures.
ONCE = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=1, min_time_s=0.0, max_runs=1,
                    max_time_s=0.01, block_ms=0.0)


def _rendered(doc) -> str:
    buf = io.StringIO()
    render(doc, Console(file=buf, width=160, highlight=False))
    return buf.getvalue()


def _typed(doc, case_type):
    """Every case ok, its params as `case_type`, equal to the recorded dict, key for key."""
    out = []
    for case in doc.cases:
        assert case.status in ("ok", "unavailable"), (case.name, case.reason)
        p = params_of(doc, case)
        assert isinstance(p, case_type)
        assert p.model_dump(exclude_unset=True) == case.params
        out.append(p)
    return out


def test_amp_typed(hw):
    # bf16 autocast is slow on CPU: fp32 and fp16 + the demo cover every kind of case.
    cfg = AmpConfig(variants=["fp32", "fp16"], steps=5, batch=2, seq=16, device="cpu",
                    demo="underflow", timing=ONCE)
    doc = run_benchmark(AmpBenchmark(), cfg, options=INLINE, hw=hw)
    ps = _typed(doc, AmpCase)
    assert [p.variant for p in ps] == ["fp32", "fp16", "underflow-demo"]
    assert [p.steps for p in ps] == [5, 5, None]
    assert {(p.model, p.batch, p.seq, p.device) for p in ps} == {("tiny", 2, 16, "cpu")}
    s = summary_of(doc)
    assert isinstance(s, AmpSummary) and s.loss_tolerance == 0.05 and s.warmup_steps == 3
    assert set(s.parity) == {"fp32", "fp16+scaler"}
    assert all(isinstance(v, AmpParity) and v.within_tolerance for v in s.parity.values())
    assert "fp16 gradient underflow" in _rendered(doc)


def test_optim_typed(hw):
    cfg = OptimConfig(optimizers=["sgd", "adam"], batch=2, seq=16, device="cpu",
                      compare_decay=True, decay_steps=2, timing=ONCE)
    doc = run_benchmark(OptimBenchmark(), cfg, options=INLINE, hw=hw)
    ps = _typed(doc, OptimCase)
    assert [(p.optimizer, p.precision, p.steps) for p in ps] == [
        ("sgd", "fp32", None), ("adam", "fp32", None), ("decay-comparison", "fp32", 2)]
    s = summary_of(doc)
    assert isinstance(s, OptimSummary) and s.params == doc.cases[0].metrics["params"]
    assert [r.optimizer for r in s.analytic] == ["sgd", "adam"]
    assert all(isinstance(r, AnalyticRow) for r in s.analytic)
    assert s.analytic[1].bytes_per_param == 16.0 and s.rule_of_thumb
    assert "AdamW vs Adam + L2" in _rendered(doc)

    # A size such as 7b: no case, the analytic table only.
    doc = run_benchmark(OptimBenchmark(), OptimConfig(model="7b", device="cpu"), options=INLINE,
                        hw=hw)
    s = summary_of(doc)
    assert doc.cases == [] and s.params == 7_000_000_000
    assert next(r for r in s.analytic if r.optimizer == "adafactor").states_bytes is None
    assert "factored" in _rendered(doc)


def test_accum_typed(hw):
    cfg = AccumConfig(batch=4, seq=16, device="cpu", timing=ONCE)
    doc = run_benchmark(AccumBenchmark(), cfg, options=INLINE, hw=hw)
    ps = _typed(doc, AccumCase)
    assert [(p.micro, p.steps) for p in ps] == [(4, 1), (2, 2), (1, 4)]
    s = summary_of(doc)
    assert isinstance(s, AccumSummary) and s.effective_batch == 4
    assert "micro x steps" in _rendered(doc)


def test_kvcache_typed(hw):
    cfg = KVCacheConfig(model="tiny", measure_seq=32, memory_bytes=2**30, device="cpu",
                        timing=ONCE)
    doc = run_benchmark(KVCacheBenchmark(), cfg, options=INLINE, hw=hw)
    ps = _typed(doc, KVCacheCase)
    assert [(p.variant, p.kv_heads, p.published) for p in ps] == [
        ("MHA", 4, True), ("MQA", 1, False)]
    assert {(p.context, p.impl, p.device) for p in ps} == {(32, "sdpa", "cpu")}
    s = summary_of(doc)
    assert isinstance(s, KVCacheSummary) and isinstance(s.architecture, Architecture)
    assert s.architecture.name == "tiny" and isinstance(s.scaled_copy, ScaledCopy)
    assert all(isinstance(r, KVAnalyticRow) and r.max_context and r.max_batch
               for r in s.analytic)
    assert "max context in 1 GiB" in _rendered(doc)
