"""Tests of cepaper.stats: correlations against numpy and pandas, bootstrap and permutation tests."""

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
