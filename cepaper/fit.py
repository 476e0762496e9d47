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
are listed in ``heavy_tail`` with a warning. Measured in ``tests/test_fit.py``: at the paper's widths
and ``T = 2000``, for exponential-tailed draws like the block's (``k-hat <= 0.5``), the bootstrap sd is
0.9-1.0 of alpha-hat's sampling sd; for log-normal draws with ``Var log K = 1.78`` (``k-hat ~ 0.9``) it
is 0.55 and no resampling of the draws can see the tail the draws never reached.

Which layers enter ``s(n)`` follows :mod:`cepaper.search`, so that the fitted alpha means the same
thing in the design: the bottleneck sums all three convs (``1/n_in + 1/(9n) + 1/n``); the MLP of
Eq. 3 sums its hidden layers (``(L - 1)/n``, Prop. 1), not the input layer (whose input is fixed).
With an intercept a constant term such as ``1/n_in`` only moves ``a``, never alpha.

The fitted alpha depends on the scalar function (input, spatial size, read-out of the block; the
entry) and on the widths the fit sees, because ``log r`` is not exactly linear in ``s``: it bends
at small widths. Notebook ``03_alpha`` measures both; :data:`DEFAULTS` are the literal reading of
Sec. 4.2 (one output unit's diagonal NTK entry), with which the paper's recipe gives alpha near 1.6.

Draws: width ``n`` uses the seed :func:`width_seed` ``(seed, n)``, so a width's samples do not
depend on which other widths are swept, and a resumed sweep equals an uninterrupted one. The samples
of each width are drawn by :func:`cepaper.montecarlo.mc_samples` in chunks whose size depends only on the
module and width (never on the device's memory), float32 compute with float64 sums.
"""

import json
import math
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scipy import stats

from cepaper._checks import positive_int
from cepaper.models.mlp import CollegialMLP
from cepaper.training import spine

MODULES = ("bottleneck", "mlp")
ENTRIES = ("diag", "offdiag")
#: float32 working memory per Monte Carlo chunk (floats); fixes the chunk size of every width.
CHUNK_FLOATS = 2 ** 25
#: Pareto tail index above which a Monte Carlo mean is unreliable (Vehtari et al. 2024, PSIS, Sec. 3).
KHAT_MAX = 0.7


# ------------------------------------------------------------------------------- widths, fan-ins

def log_grid(lo=1, hi=256, num=16):
    """``num`` distinct integer widths from ``lo`` to ``hi``, log-spaced (Algorithm 1's ratios).

    Rounds ``geomspace(lo, hi, num)`` and, where rounding repeats a width (near ``lo``), takes the
    next integer up: ``log_grid(1, 256, 16) = (1, 2, 3, 4, 5, 6, 9, 13, 19, 28, 40, 58, 84, 122, 177, 256)``.
    """
    lo, hi, num = positive_int("lo", lo), positive_int("hi", hi), positive_int("num", num)
    if hi - lo + 1 < num:
        raise ValueError(f"need hi - lo + 1 >= num for {num} distinct widths, got lo={lo}, hi={hi}")
    out = []
    for w in np.rint(np.geomspace(lo, hi, num)).astype(int):
        out.append(max(int(w), out[-1] + 1) if out else int(w))
    if out[-1] > hi:                                   # cannot happen for hi - lo + 1 >= num; guard
        raise ValueError(f"could not place {num} distinct widths in [{lo}, {hi}]")
    return tuple(out)


def check_widths(widths):
    """``widths`` as a tuple of distinct ints >= 1 (an error names the first bad one)."""
    widths = tuple(positive_int("width", w) for w in widths)
    if not widths:
        raise ValueError("widths must hold at least one width, got ()")
    if len(set(widths)) != len(widths):
        raise ValueError(f"widths must be distinct, got {widths}")
    return widths


def fan_ins(module):
    """Fan-ins of the weight layers of ``module``, in registration order.

    A module with a ``fan_ins()`` method (e.g. :class:`~cepaper.models.blocks.BottleneckDraws`)
    reports its own; a :class:`~cepaper.models.mlp.CollegialMLP` gives ``(n_0, n_1, ..., n_L)``;
    otherwise every ``nn.Linear`` (``in_features``) and ``nn.Conv1d/2d/3d`` (``in_channels / groups``
    times the kernel area) counts, the fan-in of a weight ``w`` being ``w[0].numel()``.

    Returns:
        tuple of ints, one per weight layer.
    """
    if callable(getattr(module, "fan_ins", None)):
        return tuple(int(f) for f in module.fan_ins())
    if isinstance(module, CollegialMLP):
        return (module.n_in,) + tuple(module.widths)
    fans = []
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            fans.append(layer.in_features)
        elif isinstance(layer, nn.modules.conv._ConvNd):
            fans.append(layer.in_channels // layer.groups * math.prod(layer.kernel_size))
    if not fans:
        raise ValueError(f"module {type(module).__name__} has no weight layers (nn.Linear or nn.Conv*) "
                         f"to read fan-ins from; give it a fan_ins() method")
    return tuple(fans)


def sum_inv_fan_in(fans, layers="all"):
    """Eq. 9's ``s = sum_l 1 / fan-in_l`` over ``layers="all"`` or ``"hidden"`` (all but the first)."""
    fans = [positive_int("fan-in", f) for f in fans]
    if layers not in ("all", "hidden"):
        raise ValueError(f"layers must be 'all' or 'hidden', got {layers!r}")
    used = fans if layers == "all" else fans[1:]
    if not used:
        raise ValueError(f"no layer enters the sum: {len(fans)} fan-in(s) with layers={layers!r}")
    return float(sum(1.0 / f for f in used))


def bottleneck_term(n, n_in=256):
    """``s(n) = 1/n_in + 1/(9n) + 1/n``: the three convs of the Fig. 5 block (as :mod:`cepaper.search`)."""
    return sum_inv_fan_in((n_in, 9 * positive_int("n", n), n), "all")


def mlp_term(n, depth=6, n_in=784):
    """``s(n) = (L - 1)/n``: the hidden layers of the ``L = depth`` weight-layer MLP (as :mod:`cepaper.search`)."""
    depth = positive_int("depth", depth)
    if depth < 2:
        raise ValueError(f"depth must be >= 2 weight layers (one hidden layer), got {depth}")
    return sum_inv_fan_in((n_in,) + (positive_int("n", n),) * (depth - 1), "hidden")


def width_seed(seed, width):
    """The Monte Carlo seed of one width: a hash of ``(seed, width)`` (63 bits)."""
    return spine.derive_seed(int(seed), int(width), bits=64) & (2 ** 63 - 1)


# ------------------------------------------------------------------------------- Monte Carlo

def mlp_inputs(n_in=784, count=2, corr=0.5, seed=0, dtype=torch.float32):
    """Inputs of the MLP, entries N(0, 1), pairwise correlation ``corr``: shape ``(count, n_in)``.

    ``x_k = sqrt(corr) g_0 + sqrt(1 - corr) g_k``. The NTK's law depends on the inputs only through
    their Gram matrix ``x x^T / n_in`` (the first layer is rotation invariant), not on ``n_in`` itself.
    """
    n_in, count = positive_int("n_in", n_in), positive_int("count", count)
    if not 0.0 <= float(corr) <= 1.0:
        raise ValueError(f"corr must be in [0, 1], got {corr!r}")
    z = torch.randn(count + 1, n_in, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (math.sqrt(corr) * z[:1] + math.sqrt(1.0 - corr) * z[1:]).to(dtype)


def mlp_chunk(n, depth=6, n_in=784, count=2):
    """Draws per Monte Carlo chunk of the MLP sampler (weights and activations within ``CHUNK_FLOATS``)."""
    per = n * n_in + (depth - 2) * n * n + n + 4 * depth * count * n
    return max(1, CHUNK_FLOATS // per)


def _sweep_key(settings):
    """Checkpoint folder name: a hash of the settings and of the code that computes the samples."""
    from cepaper.training import spine
    return spine.source_key(settings, ("cepaper.models.blocks", "cepaper.models.mlp", "cepaper.ntk", "cepaper.montecarlo",
                                       __name__))


def _round32(a):
    """Samples rounded to float32 precision (9 significant digits), as stored in checkpoints."""
    return np.array([float(f"{v:.9g}") for v in np.asarray(a, dtype=np.float64).ravel()]).reshape(np.shape(a))


def ntk_sweep(sampler, widths, trials, seed=0, chunk=None, device="cpu", checkpoint=None, settings=None,
              progress=False, threads=1):
    """Monte Carlo NTK matrices of ``trials`` independent draws at every width (Algorithm 1, lines 1-5).

    Args:
        sampler: ``width -> sample``, where ``sample(t, generator)`` returns ``(t, N, N)`` NTKs of ``t``
            fresh draws (e.g. :func:`cepaper.montecarlo.mlp_ntk_sampler`,
            :func:`cepaper.models.blocks.bottleneck_ntk_sampler`).
        widths: the widths; trials: draws per width ``T >= 2``.
        seed: the sweep's seed; width ``n`` draws with :func:`width_seed` ``(seed, n)``.
        chunk: ``width -> draws per chunk`` (default 256); it must not depend on the device.
        checkpoint: a folder, or ``None``. Each finished width is written there atomically as
            ``<key>/n<width>.json`` (``key`` hashes ``settings``, ``trials``, ``seed`` and the code);
            widths already there are loaded, not recomputed, so an interrupted sweep resumes.
        settings: JSON-able description of the sampler (inputs, read-out, ...) for the key.
        progress: a ``tqdm`` bar over widths.
        threads: CPU intra-op threads while sampling (``None``: torch's setting). The default 1 is
            fastest here: the Monte Carlo is many small kernels, and waking a second thread for each
            costs more than it saves (several times more on a CPU shared with other processes).
    Returns:
        dict ``{width: float64 array (T, N, N)}`` (float32 precision: every sample is rounded to 9
        significant digits, whether computed now or loaded, so resuming changes nothing).
    """
    from cepaper import montecarlo
    from cepaper.training import spine
    widths = check_widths(widths)
    trials = positive_int("trials", trials)
    if trials < 2:
        raise ValueError(f"trials must be >= 2 (a second moment needs two draws), got {trials}")
    folder = None
    if checkpoint is not None:
        key = _sweep_key({"settings": settings, "trials": trials, "seed": int(seed)})
        folder = Path(checkpoint) / key
    out = {}
    bar = widths
    if progress:
        from tqdm import tqdm
        bar = tqdm(widths, desc="alpha sweep", unit="width")
    for n in bar:
        path = None if folder is None else folder / f"n{n:04d}.json"
        if path is not None and path.exists():
            rec = json.loads(path.read_text())
            out[n] = np.asarray(rec["samples"], dtype=np.float64)
            continue
        size = 256 if chunk is None else chunk(n)
        k = montecarlo.mc_samples(sampler(n), trials, chunk=size, seed=width_seed(seed, n), device=device,
                           threads=threads if torch.device(device).type == "cpu" else None)
        k = _round32(k.detach().cpu().double().numpy())
        if path is not None:
            spine.write_atomic(path, json.dumps({"width": n, "trials": trials, "settings": settings,
                                                   "samples": k.tolist()}) + "\n")
        out[n] = k
    return out


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
    if entry == "diag":
        return samples[:, 0, 0]
    if entry == "offdiag":
        if samples.shape[1] < 2:
            raise ValueError("entry 'offdiag' needs NTK matrices of at least two inputs, got N = 1")
        return samples[:, 0, 1]
    raise ValueError(f"entry must be one of {', '.join(ENTRIES)}; got {entry!r}")


def second_moment_ratio(k):
    """Monte Carlo ``E[K]``, ``E[K^2]`` and ``log(E[K^2] / E[K]^2)`` of draws ``k`` (shape ``(T,)`` or ``(B, T)``).

    Sums in float64 over the last axis; ``log_ratio`` is ``nan`` where ``E[K] = 0``.
    """
    k = np.asarray(k, dtype=np.float64)
    m1, m2 = k.mean(-1), (k * k).mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(m2) - 2.0 * np.log(np.abs(m1))
    return m1, m2, np.where(np.isfinite(lr), lr, np.nan)


def tail_index(x):
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
        terms = np.log(m2 - m1 ** 2) - np.log(np.expm1(np.asarray(alpha)[..., None] * x))
        terms = np.where(np.isfinite(terms), terms, np.nan)
        count = np.isfinite(terms).sum(-1)
        return np.where(count > 0, np.nansum(terms, -1) / np.maximum(count, 1), np.nan)


def fit_alpha(terms, samples, intercept=True, weighted=False, n_boot=1000, level=0.95, seed=0):
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
        raise ValueError(f"need E[K] != 0 at {'two distinct widths' if intercept else 'one width'} to fit alpha; "
                         f"usable widths: {int(ok.sum())}")
    q = [(1 - level) / 2, (1 + level) / 2]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # all-NaN columns of dropped widths
        khat = [tail_index(k * k) for k in ks]
        out = _fit_rest(terms, ks, m1, m2, y, yb, m1b, m2b, ok, q, intercept, weighted, n_boot, level, seed)
    heavy = [int(j) for j in np.flatnonzero(ok) if khat[j] > KHAT_MAX]
    if heavy:
        warnings.warn(f"the draws at width index {heavy} have a heavy tail (Pareto k-hat of K^2 "
                      f"{[round(khat[j], 2) for j in heavy]} > {KHAT_MAX}): their E[K^2] is not estimated "
                      f"reliably from {[len(ks[j]) for j in heavy]} draws and alpha's interval is too narrow; "
                      f"draw more trials or leave these widths out (n_min)", stacklevel=2)
    return out | _finite({"heavy_tail": heavy, "tail_khat": khat})


def _fit_rest(terms, ks, m1, m2, y, yb, m1b, m2b, ok, q, intercept, weighted, n_boot, level, seed):
    """The least-squares fit and its bootstrap (the body of :func:`fit_alpha`)."""
    se = np.nanstd(yb, axis=0, ddof=1)
    w = np.where(ok, 1.0 / np.maximum(se, 1e-12) ** 2 if weighted else 1.0, 0.0)
    alpha, a = _line(terms, np.where(ok, y, 0.0), intercept, w)
    alpha_b, a_b = _line(terms, np.where(ok, yb, 0.0), intercept, w)
    bad = ~np.isfinite(yb[:, ok]).all(1)              # a resample with E[K] = 0 at a used width
    alpha_b[bad], a_b[bad] = np.nan, np.nan
    log_c, log_c_b = _log_c(m1[ok], m2[ok], terms[ok], alpha), _log_c(m1b[:, ok], m2b[:, ok], terms[ok], alpha_b)
    ylo, yhi = np.nanquantile(yb, q, axis=0)
    return _finite({
        "alpha": float(alpha), "alpha_ci": [float(v) for v in np.nanquantile(alpha_b, q)],
        "alpha_se": float(np.nanstd(alpha_b, ddof=1)),
        "intercept": float(a), "intercept_ci": [float(v) for v in np.nanquantile(a_b, q)] if intercept else [0.0, 0.0],
        "C": float(np.exp(log_c)), "C_ci": [float(v) for v in np.exp(np.nanquantile(log_c_b, q))],
        "level": level, "n_boot": n_boot, "bad_resamples": int(bad.sum()),
        "options": {"intercept": bool(intercept), "weighted": bool(weighted), "seed": int(seed)},
        "dropped": [int(j) for j in np.flatnonzero(~ok)],
        "term": terms.tolist(), "trials": [len(k) for k in ks], "mean": m1.tolist(), "second": m2.tolist(),
        "log_ratio": y.tolist(), "log_ratio_lo": ylo.tolist(), "log_ratio_hi": yhi.tolist(),
        "log_ratio_se": se.tolist(), "fitted": (a + alpha * terms).tolist(),
    })


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

def _bottleneck_setup(o):
    from cepaper.models import blocks
    x = blocks.block_inputs(o["n_in"], o["spatial"], 2, o["corr"], o["input"], o["input_seed"])
    v = blocks.readout_vector(o["readout"], o["n_in"], o["spatial"], o["input_seed"])
    sampler = partial(blocks.bottleneck_ntk_sampler, x=x, readout=v, n_in=o["n_in"], post_relu=o["post_relu"])
    chunk = lambda n: max(1, CHUNK_FLOATS // blocks.bottleneck_floats_per_draw(n, o["n_in"], o["spatial"], 2))
    return sampler, chunk, partial(bottleneck_term, n_in=o["n_in"])


def _mlp_setup(o):
    from cepaper import montecarlo
    x = mlp_inputs(o["n_in"], 2, o["corr"], o["input_seed"])
    sampler = lambda n: montecarlo.mlp_ntk_sampler(x, widths=(n,) * (o["depth"] - 1))
    return sampler, partial(mlp_chunk, depth=o["depth"], n_in=o["n_in"]), partial(mlp_term, depth=o["depth"],
                                                                                 n_in=o["n_in"])


DEFAULTS = {
    "bottleneck": dict(n_in=256, spatial=3, readout="center", post_relu=False, input="gaussian", corr=0.5,
                       input_seed=0),
    "mlp": dict(n_in=784, depth=6, corr=0.5, input_seed=0),
}


def module_options(module, **options):
    """The sampler options of ``module`` (``DEFAULTS`` overridden by ``options``), checked."""
    if module not in MODULES:
        raise ValueError(f"module must be one of {', '.join(MODULES)}; got {module!r}")
    unknown = sorted(set(options) - set(DEFAULTS[module]))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for module {module}; "
                         f"allowed: {', '.join(DEFAULTS[module])}")
    o = {**DEFAULTS[module], **{k: v for k, v in options.items() if v is not None}}
    positive_int("n_in", o["n_in"])
    if module == "bottleneck":
        positive_int("spatial", o["spatial"])
    else:
        positive_int("depth", o["depth"])
        if o["depth"] < 2:
            raise ValueError(f"depth must be >= 2 weight layers, got {o['depth']}")
    return o


def module_sweep(module="bottleneck", widths=None, trials=2000, seed=0, device="cpu", checkpoint=None,
                 progress=False, threads=1, **options):
    """Algorithm 1, lines 1-5, for a built-in module: NTK samples at every width.

    Args:
        module: ``"bottleneck"`` (Fig. 5, :mod:`cepaper.models.blocks`) or ``"mlp"`` (Eq. 3).
        widths: widths ``n`` (default :func:`log_grid` ``(1, 256, 16)``); trials: draws per width.
        seed: Monte Carlo seed (the inputs use ``input_seed``: they are part of the function).
        device: torch device of the Monte Carlo; checkpoint: folder for a resumable sweep.
        progress: a ``tqdm`` bar over widths; threads: CPU threads (see :func:`ntk_sweep`).
        options: the module's choices (``DEFAULTS``): bottleneck ``n_in``, ``spatial`` (H = W),
            ``readout`` (``"mean"``, ``"center"``, ``"random"``), ``post_relu``, ``input``
            (``"gaussian"``, ``"constant"``), ``corr`` (of x1 and x2), ``input_seed``; mlp ``n_in``,
            ``depth`` (weight layers L; ``L - 1`` hidden layers of width n), ``corr``, ``input_seed``.
    Returns:
        dict: ``module``, ``options``, ``widths``, ``terms`` (``s(n)`` of each width), ``trials``,
        ``seed``, ``device``, ``seconds``, and ``samples`` ``{n: array (T, 2, 2)}`` (NTK on x1, x2).
    """
    o = module_options(module, **options)
    widths = tuple(sorted(check_widths(log_grid() if widths is None else widths)))
    sampler, chunk, term = (_bottleneck_setup if module == "bottleneck" else _mlp_setup)(o)
    start = time.perf_counter()
    samples = ntk_sweep(sampler, widths, trials, seed, chunk, device, checkpoint,
                        settings={"module": module, **o}, progress=progress, threads=threads)
    return {"module": module, "options": o, "widths": list(widths), "terms": [term(n) for n in widths],
            "trials": int(trials), "seed": int(seed), "device": str(device),
            "seconds": round(time.perf_counter() - start, 3), "samples": samples}


def custom_sweep(make, x, widths, trials=2000, seed=0, layers="all", device="cpu", checkpoint=None, name=None,
                 progress=False, threads=1):
    """Algorithm 1, lines 1-5, for any scalar-output torch module of width ``n`` (a user's own block).

    Each draw is a fresh ``make(n, generator)`` whose NTK on ``x`` comes from
    :func:`cepaper.ntk.empirical_ntk` (one ``torch.func`` Jacobian per draw: general, not fast). The
    fan-ins are read from the layers of ``make(n, ...)`` by :func:`fan_ins` (grouped convs included).

    Args:
        make: ``(n, generator) -> nn.Module`` mapping ``(N, ...)`` to ``(N,)`` or ``(N, 1)``, its weights
            drawn from ``generator`` (a ``torch.Generator`` on ``device``).
        x: inputs ``(N, ...)``, ``N >= 2`` for the off-diagonal entry (the NTK is taken on all pairs).
        widths, trials, seed, device, checkpoint, progress, threads: as :func:`module_sweep`.
        layers: which fan-ins enter ``s(n)``: ``"all"`` or ``"hidden"`` (all but the first layer).
        name: a label for the checkpoint key (required with ``checkpoint``: the code of ``make``
            is not hashed, so give each distinct module its own name).
    Returns:
        dict as :func:`module_sweep`, ``module = name or "custom"``, ``options = {"layers": layers}``.
    """
    from cepaper import montecarlo
    widths = check_widths(widths)
    if checkpoint is not None and not name:
        raise ValueError("a checkpointed custom sweep needs a name that identifies the module")
    if not torch.is_tensor(x) or x.ndim < 2:
        raise ValueError(f"x must be a tensor of inputs (N, ...), got {getattr(x, 'shape', type(x).__name__)}")
    terms = []
    for n in widths:
        probe = make(n, torch.Generator(device=device).manual_seed(0))
        terms.append(sum_inv_fan_in(fan_ins(probe), layers))
        if not any(p.requires_grad for p in probe.parameters()):
            raise ValueError(f"module of width {n} has no trainable weights: its NTK is zero")
        with torch.no_grad():
            out = probe(x.to(device))
        if not torch.is_tensor(out) or tuple(out.shape) not in ((len(x),), (len(x), 1)):
            raise ValueError(f"module of width {n} must output one scalar per input, shape ({len(x)},) or "
                             f"({len(x)}, 1); got {tuple(getattr(out, 'shape', ())) or type(out).__name__}")
    sampler = lambda n: montecarlo.module_ntk_sampler(lambda g: make(n, g), x.to(device))
    start = time.perf_counter()
    samples = ntk_sweep(sampler, widths, trials, seed, lambda n: trials, device, checkpoint,
                        settings={"module": name, "layers": layers, "x": x.detach().cpu().double().sum().item()},
                        progress=progress, threads=threads)
    return {"module": name or "custom", "options": {"layers": layers}, "widths": list(widths), "terms": terms,
            "trials": int(trials), "seed": int(seed), "device": str(device),
            "seconds": round(time.perf_counter() - start, 3), "samples": samples}


def fit_sweep(sweep, entry="diag", intercept=True, weighted=False, n_min=1, n_max=None, n_boot=1000,
              level=0.95, seed=None):
    """Fit alpha to one entry of a :func:`module_sweep` (Algorithm 1, line 7), on widths in ``[n_min, n_max]``.

    Returns:
        :func:`fit_alpha`'s dict plus ``entry``, ``widths`` (those fitted), ``n_min``, ``n_max`` and
        ``heavy_tail_widths`` (the widths of ``heavy_tail``).
    """
    if entry not in ENTRIES:
        raise ValueError(f"entry must be one of {', '.join(ENTRIES)}; got {entry!r}")
    n_max = max(sweep["widths"]) if n_max is None else n_max
    use = [j for j, n in enumerate(sweep["widths"]) if n_min <= n <= n_max]
    if not use:
        raise ValueError(f"no width of {sweep['widths']} lies in [n_min, n_max] = [{n_min}, {n_max}]")
    widths = [sweep["widths"][j] for j in use]
    f = fit_alpha([sweep["terms"][j] for j in use], [entry_values(sweep["samples"][n], entry) for n in widths],
                  intercept, weighted, n_boot, level, sweep["seed"] if seed is None else seed)
    return {**f, "entry": entry, "widths": widths, "n_min": int(n_min), "n_max": int(n_max),
            "heavy_tail_widths": [widths[j] for j in f["heavy_tail"]]}


def measure_alpha(module="bottleneck", widths=None, trials=2000, seed=0, entry="diag", intercept=True,
                  weighted=False, n_boot=1000, level=0.95, device="cpu", checkpoint=None, progress=False,
                  threads=1, **options):
    """Algorithm 1 end to end: :func:`module_sweep`, then :func:`fit_sweep` for both entries.

    Args:
        module, widths, trials, seed, device, checkpoint, progress, threads, options: as :func:`module_sweep`.
        entry: the entry whose fit is reported as ``alpha``: ``"diag"`` ``K(x1, x1)`` (the paper's)
            or ``"offdiag"`` ``K(x1, x2)``; both are fitted and returned under ``fits``.
        intercept, weighted, n_boot, level: as :func:`fit_alpha`.
    Returns:
        a JSON-able dict: ``alpha``, ``alpha_ci``, ``C``, ``C_ci``, ``intercept`` (of ``entry``),
        ``fits`` (``{entry: fit}``), ``module``, ``options``, ``widths``, ``trials``, ``seed``,
        ``entry``, ``seconds`` (of the Monte Carlo), ``device``.
    """
    if entry not in ENTRIES:
        raise ValueError(f"entry must be one of {', '.join(ENTRIES)}; got {entry!r}")
    sw = module_sweep(module, widths, trials, seed, device, checkpoint, progress, threads, **options)
    return sweep_result(sw, entry, intercept, weighted, n_boot, level)


def sweep_result(sweep, entry="diag", intercept=True, weighted=False, n_boot=1000, level=0.95):
    """The :func:`measure_alpha` record of a :func:`module_sweep`: both entries fitted, ``entry`` reported.

    This is what the results store holds as ``alpha/fit_bottleneck`` and ``alpha/fit_mlp``
    (``data["alpha"]``, ``data["alpha_ci"]``, ...), without the raw samples.
    """
    if entry not in ENTRIES:
        raise ValueError(f"entry must be one of {', '.join(ENTRIES)}; got {entry!r}")
    fits = {e: fit_sweep(sweep, e, intercept, weighted, n_boot=n_boot, level=level) for e in ENTRIES}
    f = fits[entry]
    return {"alpha": f["alpha"], "alpha_ci": f["alpha_ci"], "C": f["C"], "C_ci": f["C_ci"],
            "intercept": f["intercept"], "entry": entry, "fits": fits,
            **{k: sweep[k] for k in ("module", "options", "widths", "trials", "seed", "seconds", "device")}}


def result_table(result):
    """Per-width rows of a :func:`measure_alpha` result (both entries): a ``pandas.DataFrame``."""
    import pandas as pd
    rows = []
    for e, f in result["fits"].items():
        for j, n in enumerate(result["widths"]):
            rows.append({"entry": e, "n": n, **{k: f[k][j] for k in ("term", "trials", "mean", "second", "log_ratio",
                                                                       "log_ratio_lo", "log_ratio_hi", "fitted",
                                                                       "tail_khat")}})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- alpha -> design

def alpha_interval(optimum_of, alpha, lo, hi, tol=1e-3, grid=64):
    """The interval of alpha around ``alpha`` on which ``optimum_of(alpha)`` stays the same.

    Scans a log grid of ``grid`` points over ``[lo, hi]`` and bisects each edge to ``tol`` (relative).
    Assumes the set is an interval (one change on each side within the grid's resolution).

    Args:
        optimum_of: ``alpha -> hashable`` (e.g. the optimal ``(n, m)`` of a design).
        alpha: the fitted alpha, in ``[lo, hi]``.
    Returns:
        ``(a_lo, a_hi)``; an end equals ``lo`` or ``hi`` when the optimum never changes on that side.
    """
    if not 0 < lo <= alpha <= hi:
        raise ValueError(f"need 0 < lo <= alpha <= hi, got lo={lo}, alpha={alpha}, hi={hi}")
    ref = optimum_of(alpha)
    below = [a for a in np.geomspace(lo, alpha, grid // 2)[::-1][1:]]
    above = [a for a in np.geomspace(alpha, hi, grid // 2)[1:]]

    def edge(side):
        inside = alpha
        for a in side:
            if optimum_of(a) != ref:
                out = a
                while abs(out - inside) > tol * inside:
                    mid = math.sqrt(out * inside)
                    if optimum_of(mid) == ref:
                        inside = mid
                    else:
                        out = mid
                return inside
            inside = a
        return inside

    return float(edge(below)), float(edge(above))
