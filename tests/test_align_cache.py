"""A cached model gives an alignment run the same result as one trained now: the reference
policy and the reward model are trained on their own random streams and keyed by everything
that shapes them (llmbench.train.reference)."""

import copy
import math
import random
import shutil

import pytest
import torch

from llmbench.benches.align import AlignBenchmark, AlignConfig
from llmbench.benches.align import rm as rm_module
from llmbench.benches.align.common import make_run, reference_policy
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.train.prefs import load_data
from llmbench.train.reference import sft_reference, stage_rng

INLINE = RunOptions(isolate=False)
# rlhf as small as it runs with every figure logged: a one-layer model, two PPO iterations.
TINY = dict(method="rlhf", layers=1, sft_steps=3, steps=2, batch=4, ppo_epochs=1,
            train_pairs=32, heldout_pairs=8, eval_samples=8, device="cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """These shapes are tiny: one thread runs them faster, and on a shared machine far faster
    (two threads wait for each other whenever one is descheduled)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def figures(m: dict) -> dict:
    """What a run found (held-out figures before and after, PPO's objective, the whole logged
    history, the bytes per role), not its times nor where its models came from."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in m.items()
            if k.startswith(("eval/", "objective/", "history/", "rollout/", "memory/"))
            and not k.endswith("_from_cache")}


def test_rlhf_gives_the_same_result_whatever_came_from_the_cache(hw, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLMBENCH_CACHE", str(cache))
    # The reward model's 200 steps cut to 3 for time: the same code trains and caches it.
    monkeypatch.setattr(rm_module, "RM_STEPS", 3)

    def run() -> tuple[tuple[float, float], dict]:
        config = AlignConfig(**TINY)
        (case,) = run_benchmark(AlignBenchmark(), config, options=INLINE, hw=hw).cases
        assert case.status == "ok", case.reason
        m = case.metrics
        return (m["history/reference_from_cache"][0], m["reward_model_from_cache"]), figures(m)

    cold = run()
    assert cold[0] == (0.0, 0.0)
    for key in ("eval/rule_satisfaction_before", "eval/rule_satisfaction_after",
                "eval/rule_score_after", "eval/reward_model_accuracy", "objective/kl",
                "history/loss", "history/loss/policy", "history/objective/scores",
                "history/objective/kl", "history/objective/gold_scores"):
        assert key in cold[1], key
    assert len(cold[1]["history/loss"]) == TINY["steps"]
    assert run() == ((1.0, 1.0), cold[1])  # both from the cache
    shutil.rmtree(cache / "rm")
    assert run() == ((1.0, 0.0), cold[1])  # the reference cached, the reward model trained


def test_align_rm_trains_the_reward_model_ppo_would(tmp_path, monkeypatch):
    """`align rm` (logging, a trainable reference) and PPO (a frozen reference) train the same
    model for the same key: the one each leaves in the cache for the other."""
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path))
    params = {**AlignConfig(**TINY).model_dump(), "method": "rm", "model": "tiny", "steps": 3,
              "batch": 4, "lr": 1e-3}
    run = make_run({"params": params})
    reference = reference_policy(run)
    frozen = copy.deepcopy(reference).eval().requires_grad_(False)
    args = dict(steps=3, batch=4, lr=1e-3)
    logged = rm_module.train_reward_model(run, reference, log=True, **args).state_dict()
    quiet = rm_module.train_reward_model(run, frozen, log=False, **args).state_dict()
    assert len(run.history["loss"]) == 3  # align rm's log
    assert logged.keys() == quiet.keys()
    assert all(torch.equal(v, quiet[k]) for k, v in logged.items())
    before = reference.state_dict()  # the backbone trained too, under a frozen reference
    assert any(not torch.equal(v, before[k.removeprefix("backbone.")])
               for k, v in quiet.items() if k.startswith("backbone."))
    # Its key holds the reference's: another reference, another reward model.
    longer = make_run({"params": {**params, "sft_steps": params["sft_steps"] + 1}})
    assert rm_module.rm_key(run, **args) != rm_module.rm_key(longer, **args)


@pytest.fixture
def data():
    return load_data(task="even", data=None, train=16, heldout=4, seed=0)


def test_the_reference_leaves_the_callers_streams_alone(data, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path))
    args = dict(size="tiny", seed=0, steps=2, batch=4, lr=1e-3, device="cpu", layers=1)
    torch.manual_seed(123)
    random.seed(5)
    streams = torch.get_rng_state(), random.getstate()
    trained, hit = sft_reference(data, **args)
    assert not hit
    assert torch.equal(torch.get_rng_state(), streams[0]) and random.getstate() == streams[1]
    torch.manual_seed(7)  # other global streams: the same reference
    cached, hit = sft_reference(data, **args)
    assert hit
    assert trained.state_dict().keys() == cached.state_dict().keys()
    assert all(torch.equal(v, cached.state_dict()[k]) for k, v in trained.state_dict().items())


@pytest.mark.parametrize("change", [{"lr": 2e-3}, {"steps": 3}, {"batch": 5}, {"seed": 1},
                                    {"layers": 2}, {"size": "mini"}, {"data": "sorted"}])
def test_a_change_to_what_shapes_the_reference_misses_the_cache(data, tmp_path, monkeypatch,
                                                                change):
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path))
    args = dict(size="tiny", seed=0, steps=1, batch=2, lr=1e-3, device="cpu", layers=1)
    assert not sft_reference(data, **args)[1]
    assert sft_reference(data, **args)[1]
    other = dict(change)
    task = other.pop("data", None)
    changed = load_data(task=task, data=None, train=16, heldout=4, seed=0) if task else data
    assert not sft_reference(changed, **{**args, **other})[1]


def test_stage_streams_depend_on_seed_and_stage():
    def draws(seed: int, stage: str) -> tuple:
        with stage_rng(seed, stage, "cpu") as rng:
            return rng.random(), float(torch.rand(1))

    assert draws(0, "sft") == draws(0, "sft")
    assert len({draws(0, "sft"), draws(1, "sft"), draws(0, "rm")}) == 3
