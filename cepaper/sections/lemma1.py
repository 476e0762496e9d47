"""Sec. 2, Lemma 1 (notebook ``01_lemma1``): the ensemble NTK converges to the NMK, its variance falls as 1/m.

The analysis (:func:`circle_inputs`, :func:`running_ensemble`, :func:`ensemble_variance`,
:func:`variance_slope`, :func:`inverse_width_fit`) works on Monte Carlo draws of member NTKs
(:mod:`cepaper.montecarlo`); the figures (Fig. 2) take the ``data`` dicts the notebook saved and
return a ``matplotlib`` Figure, computing nothing the notebook did not save.
"""

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from cepaper._checks import positive_float, positive_int
from cepaper.montecarlo import moments
from cepaper.stats import t_quantile

PARTS = (("diag", r"diagonal $K[x_\gamma, x_\gamma]$"), ("off", r"off-diagonal $K[x_0, x_\gamma]$"))


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


# ------------------------------------------------------------------------------ Fig. 2 (Lemma 1)


def lemma1_surface(ens):
    """Fig. 2(a): the ensemble NTK ``K_e`` (Eq. 4) over ``gamma`` and ``m``, diagonal and off-diagonal.

    ``ens``: the ``ensemble`` result of the lemma1 notebook, with ``gamma (G,)``, ``m (M,)``,
    running ensemble kernels ``diag``/``off (M, G)`` and the analytic ``kinf_diag``/``kinf_off (G,)``.
    The surface smooths as ``m`` grows (Lemma 1, Eq. 6).
    """
    gamma, m = _a(ens["gamma"]), _a(ens["m"])
    gg, mm = np.meshgrid(gamma, np.log2(m))
    fig = plt.figure(figsize=(11, 4.4))
    for i, (part, title) in enumerate(PARTS):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        ax.plot_surface(gg, mm, _a(ens[part]), cmap="viridis", linewidth=0, antialiased=True, alpha=0.9)
        ax.plot(gamma, np.full_like(gamma, np.log2(m[-1])), _a(ens[f"kinf_{part}"]), "k-", lw=1.5, label=r"$K^\infty$")
        ax.set_xlabel(r"$\gamma$")
        ax.set_ylabel(r"$\log_2 m$")
        ax.set_zlabel(r"$K_e$")
        ax.set_title(f"(a) {title}", fontsize=10)
        ax.view_init(elev=28, azim=-60)
    fig.suptitle(f"Ensemble NTK of the first m members (L = {ens['depth']}, n = {ens['n']})")
    fig.tight_layout()
    return fig


