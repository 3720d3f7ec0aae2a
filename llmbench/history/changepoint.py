"""E-divisive means: change points of a series with a permutation test, in numpy (no torch).

For a stretch of the series split at tau and ended at kappa, X = z[0:tau] (m points) and
Y = z[tau:kappa] (n points), the divergence of the two samples, with 0 < a < 2 (here a = 1),

    E(X, Y) = 2/(m n) sum_i sum_j |x_i - y_j|^a
              - 1/C(m, 2) sum_{i<k} |x_i - x_k|^a - 1/C(n, 2) sum_{j<k} |y_j - y_k|^a

is zero only when X and Y come from one distribution (Szekely and Rizzo's energy distance),
and the scaled statistic Q(tau, kappa) = m n / (m + n) E(X, Y) is largest at the most likely
change. The method is hierarchical: the best (tau, kappa) over every segment of the current
segmentation is proposed; its significance is the share of R random permutations (each
segment shuffled within itself, so the changes already found stay) whose own best Q is at
least as large, p = (1 + #{Q_r >= Q}) / (1 + R); a proposal with p < alpha becomes a change
point and splits its segment, the first with p >= alpha ends the search.

Sources: D. S. Matteson and N. A. James, "A Nonparametric Approach for Multiple Change Point
Analysis of Multivariate Data", JASA 109(505), 2014 (the statistic and the permutation test);
D. Daly, W. Brown, H. Ingo, J. O'Leary and D. Bradford, "The Use of Change Point Detection to
Identify Software Performance Regressions in a Continuous Integration System", ICPE 2020
(MongoDB's use on CI performance series); Apache Otava (formerly DataStax's Hunter), which runs
the same analysis on benchmark histories. This module is written from the paper's formulas.

The result depends only on the series and `seed`: the permutations come from
numpy.random.default_rng(seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np


@dataclass(frozen=True)
class ChangePoint:
    """A change point: `index` is the first point of the new segment, `p_value` the
    permutation test's when it was accepted, `statistic` its Q."""

    index: int
    p_value: float
    statistic: float


def best_split(z: np.ndarray, min_size: int, exponent: float = 1.0) -> tuple[float, int] | None:
    """(Q, tau) of the best split of `z` (tau: the first index of the second part, both
    parts at least `min_size` long, kappa chosen freely), or None when `z` is too short."""
    m = len(z)
    if m < 2 * min_size:
        return None
    d = np.abs(z[:, None] - z[None, :]) ** exponent
    p = np.zeros((m + 1, m + 1))
    p[1:, 1:] = d.cumsum(0).cumsum(1)  # p[i, j] = sum of d[:i, :j]

    def block(a: np.ndarray, b: np.ndarray, c: np.ndarray, e: np.ndarray) -> np.ndarray:
        return p[b, e] - p[a, e] - p[b, c] + p[a, c]

    tau = np.arange(min_size, m - min_size + 1)[:, None]
    kappa = np.arange(2 * min_size, m + 1)[None, :]
    valid = kappa - tau >= min_size
    tau, kappa = np.broadcast_arrays(tau, kappa)
    tau, kappa = tau[valid], kappa[valid]
    zero = np.zeros_like(tau)
    nx, ny = tau.astype(float), (kappa - tau).astype(float)
    between = block(zero, tau, tau, kappa)
    within_x = block(zero, tau, zero, tau) / 2  # each pair once
    within_y = block(tau, kappa, tau, kappa) / 2
    e = (2 * between / (nx * ny) - within_x / (nx * (nx - 1) / 2)
         - within_y / (ny * (ny - 1) / 2))
    q = nx * ny / (nx + ny) * e
    best = int(np.argmax(q))
    return float(q[best]), int(tau[best])


def _best_over(z: np.ndarray, bounds: list[int], min_size: int, exponent: float
               ) -> tuple[float, int] | None:
    """The best split over every segment [bounds[i], bounds[i+1]): (Q, index in z)."""
    best: tuple[float, int] | None = None
    for start, end in pairwise(bounds):
        found = best_split(z[start:end], min_size, exponent)
        if found is not None and (best is None or found[0] > best[0]):
            best = (found[0], start + found[1])
    return best


def e_divisive(series: Sequence[float], *, alpha: float = 0.01, permutations: int = 999,
               min_size: int = 3, seed: int = 0, exponent: float = 1.0) -> list[ChangePoint]:
    """The change points of `series` in index order (see the module's docstring).

    `min_size` (at least 2) is the fewest points a segment may hold; `alpha` the level a
    proposal's p-value must be under; `permutations` R. The permutations stop early once the
    p-value cannot fall under alpha any more, so a series without change costs little.
    """
    if min_size < 2:
        raise ValueError("min_size must be at least 2 (a segment's spread needs two points)")
    if not 0 < exponent < 2:
        raise ValueError("exponent must lie in (0, 2)")
    z = np.asarray(series, dtype=float)
    if not np.all(np.isfinite(z)):
        raise ValueError("the series holds a NaN or an infinity")
    rng = np.random.default_rng(seed)
    found: list[ChangePoint] = []

    def p_value(hits: int) -> float:
        return (1 + hits) / (1 + permutations)

    while True:
        bounds = [0, *sorted(c.index for c in found), len(z)]
        proposal = _best_over(z, bounds, min_size, exponent)
        if proposal is None or proposal[0] <= 0:
            break
        stat, index = proposal
        hits = 0
        shuffled = z.copy()
        for _ in range(permutations):
            for start, end in pairwise(bounds):
                shuffled[start:end] = rng.permutation(z[start:end])
            best = _best_over(shuffled, bounds, min_size, exponent)
            if best is not None and best[0] >= stat * (1 - 1e-12):
                hits += 1
                if p_value(hits) >= alpha:  # it can only grow: the proposal fails
                    break
        if p_value(hits) >= alpha:
            break
        found.append(ChangePoint(index=index, p_value=p_value(hits), statistic=stat))
    return sorted(found, key=lambda c: c.index)


def segment_means(series: Sequence[float], indices: Sequence[int]) -> list[float]:
    """The mean of each segment between the change points at `indices`."""
    z = np.asarray(series, dtype=float)
    bounds = [0, *sorted(indices), len(z)]
    return [float(z[a:b].mean()) for a, b in pairwise(bounds)]
