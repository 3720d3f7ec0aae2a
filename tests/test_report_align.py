"""report.align: the warning lines that say why samples follow the rule less after training."""

from __future__ import annotations

from llmbench.report.align import regressions


def _metrics(before, after, **history):
    m = {"eval/rule_satisfaction_before": before, "eval/rule_satisfaction_after": after,
         "eval/preference_accuracy_before": 0.56, "eval/preference_accuracy_after": 1.0}
    m.update({f"history/{k}": v for k, v in history.items()})
    return m


def test_a_small_fall_or_a_gain_says_nothing():
    assert regressions(_metrics(0.55, 0.99), "dpo") == []
    assert regressions(_metrics(0.55, 0.40), "dpo") == []  # 15 points: under FALL
    assert regressions({}, "sft") == []


def test_likelihood_displacement_is_named_from_the_runs_own_figures():
    (line,) = regressions(_metrics(0.55, 0.0, **{"logps/chosen": [-10.4, -20.0, -28.5]}), "dpo")
    assert line.startswith("rule satisfaction fell from 55% to 0%")
    assert "likelihood displacement" in line and "(-10.4 → -28.5)" in line
    assert "--rpo-alpha 1" in line
    (line,) = regressions(_metrics(0.55, 0.0, **{"logps/chosen": [-10.4, -28.5]}), "simpo")
    assert "likelihood displacement" in line and "--rpo-alpha" not in line


def test_reward_over_optimization_needs_the_learned_reward_up_and_gold_down():
    m = _metrics(0.55, 0.0, **{"objective/scores": [0.24, 3.61],
                               "objective/gold_scores": [0.53, 0.3]})
    (line,) = regressions(m, "rlhf")
    assert "reward over-optimization" in line and "--kl-coef" in line
    m["history/objective/gold_scores"] = [0.53, 0.6]  # gold rose: not the learned reward's fault
    assert regressions(m, "rlhf") == ["rule satisfaction fell from 55% to 0%"]
