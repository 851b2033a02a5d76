"""The statistics of the report, in numpy alone (no scipy needed).

- ``bootstrap_ci``: percentile bootstrap interval of a mean (accuracy is the mean of 0/1).
- ``mcnemar``: McNemar's test for two models answering the same multiple-choice items; exact
  (binomial) when fewer than 25 items are discordant, chi-squared with continuity correction
  otherwise, as statsmodels' ``mcnemar(exact=…)`` recommends.
- ``paired_bootstrap``: the difference of two models' mean per-item scores (ROUGE-L,
  similarity, correctness), resampling items jointly, with a percentile interval and a
  two-sided p-value.

- ``verdict``: what the page says of a paired comparison; fewer than ``MIN_PAIRED_ITEMS``
  shared items get "too few items", whatever the p-value (an exact test on a handful of
  questions can come out "significant" by luck of which questions were asked).

Every resampling takes a ``seed`` so a report is reproducible; the resampled indices for a
given size, count and seed are drawn once and reused, since a report with many models runs
hundreds of paired tests on the same number of items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

EXACT_BELOW = 25
#: Paired tests on fewer shared items than this report "too few items" instead of a verdict.
MIN_PAIRED_ITEMS = 20


@lru_cache(maxsize=4)
def _resample(size: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap row indices (n_boot, size), the same as a fresh ``default_rng(seed)`` draws."""
    idx = np.random.default_rng(seed).integers(0, size, size=(n_boot, size))
    idx.setflags(write=False)
    return idx


def verdict(p: float | None, n: int, alpha: float = 0.05) -> str:
    """"real difference", "not significant", "too few items", or "no test" (no p-value)."""
    if n < MIN_PAIRED_ITEMS:
        return "too few items"
    if p is None:
        return "no test"
    return "real difference" if p < alpha else "not significant"


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean; (None, None) without values or resamples."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or n_boot <= 0:
        return None, None
    means = x[_resample(x.size, n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class McNemar:
    b: int  # items only the first model got right
    c: int  # items only the second model got right
    statistic: float | None
    p: float
    method: str  # "exact" or "chi2"


def _binom_two_sided(k: int, n: int) -> float:
    # Two-sided exact binomial test at p = 1/2: double the smaller tail.
    tail = sum(math.comb(n, i) for i in range(0, k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def mcnemar(b: int, c: int, *, exact: bool | None = None) -> McNemar:
    """McNemar's test from the discordant counts; ``exact=None`` picks by their number."""
    n = b + c
    if n == 0:
        return McNemar(b, c, None, 1.0, "exact")
    if exact is None:
        exact = n < EXACT_BELOW
    if exact:
        return McNemar(b, c, float(min(b, c)), _binom_two_sided(min(b, c), n), "exact")
    stat = (abs(b - c) - 1) ** 2 / n
    # Survival function of chi-squared with one degree of freedom.
    return McNemar(b, c, stat, math.erfc(math.sqrt(stat / 2.0)), "chi2")


@dataclass(frozen=True)
class PairedDiff:
    diff: float  # mean(a) - mean(b)
    ci_low: float | None
    ci_high: float | None
    p: float | None
    n: int


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> PairedDiff:
    """Mean of ``a - b`` over items scored by both, with a bootstrap interval and p-value.

    The p-value is twice the smaller share of resampled differences on either side of zero
    (at least ``1 / n_boot``), the usual percentile-bootstrap test of "no difference".
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError("paired scores must have the same length")
    d = x - y
    if d.size == 0:
        return PairedDiff(float("nan"), None, None, None, 0)
    diff = float(d.mean())
    if n_boot <= 0:
        return PairedDiff(diff, None, None, None, int(d.size))
    means = d[_resample(d.size, n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    if np.all(d == 0):
        p = 1.0
    else:
        share = min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
        p = min(1.0, max(2.0 * share, 1.0 / n_boot))
    return PairedDiff(diff, float(lo), float(hi), p, int(d.size))
