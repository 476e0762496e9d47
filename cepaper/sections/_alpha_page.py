"""What notebook ``03_alpha`` shows, from saved results only: the figures (Fig. 8 and what alpha depends
on), its tables and the sentences whose words depend on the results; :mod:`cepaper.sections.alpha` exposes
them."""

import numpy as np

from cepaper.alpha import fit, sweeps
from cepaper.sections import paper, primal_dual
from cepaper.sections._shared import markdown


def _arr(x):
    return np.array(x, dtype=float)


def plot_fig8(result, entry="diag", axes=None, label=None, paper_alpha=None):
    """Fig. 8: Monte Carlo ``E[K^2]/E[K]^2`` with bootstrap intervals and the fitted ``exp(a + alpha s)``.

    Left: ``log r`` against ``s = sum_l 1/fan-in_l`` (the straight line of Eq. 9); right: ``r`` against
    the width ``n`` (log axis), as in the paper's figure. ``result`` is a saved :func:`fit.measure_alpha`
    dict; ``paper_alpha`` adds ``exp(paper_alpha s)`` for comparison.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    f = result["fits"][entry]
    s, y = _arr(f["term"]), _arr(f["log_ratio"])
    lo, hi = _arr(f["log_ratio_lo"]), _arr(f["log_ratio_hi"])
    n = _arr(result["widths"])
    fitted = np.exp(f["intercept"] + f["alpha"] * s)
    name = label or f"{result['module']}, {entry}"
    a_lo, a_hi = f["alpha_ci"]
    fit_label = f"fit: alpha = {f['alpha']:.2f} [{a_lo:.2f}, {a_hi:.2f}]"
    ax = axes[0]
    ax.errorbar(s, y, yerr=[y - lo, hi - y], fmt="o", ms=4, capsize=2, label=f"Monte Carlo, T = {result['trials']}")
    grid = np.linspace(0, s.max() * 1.02, 200)
    ax.plot(grid, f["intercept"] + f["alpha"] * grid, "r-", label=fit_label)
    if paper_alpha is not None:
        ax.plot(grid, paper_alpha * grid, "k--", lw=1, label=f"paper: alpha = {paper_alpha:.2f}")
    ax.set_xlabel(r"$s(n) = \sum_l 1/\mathrm{fan\text{-}in}_l$")
    ax.set_ylabel(r"$\log\, E[K^2] / E[K]^2$")
    ax.set_title(f"{name}: Eq. 9 in log space")
    ax.legend(fontsize=8)
    ax = axes[1]
    r, rlo, rhi = np.exp(y), np.exp(lo), np.exp(hi)
    ax.errorbar(n, r, yerr=[r - rlo, rhi - r], fmt="o", ms=4, capsize=2, label="Monte Carlo")
    ax.plot(n, fitted, "r-", label=fit_label)
    if paper_alpha is not None:
        ax.plot(n, np.exp(paper_alpha * s), "k--", lw=1, label=f"paper: alpha = {paper_alpha:.2f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel(r"$E[K^2] / E[K]^2$")
    ax.set_title(f"{name}: Fig. 8")
    ax.legend(fontsize=8)
    return axes


def plot_fit_options(rows, ax=None, paper_alpha=None, title="alpha by fit choice"):
    """Alpha and its interval for each fit choice (:func:`~cepaper.sections.alpha.fit_option_rows`), beside the
    paper's alpha."""
    return _interval_plot([r["fit"] for r in rows], rows, ax, paper_alpha, title)


def plot_effects(rows, entry="diag", ax=None, paper_alpha=None, large=False, title=None):
    """Alpha of each scalar-function variant (:func:`~cepaper.sections.alpha.effect_rows`) for one entry, with
    intervals."""
    rows = [r for r in rows if r["entry"] == entry]
    key = "_large" if large else ""
    view = [{"alpha": r["alpha" + key], "lo": r["lo" + key], "hi": r["hi" + key]} for r in rows]
    what = f"widths n >= {rows[0]['n_large']}" if large and rows else "all widths"
    return _interval_plot(
        [r["label"] for r in rows], view, ax, paper_alpha, title or f"alpha by scalar function ({entry} entry, {what})"
    )


