"""Sec. 2, Lemma 1 (notebook ``01_lemma1``): the ensemble NTK converges to the NMK, its variance falls as 1/m.

The analysis (:func:`circle_inputs`, :func:`running_ensemble`, :func:`ensemble_variance`,
:func:`variance_slope`, :func:`inverse_width_fit`) works on Monte Carlo draws of member NTKs
(:mod:`cepaper.montecarlo`); :func:`draw_kernels` and :func:`save` are what the notebook runs, :func:`check`
what it checks. The figures (Fig. 2), tables and sentence (:mod:`cepaper.sections._lemma1_page`, exposed
here) take the ``data`` dicts the notebook saved, computing nothing the notebook did not save.
"""

import math

import numpy as np
import torch

from cepaper._checks import positive_float, positive_int
from cepaper.montecarlo import moments
from cepaper.sections._lemma1_page import (  # noqa: F401 (the notebook's figures, tables and sentence)
    lemma1_nmk,
    lemma1_surface,
    lemma1_variance,
    lemma1_width,
    nmk_rows,
    setup_table,
    variance_rows,
    width_sentence,
)
from cepaper.sections._shared import show  # noqa: F401 (the notebook's)
from cepaper.stats import t_quantile


def _a(x):
    return np.asarray(x, dtype=float)


def check_params(n, widths, width_draws, z_max):
    """Check the width study's parameters; return ``(widths, width_draws, z_max)``.

    ``widths``: a non-empty list of distinct integers >= 1 other than ``n`` (the NMK at width ``n``
    comes from the member draws of panel (b)); ``width_draws``: one integer >= 2 per width, the draws
    at that width (two at least, for a standard error); ``z_max``: a finite number > 0."""
    n = positive_int("n", n)
    if not isinstance(widths, (list, tuple)) or not widths:
        raise ValueError(f"widths must be a non-empty list of widths >= 1, got {widths!r}")
    widths = [positive_int(f"widths[{i}]", w) for i, w in enumerate(widths)]
    repeated = sorted({w for w in widths if widths.count(w) > 1})
    if repeated:
        raise ValueError(f"widths must be distinct, got {', '.join(map(str, repeated))} more than once in {widths}")
    if n in widths:
        raise ValueError(f"widths must not hold n = {n} (the NMK at n is the draws of panel (b)), got {widths}")
    if not isinstance(width_draws, (list, tuple)) or len(width_draws) != len(widths):
        raise ValueError(
            f"width_draws must hold one number of draws per width ({len(widths)}: {widths}), got {width_draws!r}"
        )
    width_draws = [positive_int(f"width_draws[{i}]", d) for i, d in enumerate(width_draws)]
    few = [(w, d) for w, d in zip(widths, width_draws) if d < 2]
    if few:
        raise ValueError(
            f"width_draws must be >= 2 (a standard error needs two draws), got {few[0][1]} at width {few[0][0]}"
        )
    return widths, width_draws, positive_float("z_max", z_max)


# ------------------------------------------------------------------------------ the Monte Carlo analysis


def circle_inputs(n_gamma, dtype=torch.float32):
    """Fig. 2 inputs: ``x_0 = [1, 0]`` then ``x_gamma = [cos gamma, sin gamma]``, gamma in [-pi, pi].

    Args:
        n_gamma: number of angles (``>= 2``), evenly spaced over ``[-pi, pi]``.
    Returns:
        ``(gamma, x, entries)``: ``gamma (G,)``; ``x (G + 1, 2)`` with ``x[0] = x_0``; ``entries``
        ``(rows, cols)`` selecting the diagonal ``K[x_gamma, x_gamma]`` (first ``G``) then the
        off-diagonal ``K[x_0, x_gamma]`` (last ``G``), for ``member_ntk``/``mlp_ntk_sampler``.
    """
    g = positive_int("n_gamma", n_gamma)
    if g < 2:
        raise ValueError(f"n_gamma must be >= 2, got {g}")
    gamma = torch.linspace(-math.pi, math.pi, g, dtype=torch.float64)
    x = torch.cat([torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.stack([gamma.cos(), gamma.sin()], 1)]).to(
        dtype
    )
    k = torch.arange(1, g + 1)
    return gamma.to(dtype), x, (torch.cat([k, torch.zeros_like(k)]), torch.cat([k, k]))


