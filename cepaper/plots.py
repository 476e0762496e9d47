"""One function per figure of the paper, drawn from saved results (dicts from ``results.Run.load``).

Every function takes the ``data`` dicts a notebook saved and returns a ``matplotlib`` Figure; none
computes anything the notebook did not save.
"""

import numpy as np
import matplotlib.pyplot as plt

PARTS = (("diag", r"diagonal $K[x_\gamma, x_\gamma]$"), ("off", r"off-diagonal $K[x_0, x_\gamma]$"))


def _a(x):
    return np.asarray(x, dtype=float)


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
        ax.plot(gamma, np.full_like(gamma, np.log2(m[-1])), _a(ens[f"kinf_{part}"]), "k-", lw=1.5,
                label=r"$K^\infty$")
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
    for ax, (j, (part, title)) in zip(axes, enumerate(PARTS)):
        sl = slice(j * g, (j + 1) * g)
        ax.fill_between(gamma, (mean[i_n] - std[i_n])[sl], (mean[i_n] + std[i_n])[sl], color="C0",
                        alpha=0.12, lw=0, label=f"one member, n = {nmk['n']} (±1 std)")
        for i, c in ((i_n, "C0"), (i_w, "C1")):
            ax.errorbar(gamma, mean[i][sl], yerr=2 * se[i][sl], fmt="o", ms=2.5, color=c, elinewidth=1,
                        label=f"NMK, n = {widths[i]} ({nmk['draws'][i]} draws, ±2 SE)")
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
    :func:`cepaper.ntk.variance_slope` (``m``, ``var``, ``var_se``, ``slope``, ``lo``, ``hi``, ...).
    """
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for j, (part, title) in enumerate(PARTS):
        f = var[f"fit_{part}"]
        m, v, se = _a(f["m"]), _a(f["var"]), _a(f["var_se"])
        ax.errorbar(m, v, yerr=2 * se, fmt="o", color=f"C{j}", ms=4,
                    label=f"{title.split(' ')[0]}: slope {f['slope']:.3f} "
                          f"[{f['lo']:.3f}, {f['hi']:.3f}]")
        ax.plot(m, np.exp(f["intercept"]) * m ** f["slope"], "-", color=f"C{j}", lw=1)
        ax.plot(m, v[0] * m[0] / m, "k:", lw=1)
    ax.plot([], [], "k:", label=r"$\mathrm{Var}(K_n)/m$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("multiplicity m")
    ax.set_ylabel(r"$\mathrm{Var}(K_e)$, mean over $\gamma$")
    ax.set_title(f"Eq. 11: Var(K_e) ~ 1/m (±2 jackknife SE, {var['fit_diag']['level']:.0%} interval)",
                 fontsize=10)
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
    rms = lambda a: np.sqrt((a ** 2).mean(-1))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for j, (part, title) in enumerate(PARTS):
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
    bx.set_title(f"finite-width correction of the NMK (±2 SE), widths {', '.join(str(int(w)) for w in widths)}",
                 fontsize=9)
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ Fig. 4 (Sec. 4.1)

CURVE_TITLES = {"primal": "primal: fixed $\\beta_e$", "dual": "dual: fixed Var$(K_e)$"}


def fig4(summary):
    """Fig. 4: mean test error (±1 SE over repetitions, blue, labelled with the multiplicity ``m``)
    against the member width ``n``, with the theoretical ``Var(K_e)`` (a, b) and the parameter count
    ``beta_e`` (c, d) on twin log axes, each shared by the primal and the dual panel so that the
    quantity a curve holds fixed looks flat against the one it moves.

    ``summary``: rows of :func:`cepaper.ablation.summary` with ``curve, n, m, error, sem, var, params``.
    """
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 7.4))
    for i, (col, label, color) in enumerate(((r"var", r"Var$(K_e)$ (Eq. 11, up to $C$)", "C3"),
                                             ("params", r"$\beta_e$ (parameters)", "C2"))):
        lo, hi = summary[col].min(), summary[col].max()
        for j, curve in enumerate(("primal", "dual")):
            s = summary[summary.curve == curve].sort_values("n")
            ax = axes[i, j]
            ax.errorbar(s.n, 100 * s.error, yerr=100 * s["sem"], fmt="o-", color="C0", capsize=3, ms=4)
            ax.set_ylabel("test error (%)", color="C0")
            ax.set_xlabel("member width n")
            ax.set_title(f"({'abcd'[2 * i + j]}) {CURVE_TITLES[curve]}", fontsize=10)
            tw = ax.twinx()
            tw.plot(s.n, s[col], "s--", color=color, ms=4)
            tw.set_yscale("log")
            tw.set_ylim(lo / 1.6, hi * 1.6)
            tw.set_ylabel(label, color=color)
            ax.set_xscale("log")
            ax.set_xticks(list(s.n), [str(v) for v in s.n])
            ax.xaxis.set_minor_locator(plt.NullLocator())
            for n, m, e in zip(s.n, s.m, s.error):
                ax.annotate(f"m={m}", (n, 100 * e), textcoords="offset points", xytext=(3, 5), fontsize=7,
                            color="C0")
    fig.tight_layout()
    return fig


def fig4_learning(curves, summary):
    """Test error (mean over repetitions) against the epoch for every model, one panel per curve,
    coloured by ``n``. ``curves``: :func:`cepaper.ablation.learning_curves`; ``summary`` as :func:`fig4`."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, curve in zip(axes, ("primal", "dual")):
        s = summary[summary.curve == curve].sort_values("n")
        cmap = plt.get_cmap("viridis")
        for k, (m, n) in enumerate(zip(s.m, s.n)):
            c = curves[(curves.m == m) & (curves.n == n) & (curves.epoch > 0)]
            ax.plot(c.epoch, 100 * c.error, "o-", ms=3, color=cmap(k / max(1, len(s) - 1)), label=f"{m}x{n}")
        ax.set(xlabel="epoch", title=CURVE_TITLES[curve])
        ax.legend(fontsize=7, ncol=2, title="m x n", title_fontsize=7)
    axes[0].set_ylabel("test error (%)")
    fig.tight_layout()
    return fig
