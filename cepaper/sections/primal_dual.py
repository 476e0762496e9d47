"""Figures and tables of notebook ``04_primal_dual`` (Sec. 3, Fig. 3, Figs. 6-7, Tables 1-5).

The ``*_rows``/``*_data`` functions compute JSON-able results (lists and dicts) that the notebook
saves; the ``plot_*`` functions draw from the saved results. The paper's printed values come from
:mod:`cepaper.sections.paper`, never from the notebook.
"""

import dataclasses
import itertools

import numpy as np

from cepaper import complexity as cxm
from cepaper import search
from cepaper.search import networks
from cepaper.sections import paper

# ---------------------------------------------------------------------------------------------
# Helpers: printed digits
# ---------------------------------------------------------------------------------------------


def printed_decimals(x):
    """Decimals the paper printed for ``x`` (``13.8`` -> 1, ``4.22`` -> 2, ``1`` -> 0)."""
    text = repr(x)
    return len(text.split(".")[1]) if "." in text else 0


def as_printed(value, printed):
    """``value`` rounded to the digits of ``printed`` (half away from zero, as in a table)."""
    k = printed_decimals(printed)
    return float(np.sign(value) * np.floor(abs(value) * 10**k + 0.5) / 10**k)


def matches_printed(value, printed):
    """``True`` when ``value`` rounds to the printed number."""
    return printed is not None and abs(as_printed(value, printed) - printed) < 1e-9


def paper_width(table, objective="primal", budget=None):
    """Width ``d`` of the optimum the paper derived in ``table`` (e.g. Table 5 -> 8, from 44x8d)."""
    for row in paper.MODELS:
        if (
            row["table"] == table
            and row["role"] == "optimum"
            and row["objective"] == objective
            and budget in (None, row["budget"])
        ):
            return cxm.parse_config(row["config"])[1]
    raise ValueError(f"table {table!r} has no {objective} optimum")


def _row_alpha(alpha):
    return paper.ALPHA_BOTTLENECK if alpha is None else alpha


# ---------------------------------------------------------------------------------------------
# Fig. 3: the fully connected baseline
# ---------------------------------------------------------------------------------------------


def fig3_module(**conventions):
    """The :class:`~cepaper.search.MLPDesign` of Fig. 3 (L = 6, n0 = 748) with optional conventions."""
    return search.MLPDesign(paper.FIG3["inputs"], paper.FIG3["depth"], **conventions)


def matching_alphas(scan, target=None):
    """Mask over ``scan["alpha"]`` where the optimum rounds to Fig. 3's printed values
    (``n``, ``m_p``, ``m_d`` to integers, ``rho`` to 2 decimals); ``target`` defaults to ``paper.FIG3``."""
    t = paper.FIG3 if target is None else target
    return (
        (np.asarray(scan["n"]) == t["n_primal"])
        & (np.floor(np.asarray(scan["m_primal"]) + 0.5) == t["m_primal"])
        & (np.floor(np.asarray(scan["m_dual"]) + 0.5) == t["m_dual"])
        & np.array([matches_printed(r, t["rho_dual"]) for r in scan["rho"]])
    )


def matching_range(alphas, mask):
    """``[min, max]`` of the alphas where ``mask`` holds (``None`` when it never does)."""
    hits = np.asarray(alphas)[np.asarray(mask, dtype=bool)]
    return [float(hits.min()), float(hits.max())] if hits.size else None


def fig3_convention_rows(alphas):
    """Systematic search of the MLP conventions: for each (layers entering the sum, biases,
    outputs, what "L = 6" counts), the alpha interval that reproduces all of Fig. 3's numbers."""
    rows = []
    for fan_in_layers, bias, outputs, depth_counts in itertools.product(
        ("hidden", "all"), (False, True), (1, 10), ("weight layers", "hidden layers")
    ):
        depth = paper.FIG3["depth"] + (1 if depth_counts == "hidden layers" else 0)
        module = search.MLPDesign(paper.FIG3["inputs"], depth, outputs, bias, fan_in_layers)
        scan = search.alpha_scan(module, paper.FIG3["width"], alphas)
        interval = matching_range(scan["alpha"], matching_alphas(scan))
        rows.append(
            {
                "sum over": "hidden layers (L-1)/n" if fan_in_layers == "hidden" else "+ input 1/n0",
                "bias": bias,
                "outputs": outputs,
                "L = 6 counts": depth_counts,
                "alpha interval": None if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]",
                "alpha_lo": None if interval is None else interval[0],
                "alpha_hi": None if interval is None else interval[1],
            }
        )
    return rows


def fig3_data(alphas, alpha=None):
    """Fig. 3: the optimum over ``alphas``, the interval of alphas that reproduces all of Fig. 3's
    numbers, and the curves at ``alpha`` (default: the middle of that interval, else
    :data:`cepaper.search.ALPHA_FIG3`)."""
    module = fig3_module()
    scan = search.alpha_scan(module, paper.FIG3["width"], alphas)
    match = matching_alphas(scan)
    interval = matching_range(scan["alpha"], match)
    if alpha is None:
        alpha = search.ALPHA_FIG3 if interval is None else round(0.5 * (interval[0] + interval[1]), 4)
    c = search.curve(module, paper.FIG3["width"], alpha)
    return {
        "alpha": float(alpha),
        "curve": _lists(c),
        "primal": search.optimum(c, "primal"),
        "dual": search.optimum(c, "dual"),
        "strong_duality": search.strong_duality(c),
        "scan": _lists(scan),
        "match": match.tolist(),
        "interval": interval,
        "module": vars_of(module),
    }


