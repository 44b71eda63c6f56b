"""Is B really slower than A? The one statistics function of `spheres ab` and `make bench`.

Both compare two sets of raw samples (one figure per fresh process or per benchmark round):
the ratio B/A is the Hodges-Lehmann estimate on the log scale (the median of every pairwise
log ratio, robust to the outliers a shared machine produces), its interval the distribution-free
Moses interval (order statistics of the pairwise ratios cut at the exact Mann-Whitney U
quantile), and the p-value the two-sided Mann-Whitney U test of scipy, as asv does. A change
counts only when the test is significant AND the whole interval lies beyond the noise band:
`spheres ab` measures the band as an A/A comparison in the same session (`noise_band`),
`make bench`'s history gate takes max(NOISE_FLOOR, NOISE_FACTOR x the rounds' spread) (no
A/A run there).

With very few samples (2 benchmark rounds against 2) no outcome of the U test reaches alpha;
the estimate then says so (`decisive` False), its interval is the full range of pairwise ratios
(whatever coverage that attains, reported), and only that interval decides: every pair must lie
beyond the band. `spheres ab` refuses such round counts up front (AB_MIN_ROUNDS).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from scipy.stats import mannwhitneyu

Verdict = Literal["regressed", "faster", "same"]


@dataclass(frozen=True)
class RatioEstimate:
    """B against A: the ratio, its interval, the test's p-value, and what the sizes allow."""

    ratio: float  # Hodges-Lehmann estimate of B / A
    low: float  # interval of the ratio
    high: float
    confidence: float  # coverage the interval attains (1 - alpha when decisive)
    p_value: float  # two-sided Mann-Whitney U test of "same distribution"
    n_a: int
    n_b: int
    decisive: bool  # the test can reach alpha at these sample sizes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=64)
def _u_cdf(n: int, m: int) -> tuple[float, ...]:
    """P(U <= u) for u = 0..n*m under the null (no ties): the coefficients of the Gaussian
    binomial [n+m choose n]_q, exact in integers."""
    counts = [1] + [0] * (n * m)
    for i in range(1, n + 1):  # multiply by (1 - q^(m+i)) / (1 - q^i), degree kept at n*m
        for j in range(n * m, m + i - 1, -1):
            counts[j] -= counts[j - m - i]
        for j in range(i, n * m + 1):
            counts[j] += counts[j - i]
    total = math.comb(n + m, n)
    running, cdf = 0, []
    for c in counts:
        running += c
        cdf.append(running / total)
    return tuple(cdf)


# Samples larger than this are thinned to as many evenly spaced quantiles: the pairwise ratios
# grow as n x m (a pytest-benchmark file read by `spheres compare` may hold 10^5 rounds of a
# microbenchmark), and fewer samples only make the test more cautious, never less.
MAX_SAMPLES = 200


def _positive(samples: Any, name: str) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"sample {name} needs at least 2 finite positive figures, got {x!r}")
    if x.size > MAX_SAMPLES:
        x = np.quantile(x, (np.arange(MAX_SAMPLES) + 0.5) / MAX_SAMPLES)
    return x


def ratio_estimate(a: Any, b: Any, *, alpha: float) -> RatioEstimate:
    """The ratio B/A of two sets of positive samples, its (1 - alpha) interval and p-value."""
    xa, xb = _positive(a, "A"), _positive(b, "B")
    n, m = xa.size, xb.size
    diffs = np.sort((np.log(xb)[None, :] - np.log(xa)[:, None]).ravel())
    cdf = _u_cdf(n, m)
    # k pairs cut off each side: the largest k with P(U <= k - 1) <= alpha / 2
    k = 0
    while k < len(cdf) and cdf[k] <= alpha / 2:
        k += 1
    decisive = k >= 1
    k = max(k, 1)  # too few samples: the full range, at the coverage it attains
    coverage = 1.0 - 2.0 * cdf[k - 1]
    p = float(mannwhitneyu(xb, xa, alternative="two-sided").pvalue)
    return RatioEstimate(ratio=float(np.exp(np.median(diffs))), low=float(np.exp(diffs[k - 1])),
                         high=float(np.exp(diffs[diffs.size - k])), confidence=coverage,
                         p_value=p, n_a=n, n_b=m, decisive=decisive)


def judge(est: RatioEstimate, band: float, *, alpha: float,
          higher_is_better: bool) -> Verdict:
    """"regressed" / "faster" only when significant (or, with too few samples to test, on
    the interval alone) and the whole interval lies beyond 1 +- band; else "same"."""
    significant = est.p_value < alpha or not est.decisive
    if not significant:
        return "same"
    below, above = est.high < 1.0 - band, est.low > 1.0 + band
    if below:
        return "regressed" if higher_is_better else "faster"
    if above:
        return "faster" if higher_is_better else "regressed"
    return "same"


def noise_band(aa: RatioEstimate, floor: float) -> float:
    """The A/A noise band: how far the A/A ratio lies from 1, never below `floor`.

    Two identical trees measured in one session still differ by what the session does to
    them (drift, the slot in the round, caches): that offset is the band. Its sampling
    scatter is not added again: the B/A interval already carries it, and requiring the B/A
    interval to clear the A/A interval as well halves the power (seeded simulation, 10
    rounds, 3% noise, 15% of processes slowed: a 10% slowdown found 42% of the time instead
    of 79%) without one false alarm fewer (none in 200 A/A runs either way)."""
    return max(floor, abs(aa.ratio - 1.0))
