"""`align simpo` and `align kto`: the loops run and log TRL's figures, and the loss each batch
trains on is the paper's, computed here independently, row by row, on a tiny untrained model."""

import json
import math
import random

import pytest
import torch

from llmbench.benches.align import AlignBenchmark, AlignConfig
from llmbench.benches.align.common import make_run
from llmbench.benches.align.kto import kto_batch, kto_tensors
from llmbench.benches.align.simpo import simpo_batch
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.train.loop import build_model
from llmbench.train.prefs import unpair
from tests.conftest import assert_bad_input, run_cli_inprocess

# test_align_bench's sizes, so that a session trains the reference policy once for both.
SMALL = dict(sft_steps=60, train_pairs=256, heldout_pairs=64, eval_samples=16, device="cpu")


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run(hw, **kw):
    return run_benchmark(AlignBenchmark(), AlignConfig(**{**SMALL, **kw}),
                         options=RunOptions(isolate=False), hw=hw)


def logged(m, key):
    series = m[f"history/{key}"]
    assert len(series) == len(m["history/step"]), key
    return series


def test_simpo_runs_without_a_reference(hw):
    (case,) = run(hw, method="simpo", steps=4, batch=8).cases
    m = case.metrics
    assert case.status == "ok", case.reason
    assert m["models_held"] == 1 and "memory/reference_bytes" not in m
    assert m["memory/policy_bytes"] > 0 and m["tokens_per_s"] > 0
    chosen, rejected = logged(m, "rewards/chosen"), logged(m, "rewards/rejected")
    logps = logged(m, "logps/chosen")
    for c, r, margin, lc, nll in zip(chosen, rejected, logged(m, "rewards/margins"), logps,
                                     logged(m, "nll_loss"), strict=True):
        assert c < 0 and r < 0  # beta * a mean log-probability
        assert margin == pytest.approx(c - r, abs=1e-6)
        assert c == pytest.approx(0.1 * lc, rel=1e-5)  # --beta's default
        assert nll > 0
    assert all(0 <= a <= 1 for a in logged(m, "rewards/accuracies"))
    assert all(x < 0 for x in logged(m, "logps/rejected"))
    assert all(x > 0 for x in logged(m, "loss"))
    for key in ("preference_accuracy", "rewards/accuracies", "rule_satisfaction"):
        assert 0 <= m[f"eval/{key}_before"] <= 1 and 0 <= m[f"eval/{key}_after"] <= 1


def test_kto_starts_at_one_half_against_its_reference(hw):
    (case,) = run(hw, method="kto", steps=4, batch=8).cases
    m = case.metrics
    assert case.status == "ok", case.reason
    assert m["models_held"] == 2
    assert m["memory/policy_bytes"] == m["memory/reference_bytes"] > 0
    # At step 0 the policy is the reference: every r is 0, the KL point 0, each loss 1 - s(0).
    assert logged(m, "loss")[0] == pytest.approx(0.5, abs=1e-5)
    assert logged(m, "kl")[0] == pytest.approx(0, abs=1e-5)
    assert logged(m, "rewards/chosen")[0] == pytest.approx(0, abs=1e-5)
    assert all(k >= 0 for k in logged(m, "kl"))  # clamped, as TRL's
    for c, r, margin in zip(logged(m, "rewards/chosen"), logged(m, "rewards/rejected"),
                            logged(m, "rewards/margins"), strict=True):
        assert margin == pytest.approx(c - r, abs=1e-6) or math.isnan(c) or math.isnan(r)
    assert all(x < 0 for x in logged(m, "logps/chosen") + logged(m, "logps/rejected")
               if not math.isnan(x))
    assert 0 <= m["eval/rule_satisfaction_after"] <= 1
    assert "eval/preference_accuracy_after" in m and "loss_at_step0" not in m


# ------------------------------------------------------------- the losses, independently


