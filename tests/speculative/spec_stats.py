"""Chi-square helpers for the distribution tests (no scipy on this machine)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable

Z_0001 = 3.0902
"""Upper 0.1 % point of the standard normal."""


def chi2_critical(df: int, z: float = Z_0001) -> float:
    """The chi-square critical value at the level of ``z`` (Wilson-Hilferty; within a
    few percent of the exact value for df >= 3)."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def chi_square(samples: list[Hashable], expected: dict[Hashable, float],
               min_expected: float = 5.0) -> tuple[float, int]:
    """(statistic, degrees of freedom) of ``samples`` against the probabilities
    ``expected`` (summing to 1); cells expected below ``min_expected`` counts are pooled.
    A sample outside ``expected``'s support fails the test outright."""
    counts = Counter(samples)
    stray = set(counts) - set(expected)
    assert not stray, f"sampled outcomes with probability 0: {sorted(stray)[:5]}"
    n = len(samples)
    stat, cells = 0.0, 0
    pooled_count, pooled_expected = 0, 0.0
    for outcome, p in expected.items():
        if n * p < min_expected:
            pooled_count += counts.get(outcome, 0)
            pooled_expected += n * p
            continue
        stat += (counts.get(outcome, 0) - n * p) ** 2 / (n * p)
        cells += 1
    if pooled_expected >= min_expected:
        stat += (pooled_count - pooled_expected) ** 2 / pooled_expected
        cells += 1
    return stat, cells - 1
