import math

import pytest

from llmbench.core.fit import power_law_exponent


def test_power_law_exponent_recovers_known_powers():
    xs = [1024, 2048, 4096, 8192]
    assert math.isclose(power_law_exponent(xs, [3 * x**2 for x in xs]), 2.0, rel_tol=1e-9)
    assert math.isclose(power_law_exponent(xs, [5 * x for x in xs]), 1.0, rel_tol=1e-9)
    assert math.isclose(power_law_exponent(xs, [x**0.5 for x in xs]), 0.5, rel_tol=1e-9)


def test_power_law_exponent_needs_two_positive_points():
    assert power_law_exponent([1024], [1.0]) is None
    assert power_law_exponent([1024, 2048], [0.0, 5.0]) is None
    assert power_law_exponent([1024, 1024], [1.0, 2.0]) is None


def test_two_term_fit_recovers_latency_and_bandwidth():
    from llmbench.core.fit import two_term_fit

    alpha, beta = 25e-6, 1 / 12e9  # 25 µs per step, 12 GB/s
    steps = [2, 2, 2, 2, 1, 1]
    volume = [1e3, 1e5, 1e7, 1e9, 5e4, 5e8]
    times = [s * alpha + v * beta for s, v in zip(steps, volume, strict=True)]
    a, b = two_term_fit(steps, volume, times)
    assert a == pytest.approx(alpha, rel=1e-9) and b == pytest.approx(beta, rel=1e-9)


def test_two_term_fit_keeps_terms_non_negative():
    from llmbench.core.fit import two_term_fit

    # Pure bandwidth data with a little negative latency in it: the fit clamps alpha to 0.
    volume = [1e6, 2e6, 4e6]
    times = [v / 1e9 - 1e-7 for v in volume]
    a, b = two_term_fit([2, 2, 2], volume, times)
    assert a == 0.0 and b > 0
    assert two_term_fit([1], [1.0], [1.0]) is None
