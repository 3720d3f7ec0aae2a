"""Least-squares fits used to turn sweeps into one number."""

from __future__ import annotations

import math


def power_law_exponent(xs: list[float], ys: list[float]) -> float | None:
    """k in y ~ c * x^k, fitted on log y = log c + k log x; None with fewer than 2 usable points.

    Points with a non-positive x or y are left out (a log cannot take them).
    """
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    return sxy / sxx



def two_term_fit(x1: list[float], x2: list[float],
                 ys: list[float]) -> tuple[float, float] | None:
    """Non-negative (a, b) in y ≈ a·x1 + b·x2, least squares on the *relative* error
    (each point weighted by 1/y, so a sweep over sizes from bytes to gigabytes counts the
    small points too). None with fewer than two points with y > 0."""
    rows = [(u / y, v / y) for u, v, y in zip(x1, x2, ys, strict=True) if y > 0]
    if len(rows) < 2:
        return None
    s11 = sum(u * u for u, _ in rows)
    s22 = sum(v * v for _, v in rows)
    s12 = sum(u * v for u, v in rows)
    r1 = sum(u for u, _ in rows)
    r2 = sum(v for _, v in rows)
    det = s11 * s22 - s12 * s12
    if det > 1e-12 * max(s11 * s22, 1e-300):
        a = (r1 * s22 - r2 * s12) / det
        b = (r2 * s11 - r1 * s12) / det
        if a >= 0 and b >= 0:
            return a, b
    # The best fit has a term at zero: fit the other one alone, keep the better of the two.
    only_a = (r1 / s11, 0.0) if s11 > 0 else None
    only_b = (0.0, r2 / s22) if s22 > 0 else None

    def loss(ab: tuple[float, float]) -> float:
        return sum((ab[0] * u + ab[1] * v - 1) ** 2 for u, v in rows)

    candidates = [c for c in (only_a, only_b) if c is not None]
    return min(candidates, key=loss) if candidates else None
