"""E-divisive means (llmbench.history.changepoint): a clear step is found where it is, with a
small p-value; i.i.d. noise raises a false alarm about as often as alpha says; the result
depends only on the series and the seed."""

import numpy as np
import pytest

from llmbench.history.changepoint import best_split, e_divisive, segment_means


def _step(seed, before=15, after=10, shift=3.0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1, before), rng.normal(shift, 1, after)]


def test_a_clear_step_is_found_at_its_index():
    found = e_divisive(_step(1), alpha=0.01, permutations=199)
    assert [c.index for c in found] == [15]
    assert found[0].p_value < 0.01


def test_a_step_down_a_few_points_from_the_end():
    z = np.r_[np.full(8, 10.0), np.full(4, 7.0)] + np.random.default_rng(2).normal(0, 0.2, 12)
    (found,) = e_divisive(z, alpha=0.01, permutations=499)
    assert found.index == 8 and found.p_value <= 0.01


def test_two_steps_are_both_found():
    rng = np.random.default_rng(3)
    z = np.r_[rng.normal(0, 1, 12), rng.normal(5, 1, 12), rng.normal(0, 1, 12)]
    found = e_divisive(z, alpha=0.01, permutations=199)
    assert [c.index for c in found] == [12, 24]
    assert segment_means(z, [12, 24])[1] > 4


def test_the_statistic_peaks_at_the_step_of_a_clean_series():
    z = np.r_[np.zeros(6), np.ones(5)]
    q, tau = best_split(z, 2)
    assert tau == 6 and q > 0
    assert best_split(z[:3], 2) is None  # too short for two segments of 2


def test_iid_noise_alarms_about_alpha_of_the_time():
    alpha, seeds = 0.05, 300
    alarms = sum(bool(e_divisive(np.random.default_rng(10_000 + s).normal(0, 1, 20),
                                 alpha=alpha, permutations=99, seed=s))
                 for s in range(seeds))
    rate = alarms / seeds
    assert 0.01 <= rate <= 0.10, rate  # alpha 0.05, +- 3 standard errors (0.0126)


def test_no_change_in_a_constant_or_quiet_series():
    assert e_divisive([5.0] * 12) == []
    assert e_divisive(np.random.default_rng(4).normal(0, 1, 25), permutations=199) == []


def test_deterministic_given_the_seed():
    z = np.r_[_step(5, 10, 6, shift=1.2)]
    runs = [e_divisive(z, alpha=0.2, permutations=99, seed=7) for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_size"):
        e_divisive([1.0, 2.0, 3.0, 4.0], min_size=1)
    with pytest.raises(ValueError, match="NaN"):
        e_divisive([1.0, float("nan"), 3.0, 4.0])
