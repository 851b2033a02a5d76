"""The report's statistics: bootstrap intervals, McNemar's test, paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from launcher.scoring.stats import MIN_PAIRED_ITEMS, bootstrap_ci, mcnemar, paired_bootstrap, verdict


def test_accuracy_interval_holds_the_estimate_and_narrows_with_more_items():
    rng = np.random.default_rng(1)
    small = (rng.random(40) < 0.7).astype(float)
    large = (rng.random(4000) < 0.7).astype(float)
    lo_s, hi_s = bootstrap_ci(small, n_boot=2000, seed=0)
    lo_l, hi_l = bootstrap_ci(large, n_boot=2000, seed=0)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    # Close to the normal approximation for a proportion on many items.
    half = 1.96 * math.sqrt(0.7 * 0.3 / 4000)
    assert (hi_l - lo_l) / 2 == pytest.approx(half, rel=0.15)


def test_interval_is_reproducible_and_absent_without_data():
    x = [1, 0, 1, 1, 0, 1]
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci([], seed=0) == (None, None)
    assert bootstrap_ci(x, n_boot=0) == (None, None)


def test_mcnemar_exact_on_a_known_table():
    # Discordant 2 vs 9: two-sided exact binomial p = 2 * P(X <= 2 | n=11, 1/2) = 134/2048.
    t = mcnemar(2, 9)
    assert t.method == "exact"
    assert t.p == pytest.approx(2 * (1 + 11 + 55) / 2048)
    assert mcnemar(9, 2).p == t.p
    assert mcnemar(0, 0).p == 1.0
    assert mcnemar(5, 5).p == 1.0


def test_mcnemar_chi2_with_continuity_correction_on_many_discordant_items():
    # Textbook example (Agresti): b=150, c=86 -> chi2 = (|150-86|-1)^2/236 = 16.82, p ~ 4.1e-5.
    t = mcnemar(150, 86)
    assert t.method == "chi2"
    assert t.statistic == pytest.approx(63**2 / 236)
    assert t.p == pytest.approx(4.11e-5, rel=0.02)


def test_paired_bootstrap_finds_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(0)
    base = rng.random(300)
    better = base + 0.1 + rng.normal(0, 0.05, 300)
    d = paired_bootstrap(better, base, n_boot=2000, seed=0)
    assert d.diff == pytest.approx(0.1, abs=0.01)
    assert d.ci_low > 0 and d.p < 0.01
    noise = base + rng.normal(0, 0.05, 300)
    same = paired_bootstrap(noise, base, n_boot=2000, seed=0)
    assert same.ci_low < 0 < same.ci_high
    assert same.p > 0.05
    assert paired_bootstrap(base, base, n_boot=200).p == 1.0


def test_paired_bootstrap_needs_pairs():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_a_paired_test_on_fewer_than_twenty_items_gives_no_verdict():
    assert MIN_PAIRED_ITEMS == 20
    assert verdict(0.001, 19) == "too few items"
    assert verdict(0.001, 20) == "real difference"
    assert verdict(0.2, 200) == "not significant"
    assert verdict(None, 200) == "no test"


def test_resampling_reuses_the_draw_and_matches_a_fresh_generator():
    x = np.arange(30, dtype=float)
    lo, hi = bootstrap_ci(x, n_boot=500, seed=7)
    idx = np.random.default_rng(7).integers(0, 30, size=(500, 30))
    want = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
    assert (lo, hi) == (float(want[0]), float(want[1]))