def fig3_alpha(alphas=None):
    """``(alpha, source)``: the alpha of the fully connected net that reproduces Fig. 3's optimum,
    the middle of the interval of ``alphas`` (default: 3.0 to 4.5 in steps of 0.001) that gives all
    of Fig. 3's printed numbers; ``source`` says so, with the interval."""
    alphas = np.round(np.arange(3.0, 4.5, 0.001), 6) if alphas is None else np.asarray(alphas, dtype=float)
    data = fig3_data(alphas)
    if data["interval"] is None:
        raise ValueError(f"no alpha in [{alphas.min():g}, {alphas.max():g}] reproduces Fig. 3's optimum")
    lo, hi = data["interval"]
    return data["alpha"], (
        f"the middle of [{lo:.3f}, {hi:.3f}], the alphas that reproduce Fig. 3's optimum "
        "(n = 48, m = 30, rho = 2.45; the primal_dual section's computation)"
    )


def fig3_table(data):
    """Fig. 3 optimum, ours beside the paper's (a list of rows)."""
    p, d = data["primal"], data["dual"]
    ours = {"n_primal": p["n"], "m_primal": p["m"], "n_dual": d["n"], "m_dual": d["m"], "rho_dual": d["rho"]}
    return [{"quantity": k, "ours": round(v, 3), "paper": paper.FIG3[k]} for k, v in ours.items()]


# ---------------------------------------------------------------------------------------------
# ResNeXt block: conventions, curves, derived models, printed numbers
# ---------------------------------------------------------------------------------------------


def derive(row, alpha=None, module=None, rounding="nearest"):
    """Algorithm 2 for one paper row: the optimum (``role == "optimum"``) or the model at the
    row's width (``vicinity``/``curve``) from the row's baseline, objective and budget."""
    _, d = cxm.parse_config(row["config"])
    return networks.design(
        row["arch"],
        row["from_baseline"],
        row["objective"] or "primal",
        row["budget"],
        alpha=_row_alpha(alpha),
        classes=row["classes"],
        rounding=rounding,
        module=module,
        n=None if row["role"] == "optimum" else d,
    )


def derived_rows(alpha=None, module=None, rounding="nearest", rows=None):
    """Every optimum/vicinity/curve model of Tables 1-5 derived with Algorithm 2, beside the paper's."""
    out = []
    for row in rows or paper.MODELS:
        if row["role"] not in ("optimum", "vicinity", "curve") or row["from_baseline"] is None or row["arch"] is None:
            continue
        if row["role"] == "optimum" and row["objective"] is None:
            continue
        r = derive(row, alpha, module, rounding)
        cx = cxm.complexity(row["arch"], r["config"], classes=row["classes"])
        gflops = search.flops_of(cx, "2macs+acts+adds") / 1e9
        out.append(
            {
                "table": row["table"],
                "arch": row["arch"],
                "baseline": row["from_baseline"],
                "objective": row["objective"],
                "budget": row["budget"],
                "role": row["role"],
                "paper model": row["config"],
                "ours": r["config"],
                "match": r["config"] == row["config"],
                "n": r["n"],
                "m": r["m"],
                "m (network, continuous)": round(r["m_exact"], 2),
                "m (block curve)": round(r["m_curve"], 2),
                "params (M)": round(r["params"] / 1e6, 3),
                "paper params (M)": row["params"],
                "rho": round(r["rho_params"], 3),
                "paper rho": row["rho"],
                "GFLOPs (2macs+acts+adds)": round(gflops, 3),
                "paper GFLOPs": row["gflops"],
            }
        )
    return out


def block_convention_rows(alpha=None):
    """Systematic search of the bottleneck conventions (params budget): for each (layers in the
    sum, kernel area in the fan-in, BN in beta(n)), the optimum n, m_d(10) for the 1x128d and
    1x226d baselines, and how many of the paper's derived params-budget models it reproduces."""
    alpha = _row_alpha(alpha)
    targets = [
        r
        for r in paper.MODELS
        if r["budget"] == "params"
        and r["role"] in ("optimum", "vicinity", "curve")
        and r["from_baseline"]
        and r["arch"]
        and r["objective"]
    ]
    rows = []
    for fan_in_layers, kernel_area, bn in itertools.product(("all", "width"), (True, False), ("all", "member", "none")):
        module = search.BottleneckDesign(fan_in_layers=fan_in_layers, kernel_area=kernel_area, bn=bn)
        c128, c226 = search.curve(module, 128, alpha), search.curve(module, 226, alpha)
        derived = derived_rows(alpha, module, rows=targets)
        rows.append(
            {
                "sum over": "all 3 convs" if fan_in_layers == "all" else "convs fed by n",
                "fan-in": "k*k*c_in/g" if kernel_area else "c_in/g",
                "BN in beta(n)": bn,
                "n* (params)": search.optimum(c128, "primal")["n"],
                "m_d(10), 1x128d": round(float(c128["m_dual"][9]), 2),
                "m_d(10), 1x226d": round(float(c226["m_dual"][9]), 2),
                "models reproduced": f"{sum(d['match'] for d in derived)}/{len(derived)}",
                "default": (fan_in_layers, kernel_area, bn) == ("all", True, "all"),
            }
        )
    return rows


