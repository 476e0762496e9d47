"""Algorithm 1 (Sec. 4.2, App. D, Fig. 8): fit alpha (and C) of Prop. 1 / Eq. 9 by Monte Carlo.

For a module of width ``n`` whose weight layers have fan-ins ``fan-in_l(n)``, draw the weights ``T``
times, compute one NTK entry ``K`` per draw, and fit (Eq. 2, Eq. 9, Sec. 4.2)::

    r(n) = E[K^2] / E[K]^2 = 1 + Var(K) / E[K]^2  ~  exp(a + alpha s(n)),  s(n) = sum_l 1 / fan-in_l(n)
    log r(n) = a + alpha s(n)                      (a first-degree polynomial in s; a = 0 in Prop. 1)

``intercept=True`` fits ``a`` (the paper's "first degree polynomial"), ``intercept=False`` forces
``a = 0``. ``C`` of Eq. 2 (``Var(K) ~ C (exp(alpha s) - 1)``) is then the geometric-mean fit
``log C = mean_n [log Var_n(K) - log(exp(alpha s(n)) - 1)]``. Intervals are percentile bootstraps
over the draws (resampled independently at every width, everything refitted). They are calibrated when
the tail of ``K^2`` is light enough for ``T`` draws to estimate its mean: each width reports the
Pareto tail index ``k-hat`` of ``K^2`` (:func:`tail_index`), and widths with ``k-hat >`` :data:`KHAT_MAX`
are listed in ``heavy_tail`` with a warning. Measured in ``tests/alpha/test_fit.py``: at the paper's widths
and ``T = 2000``, for exponential-tailed draws like the block's (``k-hat <= 0.5``), the bootstrap sd is
0.9-1.0 of alpha-hat's sampling sd; for log-normal draws with ``Var log K = 1.78`` (``k-hat ~ 0.9``) it
is 0.55 and no resampling of the draws can see the tail the draws never reached.

The draws (Algorithm 1, lines 1-6) are :mod:`cepaper.alpha.sweeps`; this module is line 7, the fit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from cepaper._checks import choice, positive_int
from cepaper.alpha import sweeps

ENTRIES = ("diag", "offdiag")
#: Pareto tail index above which a Monte Carlo mean is unreliable (Vehtari et al. 2024, PSIS, Sec. 3).
KHAT_MAX = 0.7


class HeavyTailWarning(UserWarning):
    """Draws whose ``K^2`` has a heavy tail (``k-hat >`` :data:`KHAT_MAX`): alpha's interval is too narrow.

    ``widths``: the widths n (:func:`fit_sweep`), or their indices (:func:`fit_alpha`, which knows no
    widths); ``khat`` and ``trials`` of each; ``entry``: the NTK entry (``None`` from :func:`fit_alpha`).
    Programs that word it in their own terms (the `cepaper` command: its flags) read these."""

    def __init__(self, message, widths, khat, trials, entry=None):
        super().__init__(message)
        self.widths, self.khat, self.trials, self.entry = list(widths), list(khat), list(trials), entry


# ------------------------------------------------------------------------------- Monte Carlo draws


def entry_values(samples, entry="diag"):
    """One NTK entry of every draw: ``K(x1, x1)`` (``"diag"``) or ``K(x1, x2)`` (``"offdiag"``).

    Args:
        samples: NTK matrices of shape ``(T, N, N)`` (``N >= 2`` for ``"offdiag"``).
    Returns:
        float64 array of shape ``(T,)``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1] != samples.shape[2]:
        raise ValueError(f"samples must have shape (T, N, N), got {samples.shape}")
    if choice("entry", entry, ENTRIES) == "diag":
        return samples[:, 0, 0]
    if samples.shape[1] < 2:
        raise ValueError("entry 'offdiag' needs NTK matrices of at least two inputs, got N = 1")
    return samples[:, 0, 1]


def second_moment_ratio(k):
    """Monte Carlo ``E[K]``, ``E[K^2]`` and ``log(E[K^2] / E[K]^2)`` of draws ``k`` (shape ``(T,)`` or ``(B, T)``).

    Sums in float64 over the last axis; ``log_ratio`` is ``nan`` where ``E[K] = 0``.
    """
    k = np.asarray(k, dtype=np.float64)
    m1, m2 = k.mean(-1), (k * k).mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(m2) - 2.0 * np.log(np.abs(m1))
    return m1, m2, np.where(np.isfinite(lr), lr, np.nan)