def test_losses_match_trls_forms_on_random_inputs():
    from llmbench.train.losses import kto_loss, simpo_loss

    g = torch.Generator().manual_seed(3)
    c, r = -3 * torch.rand(64, generator=g, dtype=torch.float64), \
        -3 * torch.rand(64, generator=g, dtype=torch.float64)
    losses, cr, rr = simpo_loss(c, r, beta=2.5, gamma=1.4)
    # TRL's CPOTrainer writes it -log s(beta * ((c - r) - gamma / beta)).
    for i in range(64):
        z = 2.5 * ((float(c[i]) - float(r[i])) - 1.4 / 2.5)
        assert float(losses[i]) == pytest.approx(-math.log(1 / (1 + math.exp(-z))), rel=1e-12)
    assert torch.equal(cr, 2.5 * c) and torch.equal(rr, 2.5 * r)

    policy = -20 * torch.rand(64, generator=g, dtype=torch.float64)
    policy.requires_grad_(True)
    ref = -20 * torch.rand(64, generator=g, dtype=torch.float64)
    label = torch.rand(64, generator=g) < 0.4
    for kl_value in (0.7, -0.3):  # a negative estimate is clamped to 0
        kl = torch.tensor(kl_value, dtype=torch.float64, requires_grad=True)
        losses, rewards = kto_loss(policy, ref, label, kl, beta=0.3, desirable_weight=1.2,
                                   undesirable_weight=0.8)
        z0 = max(kl_value, 0.0)
        for i in range(64):
            ri = float(policy[i].detach()) - float(ref[i])
            s = 1 / (1 + math.exp(-0.3 * ((ri - z0) if label[i] else (z0 - ri))))
            assert float(losses[i].detach()) == pytest.approx((1.2 if label[i] else 0.8) * (1 - s),
                                                     rel=1e-12)
            assert float(rewards[i]) == pytest.approx(0.3 * ri, rel=1e-12)
        losses.sum().backward()
        assert kl.grad is None  # the reference point is not differentiated, as TRL's
        assert policy.grad is not None
        policy.grad = None


# ------------------------------------------------------------- the loss of one batch, by hand


def _row_logps(model, prompt: bytes, completion: bytes) -> tuple[float, int]:
    """Sum of log p(completion byte) for one row, and how many bytes: one forward, no batch."""
    row = torch.tensor([list(prompt + completion)])
    logp = torch.log_softmax(model(row[:, :-1])[0].double(), dim=-1)
    total = sum(float(logp[len(prompt) - 1 + j, completion[j]]) for j in range(len(completion)))
    return total, len(completion)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


@pytest.fixture(scope="module")
def models():
    """An untrained policy and a differently seeded 'reference': every r is far from 0."""
    return (build_model("tiny", seed=0, device="cpu").train(),
            build_model("tiny", seed=1, device="cpu").eval())


def _run(method, **kw):
    config = AlignConfig(method=method, steps=1, device="cpu", train_pairs=32,
                         heldout_pairs=4, **kw)
    return make_run({"params": config.model_dump(mode="json")})


def test_simpo_batch_loss_is_the_papers(models):
    policy, _ = models
    run = _run("simpo", batch=5, beta=2.0, simpo_gamma=0.7, cpo_alpha=0.3)
    state = run.rng.getstate()
    loss, (cm, rm), figures = simpo_batch(run, policy)
    run.rng.setstate(state)
    pairs = run.sample_pairs(5)  # the pairs the batch drew
    terms, nll_sum, nll_tokens = [], 0.0, 0
    with torch.no_grad():
        for p in pairs:
            (sc, nc), (sr, nr) = _row_logps(policy, p.prompt, p.chosen), \
                _row_logps(policy, p.prompt, p.rejected)
            terms.append(_softplus(-(2.0 * sc / nc - 2.0 * sr / nr - 0.7)))
            nll_sum, nll_tokens = nll_sum - sc, nll_tokens + nc
    expected = sum(terms) / len(terms) + 0.3 * nll_sum / nll_tokens
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(figures()["nll_loss"]) == pytest.approx(nll_sum / nll_tokens, rel=1e-5)
    assert int(cm.sum() + rm.sum()) == sum(len(p.chosen) + len(p.rejected) for p in pairs)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 1.33)])