def flops_convention_rows(alpha=None):
    """For each FLOPs convention: the FLOPs-budget optimum n (1x128d), the derived Table 5
    models, and how many of Table 5's GFLOPs it reproduces to the printed digits."""
    alpha = _row_alpha(alpha)
    t5 = [r for r in paper.MODELS if r["table"] == "5"]
    rows = []
    for conv in search.FLOPS_CONVENTIONS:
        module = search.BottleneckDesign(flops=conv)
        c = search.curve(module, 128, alpha, "flops")
        derived = derived_rows(alpha, module, rows=t5)
        gf = [search.flops_of(cxm.complexity(r["arch"], r["config"], classes=r["classes"]), conv) / 1e9 for r in t5]
        rows.append(
            {
                "FLOPs": conv,
                "n* (flops)": search.optimum(c, "primal")["n"],
                "derived": ", ".join(d["ours"] for d in derived),
                "models reproduced": f"{sum(d['match'] for d in derived)}/{len(derived)}",
                "GFLOPs to printed digits": f"{sum(matches_printed(g, r['gflops']) for g, r in zip(gf, t5))}/{len(t5)}",
                **{r["config"]: round(g, 4) for g, r in zip(gf, t5)},
                "default": conv == search.BottleneckDesign().flops,
            }
        )
    return rows


def printed_rows():
    """Params of every model of Tables 1-5 (and GFLOPs of Table 5): ours beside the printed values."""
    out = []
    for row in paper.MODELS:
        if row["config"] is None:
            continue
        cx = cxm.complexity(row["arch"], row["config"], classes=row["classes"])
        ours = cx["params"] / 1e6
        gflops = search.flops_of(cx, "2macs+acts+adds") / 1e9
        rho, rho_printed = None, None
        if row["from_baseline"] and row["rho"] is not None:
            base = [
                r
                for r in paper.MODELS
                if r["table"] == row["table"]
                and r["arch"] == row["arch"]
                and r["config"] == row["from_baseline"]
                and r["role"] == "baseline"
            ]
            rho_printed = round(base[0]["params"] / row["params"], 3) if base else None
            rho = cxm.complexity(row["arch"], row["from_baseline"], classes=row["classes"])["params"] / cx["params"]
        elif row["role"] == "baseline":
            rho = 1.0
        out.append(
            {
                "table": row["table"],
                "arch": row["arch"],
                "classes": row["classes"],
                "model": row["model"],
                "params (M)": round(ours, 4),
                "paper params (M)": row["params"],
                "params match": matches_printed(ours, row["params"]),
                "rho": None if rho is None else round(rho, 3),
                "paper rho": row["rho"],
                "rho match": None if rho is None or row["rho"] is None else matches_printed(rho, row["rho"]),
                "rho of printed params": rho_printed,
                "GFLOPs (2macs+acts+adds)": round(gflops, 4) if row["gflops"] is not None else None,
                "paper GFLOPs": row["gflops"],
                "GFLOPs match": matches_printed(gflops, row["gflops"]) if row["gflops"] is not None else None,
            }
        )
    return out


def block_curves_data(alpha=None, baseline="1x128d"):
    """The red curves of Figs. 6-7: primal and dual over n for the ``baseline`` block (params), and
    the primal over n at constant FLOPs (Table 5)."""
    alpha = _row_alpha(alpha)
    module = search.BottleneckDesign()
    _, n_tilde = cxm.parse_config(baseline)
    out = {"alpha": alpha, "baseline": baseline, "module": vars_of(module)}
    for key, budget in (("params", "params"), ("flops", "flops")):
        c = search.curve(module, n_tilde, alpha, budget)
        out[key] = {
            "curve": _lists(c),
            "primal": search.optimum(c, "primal"),
            "dual": search.optimum(c, "dual"),
            "strong_duality": search.strong_duality(c),
        }
    return out


def block_alpha_scan(alphas, n_tilde=128):
    """Optimum n of the bottleneck block (params and FLOPs budgets) over ``alphas``."""
    module = search.BottleneckDesign()
    return {
        "params": _lists(search.alpha_scan(module, n_tilde, alphas, "params")),
        "flops": _lists(search.alpha_scan(module, n_tilde, alphas, "flops")),
    }


def vars_of(module):
    """A module's type and conventions, as saved with the results."""
    return {"type": type(module).__name__, **dataclasses.asdict(module)}


def _lists(d):
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


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
    :func:`block_curves_data`: a 2 x 2 figure, primal left, dual right."""
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