def tail_index(x: ArrayLike) -> float:
    """Pareto tail index ``k-hat`` of non-negative draws ``x``: the generalized Pareto shape fitted (by
    :func:`scipy.stats.genpareto.fit`, location 0) to the excesses of the largest ``M = min(T/5, 3 sqrt T)``
    draws over the next one (the tail size of PSIS, Vehtari et al. 2024). ``k-hat < 0.5``: finite
    variance, the bootstrap of the mean is trustworthy; ``k-hat > 0.7``: the mean of ``T`` draws is not.
    ``nan`` when the tail has no spread (e.g. almost all draws equal)."""
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    m = int(min(0.2 * len(x), 3 * math.sqrt(len(x))))
    excess = x[-m:] - x[-m - 1] if m >= 5 else np.zeros(1)
    if not np.ptp(excess) > 0:
        return math.nan
    return float(stats.genpareto.fit(excess, floc=0)[0])


# ------------------------------------------------------------------------------- the fit


def _line(x, y, intercept, w):
    """Weighted least squares of ``y (..., J)`` on ``x (J,)``: ``(slope, intercept)`` arrays."""
    sw = w.sum()
    if intercept:
        xm = (w * x).sum() / sw
        ym = (y * w).sum(-1) / sw
        slope = ((y - ym[..., None]) * (w * (x - xm))).sum(-1) / (w * (x - xm) ** 2).sum()
        return slope, ym - slope * xm
    slope = (y * (w * x)).sum(-1) / (w * x * x).sum()
    return slope, np.zeros_like(slope)


def _log_c(m1, m2, x, alpha):
    """``log C`` of Eq. 2 given alpha: mean of ``log Var(K) - log expm1(alpha s)`` over usable widths.

    ``m1, m2`` of shape ``(..., J)``, ``x (J,)``, ``alpha`` of shape ``(...)``; returns shape ``(...)``.
    """
    with np.errstate(all="ignore"):
        terms = np.log(m2 - m1**2) - np.log(np.expm1(np.asarray(alpha)[..., None] * x))
        terms = np.where(np.isfinite(terms), terms, np.nan)
        count = np.isfinite(terms).sum(-1)
        return np.where(count > 0, np.nansum(terms, -1) / np.maximum(count, 1), np.nan)


