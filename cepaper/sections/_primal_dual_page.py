"""What notebook ``04_primal_dual`` shows, from saved results only: the figures (Fig. 3, the red curves of
Figs. 6-7 and Table 5, how the optimum moves with alpha), its tables and the sentences whose words depend on
the results; :mod:`cepaper.sections.primal_dual` exposes them."""

import numpy as np

from cepaper import search
from cepaper.search import networks
from cepaper.sections import paper
from cepaper.sections._shared import markdown


def matching_range(alphas, mask):
    """``[min, max]`` of the alphas where ``mask`` holds (``None`` when it never does)."""
    hits = np.asarray(alphas)[np.asarray(mask, dtype=bool)]
    return [float(hits.min()), float(hits.max())] if hits.size else None


def fig3_conventions_table(rows):
    """The saved :func:`~cepaper.sections.primal_dual.fig3_convention_rows` for the page: the alpha interval as
    text, ``none`` where no
    alpha of the grid reproduces Fig. 3."""
    return [{k: "none" if v is None else v for k, v in r.items() if k not in ("alpha_lo", "alpha_hi")} for r in rows]


def fig3_sentence(fig3, step):
    """Markdown: the alphas (a grid of ``step``) that reproduce Fig. 3's numbers, from the saved
    :func:`~cepaper.sections.primal_dual.fig3_data`, and the alpha of its curves."""
    used = f"the curves below use α = {fig3['alpha']:.4f}"
    if fig3["interval"] is None:
        head = f"**No α of the grid reproduces Fig. 3's numbers** (grid step {step}); {used}, the library's default."
    else:
        lo, hi = fig3["interval"]
        head = f"**Fig. 3's numbers are reproduced for α ∈ [{lo:.3f}, {hi:.3f}]** (grid step {step}); {used}."
    return markdown(
        f"{head} The library's default for fully connected nets is `search.ALPHA_FIG3` = {search.ALPHA_FIG3}."
    )


def sensitivity_sentence(scan):
    """Markdown: the alphas at which the block's optimum is the paper's width, at a parameter budget
    (Sec. 4.2.1's n = 10) and at a FLOPs budget (Table 5's n = 8), from the saved
    :func:`~cepaper.sections.primal_dual.block_alpha_scan`."""
    parts = []
    for budget, n, what in (
        ("params", paper.SEC421["n_primal"], "parameters"),
        ("flops", paper.paper_width("5"), "FLOPs"),
    ):
        hit = matching_range(scan[budget]["alpha"], np.asarray(scan[budget]["n"]) == n)
        where = "for no α of the grid" if hit is None else f"for α ∈ [{hit[0]:.3f}, {hit[1]:.3f}]"
        parts.append(f"n = {n} {where} ({what})")
    return markdown(f"The block's optimum is the paper's {parts[0]} and {parts[1]}.")


#: The columns of the derived models' first table: the problem, then Algorithm 2's answer.
DERIVED_PROBLEM = ["table", "arch", "baseline", "objective", "budget", "role", "paper model", "ours"]
DERIVED_ANSWER = ["match", "n", "m", "m (network, continuous)", "m (block curve)"]
SIZE_DIGITS = {"params (M)": 3, "GFLOPs (2macs+acts+adds)": 3}


def derived_tables(rows):
    """What the page shows of the saved :func:`~cepaper.sections.primal_dual.derived_rows`: the problem and
    Algorithm 2's answer, then the
    models' sizes beside the printed ones."""
    from cepaper.book import pages

    sizes = list(rows[0])[list(rows[0]).index("params (M)") :] if rows else []
    return [
        pages.show([{k: r[k] for k in DERIVED_PROBLEM + DERIVED_ANSWER} for r in rows]),
        markdown("Their sizes, beside the printed ones:"),
        pages.show([{k: r[k] for k in ["table", "paper model", "ours"] + sizes} for r in rows], SIZE_DIGITS),
    ]


def rho_misses(rows):
    """The saved :func:`~cepaper.sections.primal_dual.printed_rows` whose printed ρ the exact counts do not round to."""
    keep = ("table", "model", "rho", "paper rho", "rho of printed params")
    return [{k: r[k] for k in keep} for r in rows if r["rho match"] is False]


def rho_tables(rows):
    """What the page shows of the printed ρ from the saved :func:`~cepaper.sections.primal_dual.printed_rows`: a
    sentence, and the table of
    :func:`rho_misses` when there are any."""
    from cepaper.book import pages

    misses = rho_misses(rows)
    if not misses:
        return [markdown("Every printed ρ is what the exact counts round to.")]
    return [
        markdown(
            "Printed ρ that the exact counts do not round to (the last column is the ratio of the paper's "
            "rounded parameter counts):"
        ),
        pages.show(misses, 3),
    ]


#: The designs redone with the alpha section's fitted alpha: (architecture, baseline, objective, budget).
FITTED_DESIGNS = [
    ("resnext29", "1x128d", "primal", "params"),
    ("resnext29", "1x128d", "dual", "params"),
    ("resnext29", "1x128d", "primal", "flops"),
    ("resnext50", "1x64d", "primal", "params"),
]


def fitted_alpha_tables(profile):
    """What Algorithm 2 derives (:data:`FITTED_DESIGNS`) with the alpha section's own fit of the bottleneck
    (the store's ``alpha/fit_bottleneck`` at ``profile``): a sentence naming the fit and a table, or a sentence
    that there is no fit yet."""
    from cepaper.book import pages, results

    fitted = results.find("alpha", "fit_bottleneck", profiles=(profile,))
    if fitted is None:
        return [markdown("No fitted α in the results store yet (run the α section first).")]
    a_fit = fitted["data"]["alpha"]
    keys = ("arch", "baseline", "objective", "budget", "config", "rho", "var_ratio")
    designs = [networks.design(*design, alpha=a_fit) for design in FITTED_DESIGNS]
    rows = [{k: d[k] for k in keys} for d in designs]
    return [markdown(f"Fitted α = {a_fit:.3f} ({results.describe(fitted)})."), pages.show(rows)]


