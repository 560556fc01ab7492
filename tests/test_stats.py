"""The intervals and tests behind every accuracy row."""
import math

import numpy as np
import pytest

from tsptq.evaluation import stats


def _index_bootstrap(a, b, samples=4000, seed=1):
    """The textbook paired bootstrap: resample image indices."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (samples, len(a)))
    diffs = 100 * (a[idx].mean(1) - b[idx].mean(1))
    return np.quantile(diffs, [0.025, 0.975])


def test_paired_interval_matches_resampling_images():
    rng = np.random.default_rng(0)
    a = rng.random(800) < 0.80
    b = a.copy()
    flip = rng.choice(800, 40, replace=False)
    b[flip] = ~b[flip]
    r = stats.paired_difference(a, b)
    ref = _index_bootstrap(a, b)
    assert r["difference"] == pytest.approx(100 * (a.mean() - b.mean()))
    assert r["interval"][0] == pytest.approx(ref[0], abs=0.3) and r["interval"][1] == pytest.approx(ref[1], abs=0.3)
    assert r["only_a"] + r["only_b"] == 40


def test_pairing_narrows_the_interval():
    # Two methods that disagree on 2 of 1000 images: the paired interval is tight although top-1 itself
    # has a standard error of about 1.4 points.
    a = np.zeros(1000, bool)
    a[:700] = True
    b = a.copy()
    b[0] = False
    b[999] = True
    lo, hi = stats.paired_difference(a, b)["interval"]
    assert -0.31 <= lo <= 0 <= hi <= 0.31


def test_identical_methods_have_a_zero_interval_and_p_one():
    a = np.arange(50) % 3 == 0
    r = stats.paired_difference(a, a)
    assert r["difference"] == 0 and r["interval"] == (0.0, 0.0) and r["mcnemar_p"] == 1.0


def test_mcnemar_exact_values():
    assert stats.mcnemar_p(10, 0) == pytest.approx(2 * 0.5 ** 10)
    assert stats.mcnemar_p(3, 5) == pytest.approx(2 * sum(math.comb(8, i) for i in range(4)) / 2 ** 8)
    assert stats.mcnemar_p(5, 5) == 1.0
    assert 0 < stats.mcnemar_p(20000, 19000) < 1e-3  # large counts stay finite


def test_proportion_interval_and_seeding():
    hits = np.r_[np.ones(950, bool), np.zeros(50, bool)]
    lo, hi = stats.proportion_interval(hits)
    assert lo < 95.0 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.95 * 0.05 / 1000) * 100, rel=0.15)
    assert stats.proportion_interval(hits) == (lo, hi)  # seeded: the same in every process


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError):
        stats.paired_difference(np.ones(3, bool), np.ones(4, bool))
