"""Figures and tables of notebook ``04_primal_dual`` (Sec. 3, Fig. 3, Figs. 6-7, Tables 1-5).

The ``*_rows``/``*_data`` functions compute JSON-able results (lists and dicts); the ``save_*`` functions
save them on the notebook's run, and ``check`` records the paper's claims from them. The page's tables,
sentences and figures (:mod:`cepaper.sections._primal_dual_page`, exposed here) draw from the saved results.
The paper's printed values come from :mod:`cepaper.sections.paper`, never from the notebook.
"""

import dataclasses
import itertools

import numpy as np

from cepaper import complexity as cxm
from cepaper import search
from cepaper.search import networks
from cepaper.sections import paper
from cepaper.sections._primal_dual_page import (  # noqa: F401 (the notebook's figures, tables and sentences)
    derived_tables,
    fig3_conventions_table,
    fig3_sentence,
    fitted_alpha_tables,
    matching_range,
    plot_alpha_sensitivity,
    plot_block_curves,
    plot_curves,
    rho_misses,
    rho_tables,
    sensitivity_sentence,
)
from cepaper.sections._shared import show  # noqa: F401 (the notebook's)

# ---------------------------------------------------------------------------------------------
# Helpers: printed digits
# ---------------------------------------------------------------------------------------------


def block_alpha(alpha=None):
    """The alpha of Eq. 9 for the ResNeXt block: ``alpha``, or the paper's 1.60 (Sec. 4.2) when ``None``."""
    return paper.ALPHA_BOTTLENECK if alpha is None else alpha


def alpha_grid(spec, name="alphas"):
    """The alphas ``start, start + step, ... < stop`` of ``spec = [start, stop, step]`` (a parameter named
    ``name``), rounded to 6 decimals."""
    if len(spec) != 3 or not 0 < spec[2] <= spec[1] - spec[0]:
        raise ValueError(f"{name} must be [start, stop, step] with 0 < step <= stop - start, got {list(spec)}")
    return np.round(np.arange(*spec), 6)


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
        & np.array([paper.matches_printed(r, t["rho_dual"]) for r in scan["rho"]])
    )


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
        alpha=block_alpha(alpha),
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
    alpha = block_alpha(alpha)
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
    alpha = block_alpha(alpha)
    t5 = [r for r in paper.MODELS if r["table"] == "5"]
    rows = []
    for conv in search.FLOPS_CONVENTIONS:
        module = search.BottleneckDesign(flops=conv)
        c = search.curve(module, 128, alpha, "flops")
        derived = derived_rows(alpha, module, rows=t5)
        gf = [search.flops_of(cxm.complexity(r["arch"], r["config"], classes=r["classes"]), conv) / 1e9 for r in t5]
        printed = sum(map(paper.matches_printed, gf, [r["gflops"] for r in t5]))
        rows.append(
            {
                "FLOPs": conv,
                "n* (flops)": search.optimum(c, "primal")["n"],
                "derived": ", ".join(d["ours"] for d in derived),
                "models reproduced": f"{sum(d['match'] for d in derived)}/{len(derived)}",
                "GFLOPs to printed digits": f"{printed}/{len(t5)}",
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
                "params match": paper.matches_printed(ours, row["params"]),
                "rho": None if rho is None else round(rho, 3),
                "paper rho": row["rho"],
                "rho match": None if rho is None or row["rho"] is None else paper.matches_printed(rho, row["rho"]),
                "rho of printed params": rho_printed,
                "GFLOPs (2macs+acts+adds)": round(gflops, 4) if row["gflops"] is not None else None,
                "paper GFLOPs": row["gflops"],
                "GFLOPs match": paper.matches_printed(gflops, row["gflops"]) if row["gflops"] is not None else None,
            }
        )
    return out


def block_curves_data(alpha=None, baseline="1x128d"):
    """The red curves of Figs. 6-7: primal and dual over n for the ``baseline`` block (params), and
    the primal over n at constant FLOPs (Table 5)."""
    alpha = block_alpha(alpha)
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
# The page: what notebook 04_primal_dual saves, shows and checks
# ---------------------------------------------------------------------------------------------


def save_fig3(run, fig3_alphas):
    """Fig. 3 searched over the alphas of ``fig3_alphas`` (``[start, stop, step]``): saves the conventions of
    the fully connected net (``fig3_conventions``, :func:`fig3_convention_rows`) and Fig. 3 (``fig3``,
    :func:`fig3_data`) on ``run``."""
    import pandas as pd

    alphas = alpha_grid(fig3_alphas, "fig3_alphas")
    rows = fig3_convention_rows(alphas)
    run.save("fig3_conventions", {"rows": rows}, table=pd.DataFrame(rows))
    run.save("fig3", fig3_data(alphas))


def save_block(run, alpha, block_alphas):
    """The ResNeXt block at ``alpha``: saves its parameter and FLOPs conventions (``block_conventions``,
    ``flops_conventions``), its curves (``block_curves``) and its optimum over the alphas of ``block_alphas``
    (``[start, stop, step]``: ``block_alpha_scan``) on ``run``."""
    import pandas as pd

    alphas = alpha_grid(block_alphas, "block_alphas")
    for name, rows in (
        ("block_conventions", block_convention_rows(alpha)),
        ("flops_conventions", flops_convention_rows(alpha)),
    ):
        run.save(name, {"rows": rows}, table=pd.DataFrame(rows))
    run.save("block_curves", block_curves_data(alpha))
    run.save("block_alpha_scan", block_alpha_scan(alphas))


def save_models(run, alpha):
    """Algorithm 2 at ``alpha`` for every model of Tables 1-5 (``derived_models``, :func:`derived_rows`) and the
    exact sizes beside the printed ones (``printed_numbers``, :func:`printed_rows`), saved on ``run``."""
    import pandas as pd

    for name, rows in (("derived_models", derived_rows(alpha)), ("printed_numbers", printed_rows())):
        run.save(name, {"rows": rows}, table=pd.DataFrame(rows))


def check(run, alpha=None):
    """Record :mod:`cepaper.sections.primal_dual_checks` on ``run``, from its saved results: Fig. 3, the ResNeXt
    block and its conventions, the models derived at ``alpha`` (the block's) and the printed sizes."""
    from cepaper.sections import primal_dual_checks as checks

    for name, holds, detail in [
        *checks.fig3(run.load("fig3_conventions")["rows"], run.load("fig3")),
        *checks.resnext_block(
            run.load("block_curves"), run.load("block_conventions")["rows"], run.load("flops_conventions")["rows"]
        ),
        *checks.derived_models(run.load("derived_models")["rows"], alpha),
        *checks.printed_numbers(run.load("printed_numbers")["rows"]),
    ]:
        run.check(name, holds, detail)
