"""The alignment loops, small and fast, in this process (one also isolated)."""

import json
import math

import pytest

from llmbench.benches.align import AlignBenchmark, AlignConfig
from llmbench.core.errors import UsageError
from llmbench.core.runner import RunOptions, run_benchmark

INLINE = RunOptions(isolate=False)
SMALL = dict(sft_steps=60, train_pairs=256, heldout_pairs=64, eval_samples=64, device="cpu")


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run(hw, **kw):
    return run_benchmark(AlignBenchmark(), AlignConfig(**{**SMALL, **kw}), options=INLINE, hw=hw)


def test_dpo_starts_at_ln2_and_moves(hw):
    doc = run(hw, method="dpo", steps=30)
    (case,) = doc.cases
    m = case.metrics
    assert case.status == "ok", case.reason
    assert m["loss_at_step0"] == pytest.approx(math.log(2), abs=1e-5)
    assert m["history/loss"][-1] < m["history/loss"][0]
    assert m["eval/rewards/accuracies_after"] > m["eval/rewards/accuracies_before"]
    assert 0 <= m["eval/rule_satisfaction_before"] <= 1
    assert m["models_held"] == 2
    assert m["memory/policy_bytes"] == m["memory/reference_bytes"] > 0
    assert m["time_ms"].n == 29 and m["tokens_per_s"] > 0
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert len(m[f"history/{key}"]) == len(m["history/step"])
    json.dumps(doc.model_dump(mode="json"))  # the whole history serializes


def test_reference_is_cached_between_runs(hw):
    first = run(hw, method="sft", steps=2).cases[0].metrics["history/reference_from_cache"]
    second = run(hw, method="sft", steps=2).cases[0].metrics["history/reference_from_cache"]
    assert second == [1.0]
    assert first in ([0.0], [1.0])  # another test may have trained it first


def test_precompute_ref_frees_the_reference(hw):
    doc = run(hw, method="dpo", steps=5, precompute_ref=True)
    assert [c.name for c in doc.cases] == ["dpo", "dpo/precompute-ref"]
    plain, pre = (c.metrics for c in doc.cases)
    assert plain["models_held"] == 2 and pre["models_held"] == 1
    assert "memory/reference_bytes" not in pre
    assert pre["memory/reference_logps_bytes"] == 2 * 256 * 4  # two float32 per train pair
    saved = doc.summary["precompute_ref_saved_bytes"]
    assert saved["models"] == plain["memory/reference_bytes"] - 2 * 256 * 4


@pytest.mark.parametrize("method, held", [("sft", 1), ("orpo", 1), ("rm", 1), ("ppo", 3),
                                          ("rlhf", 4)])
def test_every_method_runs(hw, method, held):
    doc = run(hw, method=method, steps=3, batch=8)
    (case,) = doc.cases
    assert case.status == "ok", case.reason
    assert case.metrics["models_held"] == held
    assert case.metrics["peak_memory_bytes"] >= 0
    if method in ("ppo", "rlhf"):
        for key in ("objective/scores", "objective/kl", "objective/entropy", "policy/approxkl",
                    "policy/clipfrac", "loss/policy", "loss/value", "val/ratio"):
            assert f"history/{key}" in case.metrics
    if method == "rm":
        assert 0 <= case.metrics["eval/accuracy"] <= 1


def test_divergence_is_a_status_not_a_traceback(hw):
    doc = run(hw, method="dpo", steps=20, lr=1000.0)
    (case,) = doc.cases
    assert case.status == "error"
    assert case.reason.startswith("Diverged: at step")


def test_user_data(hw, tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"Q{i}: ", "chosen": "yes",
                                          "rejected": "no way"}) for i in range(20)))
    doc = run(hw, method="dpo", steps=5, data=str(path))
    (case,) = doc.cases
    assert case.status == "ok", case.reason
    assert "eval/rule_satisfaction_after" not in case.metrics  # no rule for user data
    assert "eval/preference_accuracy_after" in case.metrics
    with pytest.raises(UsageError, match="ppo with --reward-model, or rlhf"):
        AlignBenchmark().resolve(AlignConfig(method="ppo", data=str(path)), hw)


def test_isolated_run(hw):
    doc = run_benchmark(AlignBenchmark(), AlignConfig(**SMALL, method="orpo", steps=3),
                        options=RunOptions(isolate=True, timeout_s=300), hw=hw)
    assert doc.cases[0].status == "ok", doc.cases[0].reason


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "greater than 0"), ({"beta": 0}, "greater than 0"),
    ({"loss_type": "nope"}, "sigmoid"), ({"task": "odd"}, "even"),
    ({"method": "grpo"}, "sft"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlignConfig(**{"method": "dpo", **kwargs})
