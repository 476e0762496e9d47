"""Tests of cepaper.stats: correlations against numpy and pandas, bootstrap and permutation tests."""

import functools
import itertools
import math
import warnings
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from cepaper import stats


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_against_closed_forms(p):
    """Student's t quantile: Cauchy (1 dof), the closed form for 2 dof, the normal limit at 10^5 dof."""
    assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), abs=2e-6)
    assert stats.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), abs=2e-6)
    assert stats.t_quantile(p, 100000) == pytest.approx(NormalDist().inv_cdf(p), abs=1e-4)
    assert stats.t_quantile(p, 5) > stats.t_quantile(p, 6)  # heavier tails, fewer dof


def test_t_quantile_bad_input():
    for p in (0.5, 1.0):
        with pytest.raises(ValueError, match=r"^p must be in \(0.5, 1\)"):
            stats.t_quantile(p, 3)
    with pytest.raises(ValueError, match="^dof must be an integer >= 1, got 0"):
        stats.t_quantile(0.9, 0)


def test_pearson_and_spearman_match_numpy_and_pandas():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    y[3] = y[7]  # a tie
    x[1] = x[2] = x[5]
    assert stats.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    expect = pd.DataFrame({"x": x, "y": y}).corr("spearman").loc["x", "y"]  # pandas ranks, no scipy
    assert stats.spearman(x, y) == pytest.approx(expect, rel=1e-12)
    assert stats.ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    batch = rng.normal(size=(5, 12))  # along the last axis
    np.testing.assert_allclose(stats.pearson(batch, y), [np.corrcoef(b, y)[0, 1] for b in batch], rtol=1e-12)
    other = rng.normal(size=(5, 12))  # both sides batched
    np.testing.assert_allclose(
        stats.pearson(batch, other), [np.corrcoef(b, o)[0, 1] for b, o in zip(batch, other)], rtol=1e-12
    )
    assert stats.pearson([1, 2], [1, 3]) == pytest.approx(1.0)  # two points are enough
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant side gives NaN quietly
        assert np.isnan(stats.pearson([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval():
    fixed = [np.full(4, v) for v in (1.0, 2.0, 4.0)]  # no spread: every resample gives the same means
    b = stats.bootstrap_correlation(fixed, [1, 2, 3], "pearson", n_boot=50)
    assert b["lo"] == pytest.approx(b["value"]) and b["hi"] == pytest.approx(b["value"])
    rng = np.random.default_rng(1)
    noisy = [rng.normal(v, 1.0, size=5) for v in (1, 2, 3, 4)]
    b = stats.bootstrap_correlation(noisy, [1, 2, 3, 4], "spearman", n_boot=500, seed=2)
    assert -1 <= b["lo"] <= b["hi"] <= 1 and b["n_boot"] == 500
    assert b == stats.bootstrap_correlation(noisy, [1, 2, 3, 4], "spearman", n_boot=500, seed=2)
    assert b["level"] == 0.95 and set(b) == {"value", "lo", "hi", "level", "n_boot"}
    again = lambda seed: stats.bootstrap_correlation(noisy, [1, 2, 3, 4], "pearson", n_boot=200, seed=seed)
    assert again(3) == again(3) != again(4)  # the seed fixes the resamples
    one = stats.bootstrap_correlation([[1.0], [2.0], [4.0]], [1, 2, 3], n_boot=20)  # one repetition per model
    assert one["lo"] == one["hi"] == pytest.approx(np.corrcoef([1, 2, 4], [1, 2, 3])[0, 1])
    mixed = stats.bootstrap_correlation([[1.0], [2.0, 2.0], [4.0, 4.0, 4.0]], [1, 2, 3], n_boot=20)  # one value stays
    assert mixed["lo"] == pytest.approx(mixed["value"]) and mixed["hi"] == pytest.approx(mixed["value"])


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
    mu = v + d / d.std()
    truth = np.concatenate(
        [
            np_pearson((mu[:, None] + sigma * np.random.default_rng([9, i]).standard_normal((5000, k, r))).mean(-1), v)
            for i in range(4)
        ]
    )
    return v, mu, truth


def correlation_calibration(reps=300, k=6, r=40, sigma=0.5, n_boot=1000, level=0.95):
    """The bootstrap interval against the correlation's sampling distribution (20000 data sets), over
    ``reps`` data sets of ``k`` models x ``r`` repetitions: mean width over the width of the central
    ``level`` range, and each half (value - lo, hi - value) over the truth's (median - q_lo, q_hi - median).

    Model ``i`` has mean error ``mu_i = v_i + d_i`` (``d`` fixed, orthogonal to ``v``: population
    correlation 0.32, away from the boundary at 1 where the statistic is not asymptotically normal)
    and noise ``sigma``, so the correlation of the ``k`` means with ``v`` has a smooth sampling law."""
    v, mu, truth = correlation_law(k, r, sigma)
    q_lo, q_mid, q_hi = np.quantile(truth, [(1 - level) / 2, 0.5, (1 + level) / 2])
    data = mu[:, None] + sigma * np.random.default_rng(1).standard_normal((reps, k, r))
    boots = [stats.bootstrap_correlation(list(x), v, "pearson", n_boot, level, seed=i) for i, x in enumerate(data)]
    np.testing.assert_allclose([b["value"] for b in boots], np_pearson(data.mean(-1), v), rtol=1e-12)
    assert all(b["level"] == level and b["n_boot"] == n_boot for b in boots)
    mean = lambda f: np.mean([f(b) for b in boots])
    return (
        mean(lambda b: b["hi"] - b["lo"]) / (q_hi - q_lo),
        mean(lambda b: b["value"] - b["lo"]) / (q_mid - q_lo),
        mean(lambda b: b["hi"] - b["value"]) / (q_hi - q_mid),
    )


def test_bootstrap_interval_is_calibrated():
    """Width and each half of the interval match the correlation's sampling distribution (measured 0.97,
    0.98 and 0.96: resampling r values shrinks the spread by about sqrt((r - 1) / r); the noise of each
    ratio over 300 replicates is about 1%), so a 90% interval labelled 95% (width 0.81) fails, and so
    does a one-sided interval, whose lower end is the 5% quantile instead of 2.5% (lower half 0.82)."""
    width, lower, upper = correlation_calibration()
    assert 0.92 < width < 1.08, width
    assert 0.9 < lower < 1.04 and 0.9 < upper < 1.04, (lower, upper)


@pytest.mark.parametrize(
    "old, new, index, bound",
    [
        ("confidence_level=level", "confidence_level=2 * level - 1", 0, 0.9),
        ('alternative="two-sided"', 'alternative="greater"', 1, 0.9),
    ],
)
def test_calibration_detects_a_wrong_quantile(plant, old, new, index, bound):
    plant(stats, "bootstrap_correlation", old, new)
    ratio = correlation_calibration()[index]
    assert ratio < bound if bound < 1 else ratio > bound


def test_permutation_pvalue_by_enumeration():
    x, y = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    r = abs(stats.spearman(x, y))
    hits = sum(abs(stats.spearman(x, y[list(p)])) >= r - 1e-12 for p in itertools.permutations(range(5)))
    assert stats.permutation_pvalue(x, y) == (pytest.approx(hits / 120), True)
    p, exact = stats.permutation_pvalue(np.arange(10.0), np.arange(10.0), max_exact=8, n_perm=999)
    assert not exact and p == 1 / 1000  # (1 + no ordering reaches |r| = 1) / (1 + 999)
    assert stats.permutation_pvalue(np.arange(8.0), np.arange(8.0))[1]  # 8 = max_exact: exact
    assert not stats.permutation_pvalue(np.arange(9.0), np.arange(9.0))[1]  # 9: random orderings
    assert stats.permutation_pvalue(x, y, max_exact=3, n_perm=200) == (pytest.approx(hits / 120), True)  # 200 >= 5!


def test_random_orderings_estimate_the_exact_pvalue():
    """k = 9: 20000 random orderings against all 9! of them (4 standard errors of the estimate)."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=9), rng.normal(size=9)  # exact p = 0.128
    want, exact = stats.permutation_pvalue(x, y, "pearson", max_exact=9)
    got, random = stats.permutation_pvalue(x, y, "pearson", max_exact=8, n_perm=20000, seed=4)
    assert exact and not random and 0.05 < want < 0.95
    assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / 20000), (got, want)
    again = lambda seed: stats.permutation_pvalue(x, y, "pearson", max_exact=8, n_perm=2000, seed=seed)
    assert again(4) == again(4) != again(5)  # the seed fixes the orderings


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: stats.pearson([1, 2], [1, 2, 3]), "same length >= 2"),
        (lambda: stats.bootstrap_correlation([[1], [2]], [1, 2], "kendall"), "method must be one of pearson, spearman"),
        (lambda: stats.bootstrap_correlation([[1], [2]], [1, 2], n_boot=0), "n_boot must be an integer >= 1"),
        (lambda: stats.bootstrap_correlation([[1], [2]], [1, 2], level=1.0), r"level must be in \(0, 1\)"),
        (lambda: stats.bootstrap_correlation([[1], [2]], [1, 2], level=0.0), r"level must be in \(0, 1\)"),
        (lambda: stats.permutation_pvalue(np.arange(9.0), np.arange(9.0), n_perm=0), "^n_perm must be an integer >= 1"),
        (lambda: stats.bootstrap_correlation([[1], []], [1, 2]), "every sample needs at least one value"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