def lemma1_nmk(nmk):
    """Fig. 2(b): the NMK (Eq. 5, Monte Carlo mean +- 2 SE) at width ``n`` and at a wider net vs ``K_inf``.

    ``nmk``: the ``nmk`` result, with ``gamma``, ``widths (W,)``, ``draws``, ``mean``/``mean_se``/
    ``std (W, 2G)`` (diagonal entries first), ``kinf (2G,)``, ``n`` and ``n_wide``. The light band is the
    spread (+- 1 std) of single members at width ``n``.
    """
    gamma, widths = _a(nmk["gamma"]), list(nmk["widths"])
    g = len(gamma)
    mean, se, std, kinf = _a(nmk["mean"]), _a(nmk["mean_se"]), _a(nmk["std"]), _a(nmk["kinf"])
    i_n, i_w = widths.index(nmk["n"]), widths.index(nmk["n_wide"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (j, (_, title)) in zip(axes, enumerate(PARTS)):
        sl = slice(j * g, (j + 1) * g)
        ax.fill_between(
            gamma,
            (mean[i_n] - std[i_n])[sl],
            (mean[i_n] + std[i_n])[sl],
            color="C0",
            alpha=0.12,
            lw=0,
            label=f"one member, n = {nmk['n']} (±1 std)",
        )
        for i, c in ((i_n, "C0"), (i_w, "C1")):
            ax.errorbar(
                gamma,
                mean[i][sl],
                yerr=2 * se[i][sl],
                fmt="o",
                ms=2.5,
                color=c,
                elinewidth=1,
                label=f"NMK, n = {widths[i]} ({nmk['draws'][i]} draws, ±2 SE)",
            )
        ax.plot(gamma, kinf[sl], "k-", lw=1.2, label=r"$K^\infty$ (analytic)")
        ax.set_xlabel(r"$\gamma$")
        ax.set_title(f"(b) {title}", fontsize=10)
    axes[0].set_ylabel("NTK")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def lemma1_variance(var):
    """``Var(K_e)`` against ``m`` on log axes, the ``1/m`` law (Eq. 11) and the fitted slope.

    ``var``: the ``variance`` result, with ``fit_diag``/``fit_off`` dicts from
    :func:`cepaper.sections.lemma1.variance_slope` (``m``, ``var``, ``var_se``, ``slope``, ``lo``, ``hi``, ...).
    """
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for j, (part, title) in enumerate(PARTS):
        f = var[f"fit_{part}"]
        m, v, se = _a(f["m"]), _a(f["var"]), _a(f["var_se"])
        ax.errorbar(
            m,
            v,
            yerr=2 * se,
            fmt="o",
            color=f"C{j}",
            ms=4,
            label=f"{title.split(' ')[0]}: slope {f['slope']:.3f} [{f['lo']:.3f}, {f['hi']:.3f}]",
        )
        ax.plot(m, np.exp(f["intercept"]) * m ** f["slope"], "-", color=f"C{j}", lw=1)
        ax.plot(m, v[0] * m[0] / m, "k:", lw=1)
    ax.plot([], [], "k:", label=r"$\mathrm{Var}(K_n)/m$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("multiplicity m")
    ax.set_ylabel(r"$\mathrm{Var}(K_e)$, mean over $\gamma$")
    ax.set_title(f"Eq. 11: Var(K_e) ~ 1/m (±2 jackknife SE, {var['fit_diag']['level']:.0%} interval)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lemma1_width(nmk):
    """The NMK's dependence on the width ``n``: deviations from ``K_inf`` and their ``c / n`` fit.

    Left: the RMS over ``gamma`` of ``(NMK_n - K_inf) / K_inf(x, x)`` against ``n`` (log axes), beside
    the RMS of its standard error (the Monte Carlo noise floor, dashed) and the fitted ``RMS(c) / n``
    (dotted). Right: the coefficient ``c(gamma)`` of the fit ``NMK_n - K_inf = c / n`` (+- 2 SE).
    ``nmk`` as in :func:`lemma1_nmk`, plus ``ref`` (``K_inf(x, x)``), ``c`` and ``c_se`` (2G,).
    """
    gamma, widths = _a(nmk["gamma"]), _a(nmk["widths"])
    g = len(gamma)
    mean, se, kinf, ref = _a(nmk["mean"]), _a(nmk["mean_se"]), _a(nmk["kinf"]), float(nmk["ref"])
    c, c_se = _a(nmk["c"]), _a(nmk["c_se"])
    dev, dse = (mean - kinf) / ref, se / ref
    rms = lambda a: np.sqrt((a**2).mean(-1))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for j, (_, title) in enumerate(PARTS):
        sl = slice(j * g, (j + 1) * g)
        ax.plot(widths, rms(dev[:, sl]), "o-", color=f"C{j}", ms=4, label=f"{title}")
        ax.plot(widths, rms(dse[:, sl]), "--", color=f"C{j}", lw=1, label="  its Monte Carlo SE")
        ax.plot(widths, rms(c[sl]) / widths, ":", color=f"C{j}", lw=1.2, label="  fit c/n")
        bx.plot(gamma, c[sl], "-", color=f"C{j}", lw=1.2, label=title)
        bx.fill_between(gamma, c[sl] - 2 * c_se[sl], c[sl] + 2 * c_se[sl], color=f"C{j}", alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel(r"RMS$_\gamma\,(K_n^\infty - K^\infty) / K^\infty(x, x)$")
    ax.legend(fontsize=7)
    bx.axhline(0, color="k", lw=0.8)
    bx.set_xlabel(r"$\gamma$")
    bx.set_ylabel(r"$c(\gamma)$ in $K_n^\infty - K^\infty \approx c / n$ (units of $K^\infty(x,x)$)")
    bx.set_title(
        f"finite-width correction of the NMK (±2 SE), widths {', '.join(str(int(w)) for w in widths)}", fontsize=9
    )
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ Fig. 4 (Sec. 4.1)


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
