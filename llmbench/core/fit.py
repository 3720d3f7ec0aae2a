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

