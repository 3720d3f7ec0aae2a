import time

import pytest

from llmbench.core.timing import TimeStats, TimingPolicy, measure, quantile


def test_quantile_linear_interpolation():
    values = [1.0, 2.0, 3.0, 4.0]
    assert quantile(values, 0.5) == 2.5
    assert quantile(values, 0.25) == 1.75
    assert quantile(values, 0.0) == 1.0
    assert quantile(values, 1.0) == 4.0
    assert quantile([7.0], 0.9) == 7.0


def test_stats_from_samples():
    s = TimeStats.from_samples([10.0, 12.0, 11.0, 13.0, 100.0])
    assert s.median == 12.0
    assert s.iqr == pytest.approx(13.0 - 11.0)
    assert s.n == 5 and s.samples == [10.0, 12.0, 11.0, 13.0, 100.0]
    assert s.p10 == pytest.approx(10.4)
    assert s.p90 == pytest.approx(13.0 + 0.6 * 87.0)
    assert s.noisy  # IQR/median = 2/12 > 10 %
    assert not TimeStats.from_samples([10.0, 10.1, 10.2, 10.1]).noisy


def test_measure_sleep_median():
    policy = TimingPolicy(warmup_s=0.0, min_runs=5, min_time_s=0.1, max_time_s=2.0)
    stats = measure(lambda: time.sleep(0.02), policy=policy)
    assert stats.n >= 5
    assert 20.0 <= stats.median < 26.0


def test_measure_respects_caps():
    policy = TimingPolicy(warmup_s=0.0, min_runs=3, min_time_s=100.0, max_runs=4,
                          max_time_s=100.0)
    stats = measure(lambda: time.sleep(0.005), policy=policy)
    assert stats.n == 4
    policy = TimingPolicy(warmup_s=0.0, min_runs=3, max_runs=1000, max_time_s=0.2,
                          target_rel_iqr=1e-9)
    t0 = time.perf_counter()
    stats = measure(lambda: time.sleep(0.05), policy=policy)
    assert 3 <= stats.n < 10 and time.perf_counter() - t0 < 1.0


def test_min_runs_is_a_floor_even_past_max_time():
    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=3, max_time_s=0.01,
                          block_ms=0.0)
    stats = measure(lambda: time.sleep(0.02), policy=policy)
    assert stats.n == 3


def test_fast_calls_are_timed_in_blocks():
    calls = []
    policy = TimingPolicy(warmup_s=0.01, min_runs=3, min_time_s=0.0, max_runs=3,
                          block_ms=1.0)
    stats = measure(lambda: calls.append(1), policy=policy)
    assert stats.n == 3
    # Each sample is the mean of a block of many calls, so far more calls than samples ran.
    assert len(calls) > 100
    assert stats.median < 0.1


def test_prior_samples_count():
    calls = []
    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=3, max_runs=3,
                          min_time_s=0.0, block_ms=0.0)
    stats = measure(lambda: calls.append(time.sleep(0.01)), policy=policy,
                    prior_samples_ms=[10.0])
    assert stats.n == 3 and len(calls) == 2
    assert stats.samples[0] == 10.0


def test_noisy_calls_are_flagged():
    delays = iter([0.002, 0.02] * 50)
    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=6, max_runs=6,
                          block_ms=0.0)
    stats = measure(lambda: time.sleep(next(delays)), policy=policy)
    assert stats.noisy


def test_lockstep_policy_makes_exactly_the_calls_asked_for():
    """Every rank of a group must call a collective equally often: no adaptive stopping."""
    from llmbench.core.timing import lockstep_policy

    calls = []
    stats = measure(lambda: calls.append(1), policy=lockstep_policy(warmup=3, iters=7))
    assert len(calls) == 10 and stats.n == 7
    slow = []
    stats = measure(lambda: (slow.append(1), time.sleep(0.01)),
                    policy=lockstep_policy(warmup=0, iters=2))
    assert len(slow) == 2 and stats.n == 2  # no extra estimation call either


def test_lockstep_single_call_is_a_single_call():
    from llmbench.core.timing import lockstep_policy

    calls = []
    stats = measure(lambda: calls.append(1), policy=lockstep_policy(warmup=0, iters=1))
    assert len(calls) == 1 and stats.n == 1


def test_interleaved_variants_alternate():
    from llmbench.core.timing import measure_interleaved

    order = []
    stats = measure_interleaved({"a": lambda: order.append("a"),
                                 "b": lambda: (order.append("b"), time.sleep(0.002))},
                                warmup=1, iters=3)
    assert order == ["a", "b"] * 4
    assert stats["a"].n == stats["b"].n == 3
    assert stats["b"].median > stats["a"].median
