"""The significance test of `llmbench compare`: Mann-Whitney U on raw samples."""

from __future__ import annotations

from math import comb


def mann_whitney_p(base: list[float], new: list[float]) -> float:
    """Two-sided p-value that the two samples come from one distribution (scipy)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(base, new, alternative="two-sided").pvalue)


def smallest_p(n1: int, n2: int) -> float:
    """The smallest two-sided p-value the exact test can give for these sample sizes: with
    complete separation, 2 / C(n1 + n2, n1). Below `alpha` only with enough samples (3 vs 3
    gives 0.1), so fewer samples than that can never show significance."""
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2 / comb(n1 + n2, n1))