def _interval_plot(labels, rows, ax, paper_alpha, title):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    a = _arr([r["alpha"] for r in rows])
    lo, hi = _arr([r["lo"] for r in rows]), _arr([r["hi"] for r in rows])
    ax.errorbar(a, y, xerr=[a - lo, hi - a], fmt="o", capsize=3)
    if paper_alpha is not None:
        ax.axvline(paper_alpha, color="k", ls="--", lw=1, label=f"paper: {paper_alpha:.2f}")
        ax.legend(fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("alpha (95% bootstrap interval)")
    ax.set_title(title)
    return ax


def plot_design_intervals(rows, alpha, alpha_ci, ax=None, paper_alpha=None):
    """For each design problem, the alpha intervals of each optimum
    (:func:`~cepaper.sections.alpha.optimum_interval_rows`),
    with our alpha and its interval (band) and the paper's alpha (dashed)."""
    import matplotlib
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.6 * len(problems) + 1.5))
    for i, p in enumerate(problems[::-1]):
        for r in (r for r in rows if r["problem"] == p):
            paper_hit = r["config"] == r["paper_config"]
            ax.plot(
                [r["alpha_min"], r["alpha_max"]],
                [i, i],
                lw=6 if paper_hit else 3,
                color="tab:green" if paper_hit else "tab:gray",
                solid_capstyle="butt",
            )
            if r["alpha_max"] > r["alpha_min"] * 1.15 or paper_hit:
                ax.text(np.sqrt(r["alpha_min"] * r["alpha_max"]), i + 0.18, r["config"], ha="center", fontsize=7)
    ax.axvspan(*alpha_ci, color="tab:red", alpha=0.15)
    ax.axvline(alpha, color="tab:red", label=f"ours: {alpha:.2f} [{alpha_ci[0]:.2f}, {alpha_ci[1]:.2f}]")
    if paper_alpha is not None:
        ax.axvline(paper_alpha, color="k", ls="--", lw=1, label=f"paper: {paper_alpha:.2f}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([0.5, 1, 1.6, 2, 3, 4])
    ax.set_yticks(range(len(problems)))
    ax.set_yticklabels(problems[::-1], fontsize=8)
    ax.set_xlabel("alpha")
    ax.set_title("optimal module as a function of alpha (green: the paper's optimum)")
    ax.legend(fontsize=8, loc="lower right")
    return ax


def fit_rows(result, extra=True):
    """One row per entry (diag, offdiag) of a saved fit: alpha, its interval and, with ``extra``, the
    intercept ``a``, ``C``, the number of widths and the draws per width."""
    rows = []
    for entry, f in result["fits"].items():
        row = {
            "entry": entry,
            "alpha": f["alpha"],
            "lo": f["alpha_ci"][0],
            "hi": f["alpha_ci"][1],
            "intercept a": f["intercept"],
        }
        if extra:
            row |= {"C": f["C"], "widths": len(f["widths"]), "trials": f["trials"][0]}
        rows.append(row)
    return rows


def fig8_sentence(result, paper_alpha=paper.ALPHA_BOTTLENECK):
    """Markdown: our alpha and interval, whether the paper's value is inside it, and whether the draws'
    tail index of ``K^2`` lets the interval be read as it is (:data:`fit.KHAT_MAX`)."""
    lo, hi = result["alpha_ci"]
    diag = result["fits"]["diag"]
    khat = [k for k in diag["tail_khat"] if k is not None]
    where = (
        "inside this interval"
        if lo <= paper_alpha <= hi
        else f"**outside** it ({'below' if paper_alpha < lo else 'above'})"
    )
    if diag["heavy_tail_widths"]:
        tail = f"widths {diag['heavy_tail_widths']} exceed {fit.KHAT_MAX}, so the interval is too narrow there."
    else:
        tail = f"none exceeds {fit.KHAT_MAX}, so the interval can be read as it is."
    widths = result["widths"]
    return markdown(
        f"**Our α = {result['alpha']:.3f}**, 95% interval [{lo:.3f}, {hi:.3f}] (diagonal entry, {len(widths)} widths "
        f"from {min(widths)} to {max(widths)}, T = {result['trials']}); the paper's {paper_alpha:.2f} is {where}. "
        f"The draws' tail index of K² is at most {max(khat, default=float('nan')):.2f} over the widths; {tail}"
    )


def slope_table(result, most=16):
    """The local slope ``d log r / d s`` of the diagonal entry between neighbouring widths, at no more
    than ``most`` log-spaced widths of the saved fit ``result``."""
    f, widths = result["fits"]["diag"], result["widths"]
    sel = [widths.index(n) for n in sweeps.log_grid(1, max(widths), min(most, len(widths))) if n in widths]
    s, y = np.array(f["term"], dtype=float)[sel], np.array(f["log_ratio"], dtype=float)[sel]
    return {
        "n from": [widths[j] for j in sel[:-1]],
        "n to": [widths[j] for j in sel[1:]],
        "local slope d log r / d s": np.diff(y) / np.diff(s),
    }


def mlp_sentence(result, option_rows):
    """Markdown: Algorithm 1 on the MLP over all widths, over ``n >= 8`` (and ``n >= 24`` where fitted),
    against the alpha that reproduces Fig. 3's optimum, and the widths whose draws are heavy-tailed."""
    opts = {r["fit"]: r for r in option_rows}
    fig3_alpha, fig3_source = primal_dual.fig3_alpha()
    parts = [
        f"over all {opts['paper: intercept, unweighted, all widths']['widths']} widths it gives",
        f"over the {opts['widths n >= 8']['widths']} widths n ≥ 8,",
    ]
    fits = [opts["paper: intercept, unweighted, all widths"], opts["widths n >= 8"]]
    if "widths n >= 24" in opts:
        parts.append(f"over the {opts['widths n >= 24']['widths']} widths n ≥ 24,")
        fits.append(opts["widths n >= 24"])
    said = "; ".join(f"{p} α = {r['alpha']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]" for p, r in zip(parts, fits))
    heavy = result["fits"]["diag"]["heavy_tail_widths"]
    tail = (
        f" The intervals are too narrow at the narrow widths: the draws at n = {', '.join(map(str, heavy))} have a "
        f"tail index of K² above {fit.KHAT_MAX} (a deep ReLU net of width n is zero on most draws and very large "
        "on a few)."
        if heavy
        else ""
    )
    return markdown(
        f"**Algorithm 1 on the MLP does not give Fig. 3's α.** {said[0].upper()}{said[1:]}. "
        f"Fig. 3's optimum needs α = {fig3_alpha:.3f} ({fig3_source}).{tail}"
    )


def effects_table(rows):
    """The columns of the saved ``effects`` rows a reader needs."""
    keep = ["label", "entry", "alpha", "lo", "hi", "alpha_large", "lo_large", "hi_large", "seconds"]
    return [{k: r[k] for k in keep} for r in rows]


def design_table(rows):
    """The columns of the saved ``design`` rows a reader needs."""
    keep = ["arch", "baseline", "objective", "paper_config", "config", "config_lo", "config_hi"]
    return [{k: r[k] for k in [*keep, "config_paper_alpha", "alpha_min", "alpha_max"]} for r in rows]


def design_sentence(design):
    """Markdown: how many of the paper's design problems our alpha solves as the paper printed."""
    same = sum(r["config"] == r["paper_config"] for r in design["rows"])
    return markdown(
        f"With our α = {design['alpha']:.3f}, {same} of {len(design['rows'])} designs give the paper's printed optimum."
    )