def fit_alpha(
    terms: ArrayLike,
    samples: Sequence[ArrayLike],
    intercept: bool = True,
    weighted: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Fit alpha (and ``a``, ``C``) to Monte Carlo NTK entries at several widths (Eq. 9, Algorithm 1 line 7).

    Args:
        terms: ``s(n_j) = sum_l 1/fan-in_l`` of every width ``j`` (length ``J``).
        samples: ``J`` arrays of ``T_j >= 2`` draws of one NTK entry.
        intercept: fit ``log r = a + alpha s`` (True) or ``log r = alpha s`` (False).
        weighted: weight each width by the inverse bootstrap variance of its ``log r`` (else equal).
        n_boot: bootstrap resamples; level: coverage of the intervals; seed: bootstrap seed.
    Returns:
        dict: ``alpha``, ``alpha_ci`` ``[lo, hi]``, ``alpha_se`` (bootstrap sd), ``intercept`` and
        ``intercept_ci``, ``C`` and ``C_ci``, ``level``, ``n_boot``, ``options``, ``dropped`` (widths
        with ``E[K] = 0``, left out), ``heavy_tail`` (used widths whose ``K^2`` has ``k-hat >``
        :data:`KHAT_MAX`: the interval is too narrow there, and a warning says so), and per-width lists
        ``term``, ``trials``, ``mean``, ``second``, ``log_ratio``, ``log_ratio_lo``, ``log_ratio_hi``
        (bootstrap interval), ``log_ratio_se``, ``tail_khat`` (:func:`tail_index` of ``K^2``),
        ``fitted`` (``a + alpha s``).
    """
    terms = np.asarray(terms, dtype=np.float64)
    if terms.ndim != 1 or len(terms) != len(samples):
        raise ValueError(f"terms and samples must have one entry per width, got {terms.shape} and {len(samples)}")
    if not np.all(np.isfinite(terms)) or np.any(terms <= 0):
        raise ValueError(f"terms must be finite sums of inverse fan-ins > 0, got {terms.tolist()}")
    ks = [np.asarray(k, dtype=np.float64).ravel() for k in samples]
    for k in ks:
        if len(k) < 2:
            raise ValueError(f"every width needs trials >= 2 draws, got {len(k)}")
        if not np.all(np.isfinite(k)):
            raise ValueError("samples must be finite")
    n_boot, level = positive_int("n_boot", n_boot), float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    m1, m2, y = (np.array(v) for v in zip(*(second_moment_ratio(k) for k in ks)))
    rng = np.random.default_rng(int(seed))
    yb = np.empty((n_boot, len(ks)))
    m1b, m2b = np.empty_like(yb), np.empty_like(yb)
    for j, k in enumerate(ks):
        idx = rng.integers(0, len(k), size=(n_boot, len(k)))
        m1b[:, j], m2b[:, j], yb[:, j] = second_moment_ratio(k[idx])
    ok = np.isfinite(y)
    if ok.sum() < (2 if intercept else 1) or (intercept and np.ptp(terms[ok]) == 0):
        raise ValueError(
            f"need E[K] != 0 at {'two distinct widths' if intercept else 'one width'} to fit alpha; "
            f"usable widths: {int(ok.sum())}"
        )
    q = [(1 - level) / 2, (1 + level) / 2]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of dropped widths
        khat = [tail_index(k * k) for k in ks]
        out = _fit_rest(terms, ks, m1, m2, y, yb, m1b, m2b, ok, q, intercept, weighted, n_boot, level, seed)
    heavy = [int(j) for j in np.flatnonzero(ok) if khat[j] > KHAT_MAX]
    out |= _finite({"heavy_tail": heavy, "tail_khat": khat})
    _warn_heavy_tail(out)
    return out


def _warn_heavy_tail(fit, widths=None, entry=None):
    """A :class:`HeavyTailWarning` of the ``heavy_tail`` widths of a :func:`fit_alpha` result, if any: by
    index, and given the fitted ``widths`` (:func:`fit_sweep`), by width n with its ``entry`` too."""
    heavy = fit["heavy_tail"]
    if heavy:
        k, t = [round(fit["tail_khat"][j], 2) for j in heavy], [fit["trials"][j] for j in heavy]
        named = heavy if widths is None else [widths[j] for j in heavy]
        where, out = ("", "") if widths is None else (f" (widths n = {named}, {entry} entry)", " (n_min, n_max)")
        text = (  # notebooks 03 and 08 filter the warning by this start
            f"the draws at width index {heavy}{where} have a heavy tail (Pareto k-hat of K^2 {k} > {KHAT_MAX}): "
            f"their E[K^2] is not estimated reliably from {t} draws and alpha's interval is too narrow; "
            f"draw more trials or leave these widths out{out}"
        )
        warnings.warn(HeavyTailWarning(text, named, k, t, entry), stacklevel=3)


def _fit_rest(terms, ks, m1, m2, y, yb, m1b, m2b, ok, q, intercept, weighted, n_boot, level, seed):
    """The least-squares fit and its bootstrap (the body of :func:`fit_alpha`)."""
    se = np.nanstd(yb, axis=0, ddof=1)
    w = np.where(ok, 1.0 / np.maximum(se, 1e-12) ** 2 if weighted else 1.0, 0.0)
    alpha, a = _line(terms, np.where(ok, y, 0.0), intercept, w)
    alpha_b, a_b = _line(terms, np.where(ok, yb, 0.0), intercept, w)
    bad = ~np.isfinite(yb[:, ok]).all(1)  # a resample with E[K] = 0 at a used width
    alpha_b[bad], a_b[bad] = np.nan, np.nan
    log_c, log_c_b = _log_c(m1[ok], m2[ok], terms[ok], alpha), _log_c(m1b[:, ok], m2b[:, ok], terms[ok], alpha_b)
    ylo, yhi = np.nanquantile(yb, q, axis=0)
    return _finite(
        {
            "alpha": float(alpha),
            "alpha_ci": [float(v) for v in np.nanquantile(alpha_b, q)],
            "alpha_se": float(np.nanstd(alpha_b, ddof=1)),
            "intercept": float(a),
            "intercept_ci": [float(v) for v in np.nanquantile(a_b, q)] if intercept else [0.0, 0.0],
            "C": float(np.exp(log_c)),
            "C_ci": [float(v) for v in np.exp(np.nanquantile(log_c_b, q))],
            "level": level,
            "n_boot": n_boot,
            "bad_resamples": int(bad.sum()),
            "options": {"intercept": bool(intercept), "weighted": bool(weighted), "seed": int(seed)},
            "dropped": [int(j) for j in np.flatnonzero(~ok)],
            "term": terms.tolist(),
            "trials": [len(k) for k in ks],
            "mean": m1.tolist(),
            "second": m2.tolist(),
            "log_ratio": y.tolist(),
            "log_ratio_lo": ylo.tolist(),
            "log_ratio_hi": yhi.tolist(),
            "log_ratio_se": se.tolist(),
            "fitted": (a + alpha * terms).tolist(),
        }
    )


def _finite(x):
    """Replace non-finite floats (e.g. ``C`` when alpha <= 0) by ``None`` in nested dicts and lists."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def fitted_curve(fit, num=200):
    """Fig. 8's curve: ``s`` on a grid over the fitted terms and ``r = exp(a + alpha s)``.

    Returns:
        dict of lists ``term`` and ``ratio`` (``num`` points each).
    """
    t = np.asarray(fit["term"])
    s = np.linspace(0.0 if not fit["options"]["intercept"] else t.min(), t.max(), positive_int("num", num))
    return {"term": s.tolist(), "ratio": np.exp(fit["intercept"] + fit["alpha"] * s).tolist()}


def synthetic_samples(alpha, terms, trials, intercept=0.0, mean=1.0, seed=0):
    """Draws with a known alpha: log-normal ``K`` with ``E[K^2]/E[K]^2 = exp(a + alpha s)`` exactly.

    ``K = mean * exp(sigma Z - sigma^2 / 2)``, ``sigma^2 = a + alpha s``, ``Z ~ N(0, 1)``.

    Returns:
        a list of float64 arrays of shape ``(trials,)``, one per term.
    """
    rng = np.random.default_rng(int(seed))
    out = []
    for s in np.asarray(terms, dtype=np.float64):
        var = intercept + alpha * s
        if not var > 0:
            raise ValueError(f"a + alpha s must be > 0 for a log-normal, got {var} at s = {s}")
        out.append(mean * np.exp(math.sqrt(var) * rng.standard_normal(positive_int("trials", trials)) - var / 2))
    return out


# ------------------------------------------------------------------------------- one call


def fit_sweep(
    sweep: dict,
    entry: str = "diag",
    intercept: bool = True,
    weighted: bool = False,
    n_min: int = 1,
    n_max: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = None,
) -> dict:
    """Fit alpha to one entry of a :func:`sweeps.module_sweep` (Algorithm 1, line 7), on widths in ``[n_min, n_max]``.

    Returns:
        :func:`fit_alpha`'s dict plus ``entry``, ``widths`` (those fitted), ``n_min``, ``n_max`` and
        ``heavy_tail_widths`` (the widths of ``heavy_tail``).
    """
    choice("entry", entry, ENTRIES)
    n_max = max(sweep["widths"]) if n_max is None else n_max
    use = [j for j, n in enumerate(sweep["widths"]) if n_min <= n <= n_max]
    if not use:
        raise ValueError(f"no width of {sweep['widths']} lies in [n_min, n_max] = [{n_min}, {n_max}]")
    widths = [sweep["widths"][j] for j in use]
    with warnings.catch_warnings():  # said again below, with the widths beside their indices
        warnings.simplefilter("ignore", HeavyTailWarning)
        f = fit_alpha(
            [sweep["terms"][j] for j in use],
            [entry_values(sweep["samples"][n], entry) for n in widths],
            intercept,
            weighted,
            n_boot,
            level,
            sweep["seed"] if seed is None else seed,
        )
    _warn_heavy_tail(f, widths, entry)
    return {
        **f,
        "entry": entry,
        "widths": widths,
        "n_min": int(n_min),
        "n_max": int(n_max),
        "heavy_tail_widths": [widths[j] for j in f["heavy_tail"]],
    }


def refit(fit: dict, widths: Sequence[int] | None = None, intercept: bool = True, level: float = 0.95) -> dict:
    """Alpha refitted from a stored fit's per-width moments (Eq. 9), on a subset of its widths.

    The least squares of :func:`fit_alpha` (unweighted) of ``log_ratio`` on ``term`` over ``widths``
    (default: every width of ``fit``, a :func:`fit_sweep` result). The draws at different widths are
    independent, so ``alpha = sum_j c_j log r_j`` (``c_j`` the least-squares weights) has variance
    ``sum_j c_j^2 se_j^2`` with ``se_j`` the bootstrap sd of ``log r_j`` stored in the fit; the interval
    is ``alpha +- z se``, the delta-method counterpart of :func:`fit_alpha`'s bootstrap (tested against it).

    Returns:
        ``{"alpha", "lo", "hi", "se", "intercept", "widths", "heavy_tail_widths"}``.
    Raises:
        ValueError: a width that ``fit`` does not hold, or too few usable widths for the line
        (two distinct, one without ``intercept``).
    """
    stored = {int(n): j for j, n in enumerate(fit["widths"])}
    widths = sorted(stored) if widths is None else sorted({int(n) for n in widths})
    missing = [n for n in widths if n not in stored]
    if missing:
        raise ValueError(f"widths {missing} are not in the fit (it holds {min(stored)}..{max(stored)})")
    use = [stored[n] for n in widths if fit["log_ratio"][stored[n]] is not None]
    if len(use) < (2 if intercept else 1):
        raise ValueError(f"need {'two widths' if intercept else 'one width'} with E[K] != 0, got {len(use)}")
    x, y = (np.array([fit[k][j] for j in use], dtype=float) for k in ("term", "log_ratio"))
    se = np.array([fit["log_ratio_se"][j] for j in use], dtype=float)
    if intercept:
        c = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
        alpha = float(c @ y)
        a = float(y.mean() - alpha * x.mean())
    else:
        c = x / (x * x).sum()
        alpha, a = float(c @ y), 0.0
    sd = float(np.sqrt((c**2 * se**2).sum()))
    z = float(stats.norm.ppf(0.5 + float(level) / 2))
    khat = fit.get("tail_khat") or [0.0] * len(fit["widths"])
    return {
        "alpha": alpha,
        "lo": alpha - z * sd,
        "hi": alpha + z * sd,
        "se": sd,
        "intercept": a,
        "widths": [int(fit["widths"][j]) for j in use],
        "heavy_tail_widths": [int(fit["widths"][j]) for j in use if (khat[j] or 0) > KHAT_MAX],
    }


def measure_alpha(
    module: str = "bottleneck",
    widths: Sequence[int] | None = None,
    trials: int = 2000,
    seed: int = 0,
    entry: str = "diag",
    intercept: bool = True,
    weighted: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
    device: str = "cpu",
    checkpoint: str | Path | None = None,
    progress: bool = False,
    threads: int = 1,
    **options,
) -> dict:
    """Algorithm 1 end to end: :func:`sweeps.module_sweep`, then :func:`fit_sweep` for both entries.

    Args:
        module, widths, trials, seed, device, checkpoint, progress, threads, options: as :func:`sweeps.module_sweep`.
        entry: the entry whose fit is reported as ``alpha``: ``"diag"`` ``K(x1, x1)`` (the paper's)
            or ``"offdiag"`` ``K(x1, x2)``; both are fitted and returned under ``fits``.
        intercept, weighted, n_boot, level: as :func:`fit_alpha`.
    Returns:
        a JSON-able dict: ``alpha``, ``alpha_ci``, ``C``, ``C_ci``, ``intercept`` (of ``entry``),
        ``fits`` (``{entry: fit}``), ``module``, ``options``, ``widths``, ``trials``, ``seed``,
        ``entry``, ``seconds`` (of the Monte Carlo), ``device``.
    """
    choice("entry", entry, ENTRIES)
    sw = sweeps.module_sweep(module, widths, trials, seed, device, checkpoint, progress, threads, **options)
    return sweep_result(sw, entry, intercept, weighted, n_boot, level)


def sweep_result(
    sweep: dict,
    entry: str = "diag",
    intercept: bool = True,
    weighted: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict:
    """The :func:`measure_alpha` record of a :func:`sweeps.module_sweep`: both entries fitted, ``entry`` reported.

    This is what the results store holds as ``alpha/fit_bottleneck`` and ``alpha/fit_mlp``
    (``data["alpha"]``, ``data["alpha_ci"]``, ...), without the raw samples.
    """
    choice("entry", entry, ENTRIES)
    fits = {e: fit_sweep(sweep, e, intercept, weighted, n_boot=n_boot, level=level) for e in ENTRIES}
    f = fits[entry]
    return {
        "alpha": f["alpha"],
        "alpha_ci": f["alpha_ci"],
        "C": f["C"],
        "C_ci": f["C_ci"],
        "intercept": f["intercept"],
        "entry": entry,
        "fits": fits,
        **{k: sweep[k] for k in ("module", "options", "widths", "trials", "seed", "seconds", "device")},
    }


def result_table(result):
    """Per-width rows of a :func:`measure_alpha` result (both entries): a ``pandas.DataFrame``."""
    import pandas as pd

    rows = []
    for e, f in result["fits"].items():
        for j, n in enumerate(result["widths"]):
            rows.append(
                {
                    "entry": e,
                    "n": n,
                    **{
                        k: f[k][j]
                        for k in (
                            "term",
                            "trials",
                            "mean",
                            "second",
                            "log_ratio",
                            "log_ratio_lo",
                            "log_ratio_hi",
                            "fitted",
                            "tail_khat",
                        )
                    },
                }
            )
    return pd.DataFrame(rows)
