"""Tests of cepaper.stats: correlations against numpy and pandas, bootstrap and permutation tests."""

import functools
import itertools

import numpy as np
import pandas as pd
import pytest

from cepaper import stats


def test_pearson_and_spearman_match_numpy_and_pandas():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    y[3] = y[7]                                           # a tie
    x[1] = x[2] = x[5]
    assert stats.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    expect = pd.DataFrame({"x": x, "y": y}).corr("spearman").loc["x", "y"]  # pandas ranks, no scipy
    assert stats.spearman(x, y) == pytest.approx(expect, rel=1e-12)
    assert stats.ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    batch = rng.normal(size=(5, 12))                      # along the last axis
    np.testing.assert_allclose(stats.pearson(batch, y), [np.corrcoef(b, y)[0, 1] for b in batch], rtol=1e-12)
    assert np.isnan(stats.pearson([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval():
    fixed = [np.full(4, v) for v in (1.0, 2.0, 4.0)]      # no spread: every resample gives the same means
    b = stats.bootstrap_correlation(fixed, [1, 2, 3], "pearson", n_boot=50)
    assert b["lo"] == pytest.approx(b["value"]) and b["hi"] == pytest.approx(b["value"])
    rng = np.random.default_rng(1)
    noisy = [rng.normal(v, 1.0, size=5) for v in (1, 2, 3, 4)]
    b = stats.bootstrap_correlation(noisy, [1, 2, 3, 4], "spearman", n_boot=500, seed=2)
    assert -1 <= b["lo"] <= b["hi"] <= 1 and b["n_boot"] == 500
    assert b == stats.bootstrap_correlation(noisy, [1, 2, 3, 4], "spearman", n_boot=500, seed=2)


# ------------------------------------------------------------------------------------------ calibration

def np_pearson(x, v):
    """Pearson correlation of each row of ``x (..., k)`` with ``v (k,)``, written out in numpy."""
    xc, vc = x - x.mean(-1, keepdims=True), v - v.mean()
    return (xc * vc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (vc * vc).sum())


@functools.cache
def correlation_law(k, r, sigma):
    """``v``, the model means ``mu`` and the correlation of 20000 simulated data sets (its sampling law)."""
    v = np.linspace(0.0, 1.0, k)
    d = np.random.default_rng(7).standard_normal(k)
    vc = v - v.mean()
    d = d - d.mean() - (d @ vc) / (vc @ vc) * vc
    mu = v + 0.3 * d / d.std()
    truth = np.concatenate([np_pearson((mu[:, None] + sigma * np.random.default_rng([9, i]).standard_normal(
        (5000, k, r))).mean(-1), v) for i in range(4)])
    return v, mu, truth


def correlation_calibration(reps=300, k=6, r=20, sigma=0.5, n_boot=1000, level=0.95):
    """Mean bootstrap interval width over the width of the central ``level`` range of the correlation's
    sampling distribution (20000 data sets), from ``reps`` data sets of ``k`` models x ``r`` repetitions.

    Model ``i`` has mean error ``mu_i = v_i + d_i`` (``d`` fixed, orthogonal to ``v``: population
    correlation 0.75, away from the boundary at 1 where the statistic is not asymptotically normal)
    and noise ``sigma``, so the correlation of the ``k`` means with ``v`` has a smooth sampling law."""
    v, mu, truth = correlation_law(k, r, sigma)
    q_lo, q_hi = np.quantile(truth, [(1 - level) / 2, (1 + level) / 2])
    data = mu[:, None] + sigma * np.random.default_rng(1).standard_normal((reps, k, r))
    boots = [stats.bootstrap_correlation(list(x), v, "pearson", n_boot, level, seed=i) for i, x in enumerate(data)]
    np.testing.assert_allclose([b["value"] for b in boots], np_pearson(data.mean(-1), v), rtol=1e-12)
    width = np.mean([b["hi"] - b["lo"] for b in boots])
    return width / (q_hi - q_lo)


def test_bootstrap_interval_is_calibrated():
    """The interval's width matches the correlation's sampling distribution (measured 0.99; the noise
    of the ratio over 300 replicates is about 1%), so a 90% interval labelled 95% (0.84) fails."""
    assert 0.92 < correlation_calibration() < 1.08


def test_calibration_detects_a_90_percent_interval(plant):
    plant(stats, "bootstrap_correlation", "[(1 - level) / 2, (1 + level) / 2]", "[1 - level, level]")
    assert correlation_calibration(reps=100) < 0.9


def test_permutation_pvalue_by_enumeration():
    x, y = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    r = abs(stats.spearman(x, y))
    hits = sum(abs(stats.spearman(x, y[list(p)])) >= r - 1e-12 for p in itertools.permutations(range(5)))
    assert stats.permutation_pvalue(x, y) == (pytest.approx(hits / 120), True)
    p, exact = stats.permutation_pvalue(np.arange(10.0), np.arange(10.0), max_exact=8, n_perm=999)
    assert not exact and p == pytest.approx(1 / 1000, abs=2e-3)


@pytest.mark.parametrize("call, message", [
    (lambda: stats.pearson([1, 2], [1, 2, 3]), "same length >= 2"),
    (lambda: stats.bootstrap_correlation([[1], [2]], [1, 2], "kendall"), "method must be one of pearson, spearman"),
    (lambda: stats.bootstrap_correlation([[1], [2]], [1, 2], n_boot=0), "n_boot must be an integer >= 1"),
    (lambda: stats.bootstrap_correlation([[1], [2]], [1, 2], level=1.0), r"level must be in \(0, 1\)"),
    (lambda: stats.bootstrap_correlation([[1], []], [1, 2]), "every sample needs at least one value"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
