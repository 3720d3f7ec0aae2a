import math

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
