"""Typed params and summaries of `attention` and `tune attention`: every case of a small run
reads back through `params_of`, the summary through `summary_of` (conftest sets
LLMBENCH_STRICT_METRICS=1, so the runner has checked each against the declarations too)."""

from llmbench.api import run
from llmbench.benches import params_of, summary_of
from llmbench.benches.attention import AttentionCase, AttentionSummary
from llmbench.benches.tune import TuneCase, TuneSummary

SMALL = {"heads": 2, "head_dim": 16, "max_time": 0.05, "isolate": False}


def test_attention_typed_dense_window_and_varlen():
    doc = run("attention", seq=[32, 64], kv_heads=1, impl=["standard", "tiled"], window=16,
              **SMALL)
    assert doc.cases and all(c.status in ("ok", "unavailable") for c in doc.cases)
    for case in doc.cases:
        p = params_of(doc, case)
        assert isinstance(p, AttentionCase)
        assert (p.impl, p.seq, p.kv_heads, p.varlen) == (case.params["impl"],
                                                         case.params["seq"], 1, None)
        assert p.window in (None, 16)
        assert (p.block_m is not None) == (p.impl == "tiled")
    s = summary_of(doc)
    assert isinstance(s, AttentionSummary)
    assert set(s.scaling) == {"standard", "tiled"} and s.scaling["tiled"].seqs == [32, 64]
    assert s.standard_limit is not None and s.lengths is None
    assert {k: w.window for k, w in (s.window or {}).items()} == {
        f"{impl}/seq={seq}": 16 for impl in ("standard", "tiled") for seq in (32, 64)}

    doc = run("attention", kv_seq=128, seq=[16], impl=["standard"], mode="fwd+bwd", **SMALL)
    (case,) = doc.cases
    p = params_of(doc, case)
    assert (case.status, p.kv_seq, p.seq, p.mode, p.window) == ("ok", 128, 16, "fwd+bwd", None)

    doc = run("attention", varlen=[32, 16, 8], **SMALL)
    assert {params_of(doc, c).impl for c in doc.cases} == {
        "triton-varlen", "flash-attn-varlen", "flex-varlen", "sdpa-padded"}
    for case in doc.cases:
        p = params_of(doc, case)
        assert (p.varlen, p.seq, p.batch, p.window) == ([32, 16, 8], None, None, None)
    s = summary_of(doc)
    assert (s.lengths, s.total_tokens, s.longest) == ([32, 16, 8], 56, 32)
    assert s.padded_flops > s.useful_flops and s.standard_limit is None and s.scaling == {}


def test_tune_typed_interpret():
    doc = run("tune attention", interpret=True, max_time=0.05)
    assert [c.status for c in doc.cases] == ["ok", "ok"]
    for case in doc.cases:
        p = params_of(doc, case)
        assert isinstance(p, TuneCase)
        assert (p.impl, p.head_dim, p.arch, p.kernel) == ("triton", 32, None, None)
        assert (p.block_m, p.block_n, p.num_warps, p.num_stages) == tuple(
            case.params[k] for k in ("block_m", "block_n", "num_warps", "num_stages"))
    s = summary_of(doc)
    assert isinstance(s, TuneSummary) and not s.compile_only
    assert (s.configs_run, s.configs_pruned, list(s.winners)) == (2, 0, ["32"])
    assert s.winners["32"].throughput_tflops > 0