def running_ensemble(samples):
    """Ensemble NTK of the first ``m`` members for every ``m``: ``K_e(m) = (1/m) sum_{j<=m} K_j``.

    Lemma 1 (Eq. 6) is the almost-sure convergence of exactly this running mean.
    Args:
        samples: member kernels ``(T, ...)``. Returns: ``(T, ...)`` float64, row ``m - 1`` is ``K_e(m)``.
    """
    s = samples.to(torch.float64)
    return s.cumsum(0) / torch.arange(1, s.shape[0] + 1, dtype=s.dtype, device=s.device).reshape(
        (-1,) + (1,) * (s.ndim - 1)
    )


def ensemble_variance(samples, ms):
    """``Var(K_e)`` of ensembles of ``m`` members, from disjoint groups of a pool of member draws.

    For each ``m`` the first ``g = T // m`` groups of ``m`` consecutive members give ``g`` independent
    ensemble kernels ``K_e`` (Eq. 4); their sample variance estimates ``Var(K_e) = Var(K_n)/m`` (Eq. 11).

    Args:
        samples: member kernels ``(T, ...)``; ms: multiplicities, each with ``T // m >= 2``.
    Returns:
        dict of ``m`` (M,), ``groups`` (M,), ``var`` and ``var_se`` (M, ...) float64.
    """
    t = samples.shape[0]
    ms = [positive_int("m", m) for m in ms]
    bad = [m for m in ms if t // m < 2]
    if bad:
        raise ValueError(f"every m needs at least 2 groups of m among the {t} draws; m = {bad} do not")
    var, se = [], []
    for m in ms:
        g = t // m
        mo = moments(samples[: g * m].reshape((g, m) + samples.shape[1:]).to(torch.float64).mean(1))
        var.append(mo.var)
        se.append(mo.var_se)
    return dict(
        m=torch.tensor(ms), groups=torch.tensor([t // m for m in ms]), var=torch.stack(var), var_se=torch.stack(se)
    )


def _slope(logm, logv, w):
    """Weighted least-squares slope and intercept of ``logv (..., M)`` on ``logm (M,)``, weights ``w``."""
    w = w / w.sum(-1, keepdim=True)
    mx = (w * logm).sum(-1, keepdim=True)
    my = (w * logv).sum(-1, keepdim=True)
    b = (w * (logm - mx) * (logv - my)).sum(-1) / (w * (logm - mx) ** 2).sum(-1)
    return b, my.squeeze(-1) - b * mx.squeeze(-1)


def variance_slope(samples, ms, blocks=16, level=0.95):
    """Slope of ``log Var(K_e)`` against ``log m`` (Eq. 11 predicts -1), with a jackknife interval.

    The ``T`` member draws are cut into ``blocks`` equal blocks whose size is a multiple of every
    ``m``; within them, consecutive groups of ``m`` members form ensembles (Eq. 4) whose kernels'
    sample variance, averaged over the entries (all dims after the first), estimates
    ``Var(K_e)(m)``. The slope is the least-squares fit of ``log Var`` on ``log m`` weighted by
    ``groups - 1``; its standard error is the delete-one-block jackknife (a deleted block removes
    whole groups for every ``m``), and the interval is ``slope +- t_{blocks-1} se``. In repeated
    simulations of MLP kernels (n = 64 and 256, T = 1024 and 2048, 16 or 32 blocks) the 95% interval
    covered -1 in 85-97% of runs: a little narrow for the heavy-tailed kernels of narrow nets.

    Args:
        samples: member kernels ``(T, ...)``, independent draws.
        ms: multiplicities (at least two distinct values).
        blocks: jackknife blocks (>= 3); ``T`` must be at least ``blocks * lcm(ms)``.
        level: coverage of the interval.
    Returns:
        dict with ``slope``, ``intercept`` (of ``log Var = intercept + slope log m``), ``se``,
        ``lo``, ``hi``, ``level``, ``blocks``, ``draws`` (members used), and per ``m`` (sorted):
        ``m``, ``groups``, the entry-averaged ``var`` and its jackknife ``var_se`` (lists).
    """
    ms = sorted({positive_int("m", m) for m in ms})
    blocks = positive_int("blocks", blocks)
    if len(ms) < 2 or blocks < 3:
        raise ValueError(f"need at least 2 distinct ms and 3 blocks, got ms={ms}, blocks={blocks}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    t = samples.shape[0]
    lcm = math.lcm(*ms)
    block = t // blocks // lcm * lcm
    if block == 0:
        raise ValueError(f"samples must hold at least blocks * lcm(ms) = {blocks * lcm} draws, got {t}")
    s = samples[: blocks * block].to(torch.float64).reshape(blocks * block, -1)
    s = s - s.mean(0)
    full, loo, w_full, w_loo = [], [], [], []
    for m in ms:
        gb = block // m  # groups per block
        gm = s.reshape(blocks, gb, m, -1).mean(2)  # (B, gb, E) ensemble kernels
        s1b, s2b = gm.sum(1), (gm * gm).sum(1)  # (B, E)
        s1, s2, g = s1b.sum(0), s2b.sum(0), blocks * gb
        full.append(((s2 - s1 * s1 / g) / (g - 1)).mean(-1))
        r = g - gb
        loo.append(((s2 - s2b - (s1 - s1b) ** 2 / r) / (r - 1)).mean(-1))
        w_full.append(g - 1.0)
        w_loo.append(r - 1.0)
    logm = torch.tensor(ms, dtype=torch.float64).log()
    full, loo = torch.stack(full), torch.stack(loo, -1)  # (M,), (B, M)
    slope, intercept = _slope(logm, full.log(), torch.tensor(w_full, dtype=torch.float64))
    jack, _ = _slope(logm, loo.log(), torch.tensor(w_loo, dtype=torch.float64))
    jse = lambda v: ((blocks - 1) / blocks * ((v - v.mean(0)) ** 2).sum(0)).sqrt()
    se = jse(jack).item()
    q = t_quantile((1 + level) / 2, blocks - 1)
    return dict(
        slope=slope.item(),
        intercept=intercept.item(),
        se=se,
        lo=slope.item() - q * se,
        hi=slope.item() + q * se,
        level=level,
        blocks=blocks,
        draws=blocks * block,
        m=ms,
        groups=[blocks * (block // m) for m in ms],
        var=full.tolist(),
        var_se=jse(loo).tolist(),
    )


def inverse_width_fit(widths, dev, dev_se):
    """Fit ``dev_n = c / n`` per entry over widths: the finite-width correction of the NMK (Eq. 5).

    Weighted least squares with weights ``1 / dev_se^2``: ``c = sum (dev_n / n) / se_n^2 / sum 1 / (n se_n)^2``
    and ``se(c) = (sum 1 / (n se_n)^2)^{-1/2}``.

    Args:
        widths: ``(W,)`` widths ``n``; dev: ``(W, E)`` deviations ``NMK_n - K_inf`` (any units);
        dev_se: ``(W, E)`` their standard errors.
    Returns:
        ``(c, c_se)``, float64 tensors of shape ``(E,)``.
    """
    n = torch.as_tensor(widths, dtype=torch.float64).reshape(-1, 1)
    dev, se = torch.as_tensor(dev, dtype=torch.float64), torch.as_tensor(dev_se, dtype=torch.float64)
    if dev.shape != se.shape or dev.ndim != 2 or dev.shape[0] != n.shape[0]:
        raise ValueError(
            f"dev and dev_se must both have shape (W, E) with W = {n.shape[0]} widths, "
            f"got {tuple(dev.shape)} and {tuple(se.shape)}"
        )
    if not bool((se > 0).all()):
        raise ValueError("dev_se must be > 0 everywhere")
    w = 1.0 / (n * se) ** 2
    return (w * n * dev).sum(0) / w.sum(0), w.sum(0).rsqrt()


# ------------------------------------------------------------------------------ checks of Lemma 1 and Eq. 11


def checks(variance, nmk, ens, z_max):
    """Lemma 1 and Eq. 11 checked on a run: ``[(name, holds, detail)]`` for
    :meth:`cepaper.book.results.Run.check`.

    ``variance``, ``nmk``, ``ens``: the notebook's saved results (:func:`lemma1_variance`,
    :func:`lemma1_nmk`, :func:`lemma1_surface`). Checked: the slope of ``log Var(K_e)`` on ``log m``
    has an interval that contains -1 (Eq. 11), diagonal and off-diagonal; the NMK's diagonal lies within
    ``z_max`` standard errors of ``K_inf`` at every width, and its off-diagonal at the widest net (Eq. 5);
    the ensemble of the first ``m`` members lies within ``z_max`` of its standard error
    ``sigma sqrt(1/m - 1/T)`` from the NMK of all ``T`` draws at every ``gamma`` (Lemma 1).
    """
    g = len(ens["gamma"])
    out = []
    for part, where in (("diag", "diagonal"), ("off", "off-diagonal")):
        f = variance[f"fit_{part}"]
        out.append(
            (
                f"Var(K_e) falls as 1/m (Eq. 11), {where}: the slope's {100 * f['level']:g}% interval contains -1",
                f["lo"] <= -1 <= f["hi"],
                f"slope {f['slope']:.3f}, interval [{f['lo']:.3f}, {f['hi']:.3f}]",
            )
        )
    z = (_a(nmk["mean"]) - _a(nmk["kinf"])) / _a(nmk["mean_se"])
    z_diag = np.abs(z[:, :g]).max()
    out.append(
        (
            f"the NMK's diagonal equals K_inf within {z_max:g} SE at every width (Eq. 5)",
            z_diag <= z_max,
            f"largest |z| {z_diag:.2f} over n = {', '.join(map(str, nmk['widths']))}",
        )
    )
    wide = list(nmk["widths"]).index(nmk["n_wide"])
    z_off = np.abs(z[wide, g:]).max()
    out.append(
        (
            f"the NMK's off-diagonal equals K_inf within {z_max:g} SE at the widest net (Eq. 5)",
            z_off <= z_max,
            f"largest |z| {z_off:.2f} at n = {nmk['n_wide']}",
        )
    )
    i_n = list(nmk["widths"]).index(nmk["n"])
    m, draws = len(ens["m"]), nmk["draws"][i_n]
    k_m = np.concatenate([_a(ens["diag"])[-1], _a(ens["off"])[-1]])
    z_e = np.abs(k_m - _a(nmk["mean"])[i_n]) / (_a(nmk["std"])[i_n] * np.sqrt(1 / m - 1 / draws))
    out.append(
        (
            f"K_e of the first m = {m} members lies within {z_max:g} SE of the NMK (Lemma 1)",
            z_e.max() <= z_max,
            f"largest |z| {z_e.max():.2f} against the NMK of {draws} draws",
        )
    )
    return [(name, bool(holds), detail) for name, holds, detail in out]


# ------------------------------------------------------------------------------ what the notebook runs


def draw_kernels(n_gamma, depth, n, draws, widths, width_draws, seed=0, device="cpu"):
    """The Monte Carlo behind Fig. 2: member NTKs ``K_n(theta_j)`` of Eq. 3's ReLU MLP (``depth`` hidden layers)
    at the entries of :func:`circle_inputs` (``n_gamma`` angles), and the analytic ``K_inf`` there.

    Returns a dict: ``gamma (G,)``, ``kinf (2G,)``; ``pool (draws, 2G)``, the member kernels at width ``n``
    (seed ``seed``); ``nmk``, ``{width: moments}`` at ``n`` (of the pool) and at every width of ``widths``
    (``width_draws`` draws each, seeds ``seed + 1, ...``); ``n``."""
    from cepaper import kernels, montecarlo

    gamma, x, entries = circle_inputs(n_gamma)
    kinf = kernels.relu_ntk(x, depth=depth)[entries]
    sampler = montecarlo.mlp_ntk_sampler(x, widths=n, depth=depth, entries=entries)
    pool = montecarlo.mc_samples(sampler, draws, seed=seed, device=device).cpu()
    nmk = {n: moments(pool)}
    for i, (w, d) in enumerate(zip(widths, width_draws)):
        sampler = montecarlo.mlp_ntk_sampler(x, widths=w, depth=depth, entries=entries)
        nmk[w] = montecarlo.mc_moments(sampler, d, seed=seed + 1 + i, device=device).cpu()
    return dict(gamma=gamma, kinf=kinf, pool=pool, nmk=nmk, n=n)


def save(run, drawn, depth, m_max, ms, blocks=16, level=0.95):
    """Save on ``run`` what the page draws from the :func:`draw_kernels` result ``drawn``: the running ensemble
    of the first ``m_max`` members (``ensemble``, Fig. 2a), the NMK at every width with the fit
    ``NMK_n - K_inf = c / n`` relative to ``K_inf(x, x)`` (``nmk``, Fig. 2b, :func:`inverse_width_fit`), and the
    slope of ``Var(K_e)`` over the multiplicities ``ms`` with its jackknife interval (``variance``, Eq. 11)."""
    import pandas as pd

    gamma, kinf, pool, nmk, n = (drawn[k] for k in ("gamma", "kinf", "pool", "nmk", "n"))
    g, ws = len(gamma), sorted(nmk)
    k_e = running_ensemble(pool[:m_max])  # (m_max, 2G), row m-1 is K_e(m)
    ens = dict(gamma=gamma, m=np.arange(1, m_max + 1), diag=k_e[:, :g], off=k_e[:, g:], depth=depth, n=n)
    run.save("ensemble", dict(ens, kinf_diag=kinf[:g], kinf_off=kinf[g:]))
    ref = kinf[:g].mean()  # K_inf(x, x), the same for every unit x
    mean, mean_se = torch.stack([nmk[w].mean for w in ws]), torch.stack([nmk[w].mean_se for w in ws])
    c, c_se = inverse_width_fit(ws, (mean - kinf) / ref, mean_se / ref)
    saved = dict(gamma=gamma, widths=ws, draws=[nmk[w].draws for w in ws], n=n, n_wide=max(w for w in ws if w != n))
    std = torch.stack([nmk[w].var.sqrt() for w in ws])
    saved.update(mean=mean, mean_se=mean_se, std=std, kinf=kinf, ref=ref, c=c, c_se=c_se)
    run.save("nmk", saved, table=pd.DataFrame(nmk_rows(saved)))
    parts = {"diag": pool[:, :g], "off": pool[:, g:]}
    fits = {f"fit_{part}": variance_slope(k, ms, blocks=blocks, level=level) for part, k in parts.items()}
    run.save("variance", fits, table=pd.DataFrame(variance_rows(fits)))


def check(run, z_max):
    """Record :func:`checks` on ``run``, from its saved ``variance``, ``nmk`` and ``ensemble``."""
    for name, holds, detail in checks(run.load("variance"), run.load("nmk"), run.load("ensemble"), z_max):
        run.check(name, holds, detail)
