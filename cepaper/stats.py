"""Small statistics shared by the sections: Student's t quantiles for confidence intervals."""

import math

import numpy as np

from cepaper._checks import positive_int


def t_quantile(p, dof):
    """Quantile ``p`` in (0.5, 1) of Student's t distribution with ``dof`` >= 1 degrees of freedom
    (bisection on the CDF, itself a Simpson integral of the density; abs. error < 1e-6)."""
    dof = positive_int("dof", dof)
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p!r}")
    logc = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def cdf(t):  # substitute u = atan(s) on [0, t] to tame the heavy tail
        u = np.linspace(0.0, math.atan(t), 2001)
        s = np.tan(u)
        f = np.exp(logc - (dof + 1) / 2 * np.log1p(s * s / dof)) * (1 + s * s)
        h = u[1] - u[0]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


# ------------------------------------------------------------------------------------------ correlation

def _pair(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape[-1] != y.shape[-1] or x.shape[-1] < 2:
        raise ValueError(f"x and y must have the same length >= 2 along the last axis, got {x.shape} and {y.shape}")
    return x, y


def pearson(x, y):
    """Pearson correlation along the last axis: ``(..., k)`` with ``(k,)`` or ``(..., k)`` -> ``(...)``
    (NaN where one side is constant)."""
    x, y = _pair(x, y)
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))


def ranks(x):
    """Ranks ``1..k`` along the last axis, ties sharing their average rank: ``(..., k)`` -> ``(..., k)``."""
    x = np.asarray(x, dtype=float)
    below = (x[..., None, :] < x[..., :, None]).sum(-1)
    ties = (x[..., None, :] == x[..., :, None]).sum(-1)
    return below + (ties + 1) / 2.0


def spearman(x, y):
    """Spearman rank correlation along the last axis: :func:`pearson` of the :func:`ranks`."""
    x, y = _pair(x, y)
    return pearson(ranks(x), ranks(y))


CORRELATIONS = {"pearson": pearson, "spearman": spearman}


def _correlation(method):
    if method not in CORRELATIONS:
        raise ValueError(f"method must be one of {', '.join(CORRELATIONS)}, got {method!r}")
    return CORRELATIONS[method]


def bootstrap_correlation(samples, v, method="pearson", n_boot=2000, level=0.95, seed=0):
    """Correlation of the means of ``k`` samples with ``v`` (k,), with a percentile-bootstrap interval.

    ``samples``: ``k`` 1-d arrays (e.g. the test errors of a model's repetitions). Each bootstrap
    draw resamples every sample with replacement, independently, and correlates the ``k`` means with
    ``v``. Returns ``{"value", "lo", "hi", "level", "n_boot"}``.
    """
    corr = _correlation(method)
    n_boot = positive_int("n_boot", n_boot)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    samples = [np.asarray(s, dtype=float).ravel() for s in samples]
    if any(len(s) < 1 for s in samples):
        raise ValueError("every sample needs at least one value")
    rng = np.random.default_rng(seed)
    boots = np.stack([s[rng.integers(len(s), size=(n_boot, len(s)))].mean(1) for s in samples], axis=1)
    r = corr(boots, v)
    lo, hi = np.nanquantile(r, [(1 - level) / 2, (1 + level) / 2])
    return {"value": float(corr(np.array([s.mean() for s in samples]), v)), "lo": float(lo), "hi": float(hi),
            "level": level, "n_boot": n_boot}


def permutation_pvalue(x, y, method="spearman", max_exact=8, n_perm=20000, seed=0):
    """Two-sided permutation p-value of the correlation of ``x`` and ``y`` (k,) under "no association":
    the share of orderings of ``y`` whose ``|correlation|`` reaches the observed one. Exact (all
    ``k!`` orderings) when ``k <= max_exact``, else ``n_perm`` random ones (``(1 + hits) / (1 + n_perm)``).
    Returns ``(p, exact)``."""
    corr = _correlation(method)
    x, y = _pair(x, y)
    observed = abs(corr(x, y)) - 1e-12
    if len(y) <= max_exact:
        import itertools
        perms = np.array(list(itertools.permutations(range(len(y)))))
        return float((np.abs(corr(x, y[perms])) >= observed).mean()), True
    n_perm = positive_int("n_perm", n_perm)
    perms = np.random.default_rng(seed).permuted(np.tile(np.arange(len(y)), (n_perm, 1)), axis=1)
    return float((1 + (np.abs(corr(x, y[perms])) >= observed).sum()) / (1 + n_perm)), False
