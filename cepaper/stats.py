"""Small statistics shared by the sections, on top of :mod:`scipy.stats`: Student's t quantiles,
correlations along the last axis, a percentile bootstrap of a correlation over k samples and a
permutation p-value."""

import math

import numpy as np
from scipy import stats as sps

from cepaper._checks import choice, positive_int


def t_quantile(p, dof):
    """Quantile ``p`` in (0.5, 1) of Student's t distribution with ``dof`` >= 1 degrees of freedom."""
    dof = positive_int("dof", dof)
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p!r}")
    return float(sps.t.ppf(p, dof))


# ------------------------------------------------------------------------------------------ correlation


def _pair(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape[-1] != y.shape[-1] or x.shape[-1] < 2:
        raise ValueError(f"x and y must have the same length >= 2 along the last axis, got {x.shape} and {y.shape}")
    return x, y


def pearson(x, y):
    """Pearson correlation along the last axis: ``(..., k)`` with ``(k,)`` or ``(..., k)`` -> ``(...)``
    (NaN where one side is constant). ``scipy.stats.pearsonr`` gives the same statistic, but always
    computes its p-value too, 95% of its time, so the resampling loops below use this one."""
    x, y = _pair(x, y)
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))


def ranks(x):
    """Ranks ``1..k`` along the last axis, ties sharing their average rank: ``(..., k)`` -> ``(..., k)``."""
    return sps.rankdata(np.asarray(x, dtype=float), method="average", axis=-1)


def spearman(x, y):
    """Spearman rank correlation along the last axis: :func:`pearson` of the :func:`ranks`."""
    x, y = _pair(x, y)
    return pearson(ranks(x), ranks(y))


CORRELATIONS = {"pearson": pearson, "spearman": spearman}


def _correlation(method):
    return CORRELATIONS[choice("method", method, tuple(CORRELATIONS))]


def bootstrap_correlation(samples, v, method="pearson", n_boot=2000, level=0.95, seed=0):
    """Correlation of the means of ``k`` samples with ``v`` (k,), with a percentile-bootstrap interval.

    ``samples``: ``k`` 1-d arrays (e.g. the test errors of a model's repetitions). Each bootstrap
    draw resamples every sample with replacement, independently, and correlates the ``k`` means with
    ``v`` (``scipy.stats.bootstrap``, ``method="percentile"``). Returns
    ``{"value", "lo", "hi", "level", "n_boot"}``.
    """
    corr = _correlation(method)
    n_boot = positive_int("n_boot", n_boot)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    samples = [np.asarray(s, dtype=float).ravel() for s in samples]
    if any(len(s) < 1 for s in samples):
        raise ValueError("every sample needs at least one value")
    means = np.array([s.mean() for s in samples])
    value = float(corr(means, v))
    spread = [i for i, s in enumerate(samples) if len(s) > 1]  # one value resamples to itself
    if not spread:
        return {"value": value, "lo": value, "hi": value, "level": level, "n_boot": n_boot}

    def statistic(*resampled, axis=-1):  # (..., r_i) each -> (...)
        m = np.broadcast_to(means, resampled[0].shape[:-1] + means.shape).copy()
        m[..., spread] = np.stack([s.mean(axis) for s in resampled], axis=-1)
        return corr(m, v)

    res = sps.bootstrap(
        [samples[i] for i in spread],
        statistic,
        n_resamples=n_boot,
        vectorized=True,
        paired=False,
        confidence_level=level,
        alternative="two-sided",
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    lo, hi = res.confidence_interval
    return {"value": value, "lo": float(lo), "hi": float(hi), "level": level, "n_boot": n_boot}


def permutation_pvalue(x, y, method="spearman", max_exact=8, n_perm=20000, seed=0):
    """Two-sided permutation p-value of the correlation of ``x`` and ``y`` (k,) under "no association":
    the share of orderings of ``y`` whose ``|correlation|`` reaches the observed one. Exact (all
    ``k!`` orderings) when ``k <= max_exact``, else ``n_perm`` random ones (``(1 + hits) / (1 + n_perm)``;
    scipy enumerates all ``k!`` instead when ``n_perm >= k!``). ``scipy.stats.permutation_test``
    with ``permutation_type="pairings"``. Returns ``(p, exact)``."""
    corr = _correlation(method)
    x, y = _pair(x, y)
    if corr is spearman:  # the ranks of an ordering of y are that ordering of its ranks
        corr, x, y = pearson, ranks(x), ranks(y)
    k = len(y)
    n = math.factorial(k) if k <= max_exact else positive_int("n_perm", n_perm)
    res = sps.permutation_test(
        (y,),
        lambda yy, axis=-1: np.abs(corr(x, yy)),
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n,
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue), n >= math.factorial(k)
