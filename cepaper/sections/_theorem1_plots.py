"""The figures of notebook ``02_theorem1`` (Fig. 9, the slopes in mn, the trajectories), drawn from saved
results only; :mod:`cepaper.sections.theorem1` exposes them."""

import numpy as np
import pandas as pd

COLORS = {"baseline": "tab:red", "ensemble": "tab:blue"}


def plot_fig9(points, axes=None, ylabel=r"$|K_T - K_0|$"):
    """Fig. 9 (a)-(c): mean ``|Delta K|`` over seeds with standard-error bars, log-log.

    Args:
        points: :func:`~cepaper.sections.theorem1.panel_table` output (one entry), or its saved dict of columns.
        axes: three matplotlib axes or ``None``.
    Returns:
        the figure.
    """
    import matplotlib.pyplot as plt

    points = pd.DataFrame(points)
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    a = points[points.panel == "a"].sort_values("n")
    axes[0].errorbar(a.n, a["mean"], yerr=a["sem"], fmt="o-", color=COLORS["baseline"], capsize=3, label="m = 1")
    axes[0].set(xlabel="width n", ylabel=ylabel, title="(a) single model")
    for ax, panel, title in (
        (axes[1], "b", "(b) ensemble m = n = d vs n = d$^2$"),
        (axes[2], "c", "(c) ensemble of constant width vs n = d$^2$"),
    ):
        p = points[points.panel == panel].sort_values("d")
        for role, q in p.groupby("role"):
            if panel == "b":
                label = "m = 1, n = d$^2$" if role == "baseline" else "m = n = d"
            else:
                label = "m = 1, n = d$^2$" if role == "baseline" else f"n = {q.n.iloc[0]}, m matched"
            ax.errorbar(
                q.d,
                q["mean"],
                yerr=q["sem"],
                fmt="o-" if role == "baseline" else "s--",
                color=COLORS[role],
                capsize=3,
                label=label,
            )
        if panel == "c":
            for d, m, v in zip(p[p.role == "ensemble"].d, p[p.role == "ensemble"].m, p[p.role == "ensemble"]["mean"]):
                ax.annotate(
                    f"m={m}", (d, v), textcoords="offset points", xytext=(4, -12), fontsize=8, color=COLORS["ensemble"]
                )
        ax.set(xlabel="d", title=title)
    _log_ticks(axes[0], a.n)
    for ax in axes[1:]:
        _log_ticks(ax, points[points.panel != "a"].d.dropna())
    for ax in axes:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig = axes[0].figure
    fig.tight_layout()
    return fig


def _log_ticks(ax, xs):
    """Log-scale x axis labelled at the values ``xs`` (plain numbers, no minor labels)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(sorted({int(v) for v in xs}))
    ax.set_xticklabels([str(int(v)) for v in sorted({int(v) for v in xs})])
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_slopes(change, fits, entries=("offdiag", "offdiag_mean"), exponent=-1.0):
    """Every run's ``|Delta K|`` against ``mn`` (log-log), one panel per entry, with the line fitted
    by :func:`~cepaper.sections.theorem1.slopes` (fit ``all``) and a reference line of slope ``exponent`` (Theorem
    1: -1).
    ``change``, ``fits``: DataFrames or their saved dicts of columns."""
    import matplotlib.pyplot as plt

    change, fits = pd.DataFrame(change), pd.DataFrame(fits)
    fig, axes = plt.subplots(1, len(entries), figsize=(5 * len(entries), 3.8), squeeze=False)
    for ax, entry in zip(axes[0], entries):
        c = change[change.entry == entry]
        for single, q in c.groupby(c.m == 1):
            ax.scatter(
                q.mn,
                q.abs_change,
                s=12,
                alpha=0.6,
                color=COLORS["baseline" if single else "ensemble"],
                label="single models" if single else "ensembles (m > 1)",
            )
        f = fits[(fits.fit == "all") & (fits.entry == entry) & (fits.value == "abs_change")].iloc[0]
        xs = np.geomspace(c.mn.min(), c.mn.max(), 50)
        ax.plot(xs, np.exp(f.intercept) * xs**f.slope, "k-", label=f"fit: slope {f.slope:.2f} [{f.lo:.2f}, {f.hi:.2f}]")
        ref = np.exp(np.log(c.abs_change).mean()) * (xs / np.exp(np.log(c.mn).mean())) ** exponent
        ax.plot(xs, ref, "k:", label=f"slope {exponent:g} (Theorem 1)")
        ax.set(yscale="log", xlabel="mn", ylabel=r"$|K_T - K_0|$", title=entry)
        _log_ticks(ax, [v for v in sorted(c.mn.unique())][::2])
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_trajectories(traj, configs, entry, ax=None):
    """``|K_t - K_0|`` of ``entry`` (mean over seeds) along training for the pairs of panel (b):
    single models ``n = d^2`` (solid) and ensembles ``m = n = d`` (dashed), one colour per ``d``.
    ``traj``, ``configs``: DataFrames or their saved dicts of columns."""
    import matplotlib.pyplot as plt

    traj, configs = pd.DataFrame(traj), pd.DataFrame(configs)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.8))
    b = configs[configs.panel == "b"]
    t = traj[(traj.entry == entry) & (traj.epoch > 0)].groupby(["m", "n", "epoch"]).abs_change.mean().reset_index()
    cmap = plt.get_cmap("viridis")
    ds = sorted(b.d.unique())
    for k, d in enumerate(ds):
        for role, style in (("baseline", "-"), ("ensemble", "--")):
            row = b[(b.d == d) & (b.role == role)].iloc[0]
            q = t[(t.m == row.m) & (t.n == row.n)]
            ax.plot(
                q.epoch,
                q.abs_change,
                style,
                color=cmap(k / max(1, len(ds) - 1)),
                label=f"d = {int(d)}" if role == "baseline" else None,
            )
    ax.plot([], [], "k-", label="m = 1, n = d$^2$")
    ax.plot([], [], "k--", label="m = n = d")
    ax.set(yscale="log", xlabel="epoch t", ylabel=r"$|K_t - K_0|$", title=f"{entry}, panel (b) pairs")
    ax.legend(fontsize=7, ncol=2)
    return ax.figure
