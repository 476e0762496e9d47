"""The figures of notebook ``05_mnist`` (Fig. 4 and the learning curves), drawn from saved results only;
:mod:`cepaper.sections.mnist` exposes them."""

import matplotlib.pyplot as plt
import pandas as pd

CURVE_TITLES = {"primal": "primal: fixed $\\beta_e$", "dual": "dual: fixed Var$(K_e)$"}


def fig4(summary):
    """Fig. 4: mean test error (±1 SE over repetitions, blue, labelled with the multiplicity ``m``)
    against the member width ``n``, with the theoretical ``Var(K_e)`` (a, b) and the parameter count
    ``beta_e`` (c, d) on twin log axes, each shared by the primal and the dual panel so that the
    quantity a curve holds fixed looks flat against the one it moves.

    ``summary``: rows of :func:`cepaper.sections.mnist.summary` with ``curve, n, m, error, sem, var, params``.
    """
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 7.4))
    for i, (col, label, color) in enumerate(
        ((r"var", r"Var$(K_e)$ (Eq. 11, up to $C$)", "C3"), ("params", r"$\beta_e$ (parameters)", "C2"))
    ):
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
                ax.annotate(f"m={m}", (n, 100 * e), textcoords="offset points", xytext=(3, 5), fontsize=7, color="C0")
    fig.tight_layout()
    return fig


def fig4_learning(curves, summary):
    """Test error (mean over repetitions) against the epoch for every model, one panel per curve,
    coloured by ``n``. ``curves``: :func:`cepaper.sections.mnist.learning_curves` (or its saved rows);
    ``summary`` as :func:`fig4`."""
    curves = pd.DataFrame(curves)
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
