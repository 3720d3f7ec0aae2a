"""The alignment loops, small and fast, in this process (one also isolated)."""

import json
import math

import pytest
import torch

from llmbench.benches.align import AlignBenchmark, AlignConfig
from llmbench.core.errors import UsageError
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.train.loop import HostReads, build_model
from llmbench.train.policy import generate, prompts_and_responses, sample

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
    assert case.params["layout"] == "concatenated"  # TRL's, the default, in the results
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
    # With RPO's NLL and the separate layout (the path with two forwards per half).
    doc = run(hw, method="dpo", steps=5, precompute_ref=True, rpo_alpha=0.5, layout="separate")
    assert [c.name for c in doc.cases] == ["dpo", "dpo/precompute-ref"]
    plain, pre = (c.metrics for c in doc.cases)
    assert all(c.params["layout"] == "separate" for c in doc.cases)
    # Step 0: the policy is the reference, so DPO's ln 2 plus alpha times the chosen NLL.
    for m in (plain, pre):
        nll = m["history/nll_loss"][0]
        assert nll > 0 and m["loss_at_step0"] == pytest.approx(math.log(2) + 0.5 * nll)
    assert pre["history/loss"] == pytest.approx(plain["history/loss"], rel=1e-4)
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
        # A rollout reads the device once: the rows, to score them by the rule.
        assert case.metrics["rollout/host_reads"] == 1
        assert case.metrics["rollout/tokens_sampled"] == 8 * 7
        for key in ("objective/scores", "objective/kl", "objective/entropy", "policy/approxkl",
                    "policy/clipfrac", "loss/policy", "loss/value", "val/ratio"):
            assert f"history/{key}" in case.metrics
    if method == "rm":
        assert 0 <= case.metrics["eval/accuracy"] <= 1
    if method == "orpo":
        # TRL's names: log_odds_chosen the mean log odds ratio, log_odds_ratio the mean of its
        # log sigmoid, at most log sigmoid of the mean (log sigmoid is concave).
        m = case.metrics
        for chosen, ratio in zip(m["history/log_odds_chosen"], m["history/log_odds_ratio"],
                                 strict=True):
            assert ratio <= min(0.0, -math.log1p(math.exp(-chosen))) + 1e-6
        assert m["history/nll_loss"][0] > 0


def test_generation_reads_nothing_back():
    model = build_model("tiny", seed=0, device="cpu")
    prompts = torch.randint(0, 256, (4, 5), generator=torch.Generator().manual_seed(1))
    for max_new in (1, 8):
        with HostReads() as reads:
            rows, mask = generate(model, prompts, max_new=max_new, temperature=1.0,
                                  generator=torch.Generator().manual_seed(0))
        assert reads.calls == []  # not per token, nor per call
    again, _ = generate(model, prompts, max_new=8, temperature=1.0,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(rows, again) and rows.shape == (4, 13) and mask.shape == (4, 12)
    with HostReads() as reads:  # scoring by the rule: one read of the rows
        pairs = prompts_and_responses(rows, 5)
    assert reads.count == 1
    assert [p for p, _ in pairs] == [bytes(r) for r in prompts.tolist()]
    elsewhere = torch.zeros((4, 5), dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="generator is on cpu, the prompts on meta"):
        generate(model, elsewhere, max_new=2, temperature=1.0, generator=torch.Generator())


def test_sampling_makes_multinomials_draws():
    """A seed gives a CPU run the tokens torch.multinomial sampled before (on the host)."""
    probs = torch.softmax(3 * torch.randn(16, 256, generator=torch.Generator().manual_seed(2)),
                          dim=-1)
    ours, theirs = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(20):
        assert torch.equal(sample(probs, ours), torch.multinomial(probs, 1, generator=theirs))


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
    ({"method": "grpo"}, "sft"), ({"layout": "packed"}, "concatenated"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlignConfig(**{"method": "dpo", **kwargs})
