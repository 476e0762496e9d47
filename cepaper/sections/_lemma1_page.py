"""What notebook ``01_lemma1`` shows, from saved results only: Fig. 2 and the width study's figure, the
tables and the sentence whose numbers depend on the results; :mod:`cepaper.sections.lemma1` exposes them."""

import matplotlib.pyplot as plt
import numpy as np

from cepaper.sections import paper

PARTS = (("diag", r"diagonal $K[x_\gamma, x_\gamma]$"), ("off", r"off-diagonal $K[x_0, x_\gamma]$"))


def _a(x):
    return np.asarray(x, dtype=float)


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


# ------------------------------------------------------------------------------ tables and sentences


def setup_table(depth, n, m_max, ms, widths):
    """The scale of this run beside Fig. 2's (``paper.FIG2``): rows of depth ``L``, width ``n``, the wide
    net and the multiplicities."""
    return [
        dict(
            source="paper (Fig. 2)",
            L=paper.FIG2["depth"],
            n=paper.FIG2["width"],
            wide=f"x{paper.FIG2['wide_factor']} net",
            m="not printed",
        ),
        dict(
            source="this run",
            L=depth,
            n=n,
            wide=f"n = {max(widths)} and analytic K_inf",
            m=f"1..{m_max} (a), {min(ms)}..{max(ms)} (fit)",
        ),
    ]


def variance_rows(variance):
    """The slope of ``log Var(K_e)`` on ``log m`` (Eq. 11) and its jackknife interval, one row per part
    (``diag``, ``off``) of the saved ``variance`` result."""
    keys = ("slope", "se", "lo", "hi", "level", "blocks", "draws")
    return [{"entries": part, **{k: variance[f"fit_{part}"][k] for k in keys}} for part, _ in PARTS]


def nmk_rows(nmk):
    """One row per width of the saved ``nmk`` result: the largest ``|z|`` of the NMK against ``K_inf``,
    diagonal and off-diagonal (Eq. 5), and the largest off-diagonal deviation and standard error, relative
    to ``K_inf(x, x)``."""
    g = len(nmk["gamma"])
    mean, se, kinf = _a(nmk["mean"]), _a(nmk["mean_se"]), _a(nmk["kinf"])
    ref = kinf[:g].mean()
    z = np.abs(mean - kinf) / se
    return [
        dict(
            n=w,
            draws=d,
            max_z_diag=float(z[i, :g].max()),
            max_z_off=float(z[i, g:].max()),
            max_dev_off=float(np.abs(mean[i] - kinf)[g:].max() / ref),
            se_off=float(se[i, g:].max() / ref),
        )
        for i, (w, d) in enumerate(zip(nmk["widths"], nmk["draws"]))
    ]


def width_sentence(nmk):
    """Markdown: the largest off-diagonal coefficient ``c`` of ``NMK_n - K_inf = c / n`` (saved ``nmk``),
    and the correction it makes at this run's width and at the paper's ``n = 1000``."""
    from cepaper.sections._shared import markdown

    g, n, n_paper = len(nmk["gamma"]), nmk["n"], paper.FIG2["width"]
    c, c_se = _a(nmk["c"])[g:], _a(nmk["c_se"])[g:]
    k = int(np.abs(c).argmax())
    return markdown(
        f"Largest off-diagonal coefficient: c = {c[k]:.3f} ± {c_se[k]:.3f} (at γ = {nmk['gamma'][k]:.2f}), i.e. a "
        f"correction of {100 * abs(c[k]) / n:.3f}% of K∞(x, x) at n = {n} and {100 * abs(c[k]) / n_paper:.3f}% at "
        f"the paper's n = {n_paper}."
    )