def test_kto_batch_loss_is_the_papers(models, weights):
    policy, reference = models
    wd, wu = weights
    run = _run("kto", batch=6, beta=0.5, desirable_weight=wd, undesirable_weight=wu)
    examples = unpair(run.data.train)
    state = run.rng.getstate()
    loss, (good_mask, bad_mask), figures = kto_batch(run, policy, reference, examples)
    run.rng.setstate(state)
    picks = [run.rng.choice(examples) for _ in range(6)]
    with torch.no_grad():
        r = [_row_logps(policy, e.prompt, e.completion)[0]
             - _row_logps(reference, e.prompt, e.completion)[0] for e in picks]
        # The reference point: completion i - 1 after prompt i, policy minus reference.
        mismatched = [(picks[i].prompt, picks[i - 1].completion) for i in range(6)]
        kl = sum(_row_logps(policy, *pc)[0] - _row_logps(reference, *pc)[0]
                 for pc in mismatched) / 6
    z0 = max(kl, 0.0)
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    terms = [wd * (1 - sigmoid(0.5 * (ri - z0))) if e.label
             else wu * (1 - sigmoid(0.5 * (z0 - ri))) for e, ri in zip(picks, r, strict=True)]
    assert float(loss.detach()) == pytest.approx(sum(terms) / 6, rel=1e-5)
    logged = figures()
    assert float(logged["kl"]) == pytest.approx(z0, rel=1e-5, abs=1e-6)
    good = [0.5 * ri for e, ri in zip(picks, r, strict=True) if e.label]
    if good:
        assert float(logged["rewards/chosen"]) == pytest.approx(sum(good) / len(good), rel=1e-5)
    assert int(good_mask.sum()) == sum(len(e.completion) for e in picks if e.label)
    assert int(bad_mask.sum()) == sum(len(e.completion) for e in picks if not e.label)


def test_kto_rows_pair_each_prompt_with_the_previous_completion():
    examples = unpair(_run("kto").data.train[:3])  # p0 c0, p0 r0, p1 c1, ...
    tokens, mask, desirable = kto_tensors(examples, torch.device("cpu"))
    assert tokens.shape[0] == 12 and desirable.tolist() == [True, False] * 3
    for i, e in enumerate(examples):
        for row, completion in ((i, e.completion), (6 + i, examples[i - 1].completion)):
            got = bytes(t for t, on in zip(tokens[row, 1:].tolist(), mask[row].tolist(),
                                           strict=True) if on)
            assert got == completion
            assert bytes(tokens[row, :len(e.prompt)].tolist()) == e.prompt


# ------------------------------------------------------------- the command line and --data


def _jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records))
    return path


def test_kto_reads_unpaired_records_and_refuses_bad_ones(tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q", "completion": "yes", "label": True},
                                          {"prompt": "Q", "completion": "no", "label": "no"}])
    assert_bad_input(run_cli_inprocess("align", "kto", "--data", str(bad)),
                     f"{bad}:2: 'label' must be true or false")
    # Unpaired records are KTO's only: another method says so instead of "missing 'chosen'".
    good = _jsonl(tmp_path / "good.jsonl", [{"prompt": "Q", "completion": "yes", "label": True},
                                            {"prompt": "Q", "completion": "no", "label": False}])
    assert_bad_input(run_cli_inprocess("align", "dpo", "--data", str(good)),
                     "only kto trains on")


def test_kto_trains_on_a_users_unpaired_file(hw, tmp_path):
    rng = random.Random(0)
    path = _jsonl(tmp_path / "kto.jsonl", [
        {"prompt": f"Q{i}: ", "completion": "yes" if good else "no way", "label": good}
        for i in range(24) for good in [rng.random() < 0.5]])
    # A reference of its own (the data differs), so a short one.
    (case,) = run(hw, method="kto", steps=3, batch=4, data=str(path), sft_steps=5).cases
    m = case.metrics
    assert case.status == "ok", case.reason
    assert "eval/rule_satisfaction_after" not in m and "eval/preference_accuracy_after" not in m
    assert math.isfinite(m["eval/logps_margin_before"])
    assert m["eval/logps_margin_gain"] == pytest.approx(
        m["eval/logps_margin_after"] - m["eval/logps_margin_before"])


def test_help_lists_the_new_methods():
    proc = run_cli_inprocess("align", "--help", env={"COLUMNS": "200"})  # unwrapped
    assert proc.returncode == 0
    assert "<sft|rm|dpo|orpo|simpo|kto|ppo|rlhf>" in proc.stdout
    for flag in ("--simpo-gamma", "--cpo-alpha", "--desirable-weight", "--undesirable-weight"):
        assert flag in proc.stdout


@pytest.mark.parametrize("kwargs, message", [
    ({"simpo_gamma": -1}, "greater than or equal to 0"),
    ({"desirable_weight": 0}, "greater than 0"), ({"cpo_alpha": -0.1}, "greater than or equal"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlignConfig(method="kto", **kwargs)
