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