# ---------------------------------------------------------------------------------------------
# Figures (from saved results)
# ---------------------------------------------------------------------------------------------


def _mark(ax, x, y, label, color="k", below=False):
    ax.plot([x], [y], "o", color=color, ms=7, zorder=5)
    ax.annotate(label, (x, y), textcoords="offset points", xytext=(8, -16 if below else 8), fontsize=9)


def plot_curves(curve, primal, dual, paper_n=None, title="", logx=True, axes=None):
    """Two panels: (a) the primal objective Var(K_e)/Var(K_ñ) at m_p(n) (red) with m_p(n);
    (b) the dual efficiency rho(m_d(n), n) (red) with m_d(n); optima marked. ``axes``: a pair of
    axes to draw into (default: a new figure)."""
    import matplotlib.pyplot as plt

    n = np.asarray(curve["n"])
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        fig.subplots_adjust(wspace=0.45, top=0.82, bottom=0.14, left=0.07, right=0.93)
        fig.suptitle(title, fontsize=11)
    else:
        fig = axes[0].figure
        axes[0].text(0.0, 1.12, title, transform=axes[0].transAxes, fontsize=11)
    panels = (
        (axes[0], "var_ratio_primal", "m_primal", primal, "(a) primal: Var(K_e) / Var(K_ñ) at m_p(n)", "m_p(n)"),
        (axes[1], "rho_dual", "m_dual", dual, "(b) dual: efficiency ρ(m_d(n), n)", "m_d(n)"),
    )
    for ax, key, mkey, opt, label, mlabel in panels:
        ax.plot(n, curve[key], color="tab:red", lw=2)
        y = curve[key][opt["index"]]
        _mark(
            ax,
            opt["n"],
            y,
            f"n = {opt['n']}, m = {opt['m']:.1f}" + (f", ρ = {opt['rho']:.2f}" if key == "rho_dual" else ""),
            below=key == "rho_dual",
        )
        if paper_n is not None:
            ax.axvline(paper_n, color="gray", ls="--", lw=1, label=f"paper: n = {paper_n}")
            ax.legend(loc="lower right" if key == "rho_dual" else "upper right", fontsize=8)
        ax.set_xlabel("width n")
        ax.set_title(label, fontsize=10)
        if logx:
            ax.set_xscale("log")
        twin = ax.twinx()
        twin.plot(n, curve[mkey], color="tab:blue", lw=1, alpha=0.6)
        twin.set_yscale("log")
        twin.set_ylabel(mlabel, color="tab:blue")
    axes[0].set_yscale("log")
    return fig


def plot_block_curves(block, paper_n_params, paper_n_flops):
    """The red curves of Figs. 6-7 (parameter budget) and of Table 5 (FLOPs budget), from
    :func:`~cepaper.sections.primal_dual.block_curves_data`: a 2 x 2 figure, primal left, dual right."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.6))
    fig.subplots_adjust(wspace=0.45, hspace=0.55, top=0.9, bottom=0.07, left=0.07, right=0.93)
    for row, key, paper_n, what in (
        (0, "params", paper_n_params, "parameter budget (Figs. 6-7)"),
        (1, "flops", paper_n_flops, f"FLOPs budget, {block['module']['flops']} (Table 5)"),
    ):
        d = block[key]
        plot_curves(
            d["curve"],
            d["primal"],
            d["dual"],
            paper_n,
            f"baseline {block['baseline']} block, {what}, α = {block['alpha']:.2f}",
            axes=axes[row],
        )
    return fig


def plot_alpha_sensitivity(fig3_scan, fig3_match, block_scan, paper_fig3_n, paper_block_n):
    """Optimum width n* as a function of alpha: Fig. 3's MLP (shaded: alphas that reproduce all of
    Fig. 3's numbers) and the bottleneck block (params and FLOPs budgets)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    fig.subplots_adjust(wspace=0.25, top=0.9, bottom=0.15, left=0.07, right=0.97)
    a = np.asarray(fig3_scan["alpha"])
    axes[0].step(a, fig3_scan["n"], where="mid", color="tab:red")
    axes[0].axhline(paper_fig3_n, color="gray", ls="--", lw=1, label=f"paper n = {paper_fig3_n}")
    m = np.asarray(fig3_match, dtype=bool)
    if m.any():
        axes[0].axvspan(a[m].min(), a[m].max(), color="tab:green", alpha=0.25, label="reproduces Fig. 3")
    axes[0].set(xlabel="α", ylabel="optimal n", title="Fig. 3 MLP (L = 6, ñ = 500)")
    axes[0].legend(fontsize=8)
    for key, color in (("params", "tab:red"), ("flops", "tab:purple")):
        axes[1].step(block_scan[key]["alpha"], block_scan[key]["n"], where="mid", color=color, label=f"{key} budget")
    axes[1].axhline(paper_block_n, color="gray", ls="--", lw=1, label=f"paper n = {paper_block_n} (params)")
    axes[1].axvline(paper.ALPHA_BOTTLENECK, color="k", ls=":", lw=1, label=f"paper α = {paper.ALPHA_BOTTLENECK:.2f}")
    axes[1].set(xlabel="α", ylabel="optimal n", title="ResNeXt bottleneck (256 → [n, n] → 256)")
    for ax in axes:
        ax.yaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=8)
    return fig
