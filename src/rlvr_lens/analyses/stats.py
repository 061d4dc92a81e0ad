"""Uncertainty of paired per-sample comparisons (tuned vs base on the same samples).

* :func:`paired_bootstrap`: percentile bootstrap interval of the mean of per-sample
  differences (resampling samples with replacement, a fixed seed, so reruns agree).
  A change is *significant* at the 95% level when the interval excludes 0.
* :func:`sign_test`: exact two-sided binomial sign test of the non-zero differences.

Both are distribution-free; the bootstrap interval is what the verdict and the perplexity
section report, the sign test's p-value is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    """Mean of ``n`` paired differences and its bootstrap interval ``[low, high]`` at ``level``."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}], n = {self.n}"


def paired_bootstrap(
    differences: Sequence[float | None], *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval | None:
    """Bootstrap interval of the mean of ``differences`` (``None`` entries dropped); ``None`` if empty."""
    values = np.asarray([d for d in differences if d is not None and math.isfinite(d)], dtype=np.float64)
    if values.size == 0:
        return None
    rng = np.random.default_rng(seed)
    index = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[index].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(values.mean()), float(low), float(high), int(values.size), level)


def sign_test(differences: Sequence[float | None]) -> float | None:
    """Exact two-sided sign-test p-value of ``differences`` (zeros and ``None`` dropped); ``None`` if none is left."""
    values = [d for d in differences if d is not None and math.isfinite(d) and d != 0]
    if not values:
        return None
    n, k = len(values), sum(1 for d in values if d > 0)
    tail = min(k, n - k)
    p = 2 * sum(math.comb(n, i) for i in range(tail + 1)) / 2**n
    return min(1.0, p)
