"""Results and figures of notebook ``03_alpha`` (Sec. 4.2, Algorithm 1, App. D / Fig. 8).

The ``*_rows`` functions compute JSON-able results (lists of dicts) that the notebook saves; the
``plot_*`` functions draw from saved results only. The paper's values come from :mod:`cepaper.sections.paper`.
"""

import itertools

import numpy as np

from cepaper import search
from cepaper.alpha import fit, sweeps
from cepaper.search import networks
from cepaper.sections import alpha_checks, paper
from cepaper.sections._alpha_page import (  # noqa: F401 (the notebook draws through this module)  # noqa: F401 (the notebook's tables and sentences)
    design_sentence,
    design_table,
    effects_table,
    fig8_sentence,
    fit_rows,
    mlp_sentence,
    plot_design_intervals,
    plot_effects,
    plot_fig8,
    plot_fit_options,
    slope_table,
)
from cepaper.sections._shared import quiet_tail_warnings, show  # noqa: F401 (the notebook's)

#: Fit choices compared by :func:`fit_option_rows`: label -> keyword arguments of :func:`fit.fit_sweep`.
FIT_OPTIONS = {
    "paper: intercept, unweighted, all widths": {},
    "no intercept": {"intercept": False},
    "inverse-variance weights": {"weighted": True},
    "widths n >= 8": {"n_min": 8},
    "widths n >= 24": {"n_min": 24},
}


#: The widths Algorithm 1 may be run at, each a reading of the paper's words.
WIDTH_SETS = {
    "all integers 1..256": (
        None,  # every width the run drew
        "Sec. 4.2: “increasing width n ∈ ⟦1, 256⟧”",
    ),
    "16 log-spaced": (
        sweeps.log_grid(1, 256, 16),
        "Algorithm 1: “a set of width ratios {r_j}”, spread evenly in log n",
    ),
    "powers of two": (
        tuple(2**k for k in range(9)),
        "Algorithm 1: “a set of width ratios {r_j}”, ratios 2^k",
    ),
}
#: The NTK entry: the text's diagonal, or Algorithm 1's K(x1, x2).
ENTRY_READINGS = {
    "diag": "Sec. 4.2: “one diagonal entry of the NTK matrix”",
    "offdiag": "Algorithm 1, line 5: “Compute K(x1, x2)”",
}
#: The line: the text's first-degree polynomial, or Prop. 1's law through the origin.
INTERCEPT_READINGS = {
    True: "Sec. 4.2: “fitted with a first degree polynomial” of log r",
    False: "Prop. 1: log r = α Σ 1/fan-in, no intercept",
}
#: The primary reading, fixed before any number was read: the text of Sec. 4.2 says every integer
#: width in 1..256, the diagonal entry and a first-degree polynomial.
PRIMARY = ("all integers 1..256", "diag", True)


def readings():
    """Every declared reading of Algorithm 1 as ``(width set, entry, intercept)``, the primary first."""
    keys = list(itertools.product(WIDTH_SETS, ENTRY_READINGS, INTERCEPT_READINGS))
    return [PRIMARY] + [k for k in keys if k != PRIMARY]


def reading_label(key):
    """``"all integers 1..256, diagonal, with intercept"`` for a reading ``(width set, entry, intercept)``."""
    widths, entry, intercept = key
    return f"{widths}, {'diagonal' if entry == 'diag' else 'K(x1, x2)'}, {'with' if intercept else 'no'} intercept"


def reading_rows(fit_record, paper_alpha=paper.ALPHA_BOTTLENECK, design_window=None, level=0.95):
    """Alpha under every reading, refitted from a stored :func:`fit.fit_sweep` record of both entries.

    Args:
        fit_record: the ``fit_bottleneck`` data (``fits``: one fit per entry, every width stored).
        paper_alpha: the value judged (Sec. 4.2: 1.60).
        design_window: ``(lo, hi)``, the alphas over which every derived model is unchanged, or ``None``.
    Returns:
        one dict per reading: ``reading``, ``primary``, ``why``, ``alpha``, ``lo``, ``hi``, ``widths``,
        ``verdict`` (``reproduced`` / ``differs`` / ``inconclusive`` for heavy-tailed widths /
        ``cannot tell`` where the record lacks the widths), ``designs_unchanged`` (``None`` without a window).
    """
    rows = []
    for key in readings():
        widths, entry, intercept = key
        why = "; ".join((WIDTH_SETS[widths][1], ENTRY_READINGS[entry], INTERCEPT_READINGS[intercept]))
        row = dict(reading=reading_label(key), primary=key == PRIMARY, why=why)
        f = fit_record["fits"].get(entry)
        subset = WIDTH_SETS[widths][0]
        try:
            if f is None:
                raise ValueError(f"the run stored no {entry} fit")
            if subset is None and sorted(f["widths"]) != list(range(1, max(f["widths"]) + 1)):
                raise ValueError("the run did not draw every integer width")
            r = fit.refit(f, subset, intercept, level)
        except ValueError as e:
            rows.append(
                row
                | dict(alpha=None, lo=None, hi=None, widths=0, verdict="cannot tell", note=str(e))
                | dict(designs_unchanged=None)
            )
            continue
        inside = r["lo"] <= paper_alpha <= r["hi"]
        verdict = "reproduced" if inside else "inconclusive" if r["heavy_tail_widths"] else "differs"
        unchanged = None if design_window is None else bool(design_window[0] <= r["alpha"] <= design_window[1])
        rows.append(
            row
            | dict(alpha=r["alpha"], lo=r["lo"], hi=r["hi"], widths=len(r["widths"]), verdict=verdict)
            | dict(designs_unchanged=unchanged, note="")
        )
    return rows


def design_window(design):
    """``(lo, hi)``: the alphas over which every derived model of ``design`` rows is unchanged (the
    intersection of their ``alpha_min .. alpha_max``)."""
    return max(r["alpha_min"] for r in design), min(r["alpha_max"] for r in design)


def local_slopes(fit_one, ratio=2.0):
    """The local slope of ``log r`` in ``s = sum 1/fan-in``: for each width ``n`` with ``ratio n`` stored,
    the least-squares slope over the widths ``n .. ratio n``. Returns ``(n, slope)`` arrays."""
    widths = np.asarray(fit_one["widths"])
    x, y = (np.asarray(fit_one[k], dtype=float) for k in ("term", "log_ratio"))
    ns, slopes = [], []
    for n in widths:
        use = (widths >= n) & (widths <= ratio * n)
        if widths.max() < ratio * n or len(np.unique(x[use])) < 2:
            continue
        ns.append(int(n))
        slopes.append(float(np.polyfit(x[use], y[use], 1)[0]))
    return np.array(ns), np.array(slopes)


def window_alphas(fit_one, level=0.95):
    """Alpha (the paper's line, with intercept) on the width windows ``[n, n_max]`` and ``[n_min, n]`` of
    one stored fit, for every ``n`` whose window spans a factor 2 in width and holds at least 3 widths:
    ``{"from": (n, alpha, lo, hi) arrays, "to": ...}``."""
    widths = sorted(int(n) for n in fit_one["widths"])
    out = {}
    for side, windows in (
        ("from", [[w for w in widths if w >= n] for n in widths]),
        ("to", [[w for w in widths if w <= n] for n in widths]),
    ):
        rows = [
            (n, fit.refit(fit_one, win, True, level))
            for n, win in zip(widths, windows)
            if len(win) >= 3 and win[-1] >= 2 * win[0]
        ]
        out[side] = tuple(np.array(v) for v in zip(*[(n, r["alpha"], r["lo"], r["hi"]) for n, r in rows]))
    return out


def plot_readings(fit_record, paper_alpha=paper.ALPHA_BOTTLENECK):
    """Why the width set decides alpha, three panels from a stored fit of the diagonal entry:
    (a) ``log r`` against ``s = sum 1/fan-in`` with the lines of the three width sets; (b) the local
    slope over the widths ``n .. 2n``; (c) alpha on the windows ``[n, 256]`` and ``[1, n]``; the
    paper's alpha dashed in (b) and (c)."""
    import matplotlib.pyplot as plt

    f = fit_record["fits"]["diag"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    ax = axes[0]
    ax.plot(f["term"], f["log_ratio"], ".", color="0.6", ms=3, label="every width")
    xs = np.linspace(0, max(f["term"]), 50)
    for (label, (subset, _)), color in zip(WIDTH_SETS.items(), ("k", "tab:blue", "tab:orange")):
        try:
            r = fit.refit(f, subset)
        except ValueError:  # the run did not draw this set's widths
            continue
        ax.plot(xs, r["intercept"] + r["alpha"] * xs, color=color, lw=1, label=f"{label}: α = {r['alpha']:.2f}")
    ax.set(xlabel="s(n) = Σ 1/fan-in", ylabel="log E[K²]/E[K]²", title="(a) the lines of three width sets")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ns, slopes = local_slopes(f)
    ax = axes[1]
    ax.plot(ns, slopes, "-", color="tab:purple")
    ax.axhline(paper_alpha, color="k", ls="--", lw=1, label=f"the paper's α = {paper_alpha:.2f}")
    ax.set(xscale="log", xlabel="width n (window n .. 2n)", ylabel="local slope d log r / d s")
    ax.set_title("(b) the local slope rises with n")
    ax.legend(fontsize=7, frameon=False)
    ax = axes[2]
    windows = window_alphas(f)
    for side, color, label in (("from", "tab:green", "widths n .. 256"), ("to", "tab:red", "widths 1 .. n")):
        n, a, lo, hi = windows[side]
        ax.plot(n, a, color=color, label=label)
        ax.fill_between(n, lo, hi, color=color, alpha=0.2, lw=0)
    ax.axhline(paper_alpha, color="k", ls="--", lw=1, label=f"the paper's α = {paper_alpha:.2f}")
    ax.set(xscale="log", xlabel="window edge n", ylabel="α (95% interval)", title="(c) α by width window")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def reading_table(fit_record, window=None):
    """:func:`reading_rows` for a page: words for headers, the interval beside alpha, ✓/✗."""
    mark = {True: "✓", False: "✗", None: "—"}
    return [
        {
            "reading": ("primary: " if r["primary"] else "") + r["reading"],
            "α [95% interval]": "—" if r["alpha"] is None else f"{r['alpha']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]",
            "widths": r["widths"],
            "vs the paper's 1.60": r["verdict"],
            "same derived models": mark[r["designs_unchanged"]],
        }
        for r in reading_rows(fit_record, design_window=window)
    ]


def effect_rows(variants, widths, trials, seed=0, device="cpu", n_boot=500, checkpoint=None, progress=False):
    """Alpha of the bottleneck under different scalar functions (input, spatial size, read-out, ...).

    Args:
        variants: list of ``{"label": str, **options}``, options as :func:`cepaper.alpha.sweeps.module_sweep`
            (``{"label": "default"}`` is the default block).
        widths, trials, seed, device, n_boot, checkpoint, progress: of each sweep.
    Returns:
        one dict per variant and entry: ``label``, ``entry``, the options, ``alpha``, ``lo``, ``hi``
        (the paper's fit) and ``alpha_large``, ``lo_large``, ``hi_large`` (the fit on the upper half of
        the widths, where the law is closest to log-linear), ``seconds``.
    """
    rows = []
    for v in variants:
        opts = {k: x for k, x in v.items() if k != "label"}
        sw = sweeps.module_sweep("bottleneck", widths, trials, seed, device, checkpoint, progress, **opts)
        half = sorted(sw["widths"])[len(sw["widths"]) // 2]
        for entry in fit.ENTRIES:
            f = fit.fit_sweep(sw, entry, n_boot=n_boot)
            g = fit.fit_sweep(sw, entry, n_min=half, n_boot=n_boot)
            rows.append(
                {
                    "label": v["label"],
                    "entry": entry,
                    **sw["options"],
                    "alpha": f["alpha"],
                    "lo": f["alpha_ci"][0],
                    "hi": f["alpha_ci"][1],
                    "n_large": half,
                    "alpha_large": g["alpha"],
                    "lo_large": g["alpha_ci"][0],
                    "hi_large": g["alpha_ci"][1],
                    "seconds": sw["seconds"],
                }
            )
    return rows


def fit_option_rows(sweep, entry="diag", options=None, n_boot=500):
    """Alpha of one sweep under the fit choices ``options`` (default :data:`FIT_OPTIONS`): list of dicts."""
    rows = []
    for label, kw in (FIT_OPTIONS if options is None else options).items():
        f = fit.fit_sweep(sweep, entry, n_boot=n_boot, **kw)
        rows.append(
            {
                "fit": label,
                "entry": entry,
                "alpha": f["alpha"],
                "lo": f["alpha_ci"][0],
                "hi": f["alpha_ci"][1],
                "intercept": f["intercept"],
                "widths": len(f["widths"]),
            }
        )
    return rows


def design_rows(alpha, alpha_ci, problems=None, lo=0.2, hi=12.0):
    """The chain alpha -> design (Algorithm 2) for the paper's design problems, with stability intervals.

    For each problem (default :data:`cepaper.sections.paper.ALPHA_OPTIMA`): the optimum ``CxDd`` with our
    ``alpha``, at the ends of its interval ``alpha_ci`` and with the paper's 1.60, and the interval of
    alpha over which our optimum stays the same (:func:`cepaper.search.alpha_interval`).

    Returns:
        list of dicts: ``arch``, ``baseline``, ``objective``, ``paper_config``, ``config``,
        ``config_lo``, ``config_hi``, ``config_paper_alpha``, ``alpha_min``, ``alpha_max``,
        ``paper_alpha_inside``, ``rho``, ``params``, ``baseline_params``.
    """
    problems = paper.ALPHA_OPTIMA if problems is None else problems
    rows = []
    for p in problems:
        cfg = lambda a, p=p: networks.design(p["arch"], p["baseline"], p["objective"], alpha=a)["config"]
        d = networks.design(p["arch"], p["baseline"], p["objective"], alpha=alpha)
        a_min, a_max = search.alpha_interval(cfg, alpha, min(lo, alpha), max(hi, alpha))
        rows.append(
            {
                "arch": p["arch"],
                "baseline": p["baseline"],
                "objective": p["objective"],
                "paper_config": p["config"],
                "config": d["config"],
                "config_lo": cfg(alpha_ci[0]),
                "config_hi": cfg(alpha_ci[1]),
                "config_paper_alpha": cfg(paper.ALPHA_BOTTLENECK),
                "alpha_min": a_min,
                "alpha_max": a_max,
                "paper_alpha_inside": bool(a_min <= paper.ALPHA_BOTTLENECK <= a_max),
                "rho": d["rho"],
                "params": d["params"],
                "baseline_params": d["baseline_params"],
            }
        )
    return rows


def optimum_interval_rows(alphas, problems=None):
    """For each problem, the maximal intervals of alpha (over the sorted grid ``alphas``) with one optimum.

    Returns:
        list of dicts ``problem``, ``config``, ``alpha_min``, ``alpha_max`` (grid resolution).
    """
    problems = paper.ALPHA_OPTIMA if problems is None else problems
    alphas = np.sort(np.asarray(alphas, dtype=float))
    rows = []
    for p in problems:
        name = f"{p['arch']} {p['baseline']} {p['objective']}"
        configs = [networks.design(p["arch"], p["baseline"], p["objective"], alpha=a)["config"] for a in alphas]
        start = 0
        for i in range(1, len(alphas) + 1):
            if i == len(alphas) or configs[i] != configs[start]:
                rows.append(
                    {
                        "problem": name,
                        "config": configs[start],
                        "alpha_min": float(alphas[start]),
                        "alpha_max": float(alphas[i - 1]),
                        "paper_config": p["config"],
                    }
                )
                start = i
    return rows


# ---------------------------------------------------------------------------------------------
# The notebook's steps: run, save, and the sentences that depend on the results
# ---------------------------------------------------------------------------------------------

#: The alpha of the fully connected net that reproduces Fig. 3's optimum (the dashed line of the MLP's figures).
ALPHA_FIG3 = search.ALPHA_FIG3

#: The scalar functions of the block compared by :func:`effect_rows` (the notebook's "What alpha depends on").
VARIANTS = [
    {"label": "default: centre unit, 3x3 input"},
    {"label": "mean read-out, 8x8 input", "readout": "mean", "spatial": 8},
    {"label": "mean read-out, 4x4 input", "readout": "mean", "spatial": 4},
    {"label": "one pixel (1x1 input)", "readout": "mean", "spatial": 1},
    {"label": "random read-out, 4x4 input", "readout": "random", "spatial": 4},
    {"label": "ReLU after the sum", "post_relu": True},
    {"label": "spatially constant input, 8x8", "input": "constant", "readout": "mean", "spatial": 8},
    {"label": "uncorrelated x1, x2", "corr": 0.0},
]


def setup_table(trials, width_max, num_widths):
    """Rows for the top of the page: the paper's fit (Sec. 4.2, Fig. 8) beside this run's settings."""
    fig8 = paper.ALPHA_FIT
    return [
        dict(
            source="paper (Sec. 4.2, Fig. 8)",
            alpha=fig8["alpha"],
            trials=fig8["trials"],
            widths=f"{fig8['width_min']}..{fig8['width_max']}",
            n_in=fig8["n_in"],
            entry=fig8["entry"],
        ),
        dict(
            source="this run",
            alpha="fitted below",
            trials=trials,
            widths=f"{num_widths} from 1..{width_max}",
            n_in=sweeps.DEFAULTS["bottleneck"]["n_in"],
            entry="diag and offdiag",
        ),
    ]


def fit_module(run, module, name, width_max, num_widths, trials, seed, device, checkpoint, n_boot, **kwargs):
    """Algorithm 1 on ``module`` (``bottleneck`` or ``mlp``, ``kwargs`` to :func:`sweeps.module_sweep`) at
    ``num_widths`` log-spaced widths ``1..width_max``, ``trials`` draws each: saves the fit (Eq. 9) as
    ``fit_<name>`` and the same draws fitted in other ways (:data:`FIT_OPTIONS`) as ``fit_options`` (for the
    bottleneck) or ``fit_options_<name>``."""
    import pandas as pd

    widths = sweeps.log_grid(1, width_max, num_widths)
    sweep = sweeps.module_sweep(module, widths, trials, seed, device, checkpoint, progress=True, **kwargs)
    result = fit.sweep_result(sweep, n_boot=n_boot)
    run.save(f"fit_{name}", result, table=fit.result_table(result))
    options = fit_option_rows(sweep, "diag", n_boot=n_boot)
    run.save(
        "fit_options" if name == "bottleneck" else f"fit_options_{name}", {"rows": options}, table=pd.DataFrame(options)
    )


def save_effects(run, widths, trials, seed, device, n_boot, checkpoint):
    """The bottleneck's alpha under each scalar function of :data:`VARIANTS`, saved as ``effects``."""
    import pandas as pd

    rows = effect_rows(VARIANTS, widths, trials, seed, device, n_boot, checkpoint)
    run.save("effects", {"rows": rows, "widths": widths, "trials": trials}, table=pd.DataFrame(rows))


def save_design(run):
    """Algorithm 2 with the saved bottleneck alpha (``design``) and the optima over a grid of alpha
    (``design_intervals``, 200 values from 0.5 to 4)."""
    import pandas as pd

    saved = run.load("fit_bottleneck")
    design = design_rows(saved["alpha"], saved["alpha_ci"])
    run.save(
        "design", {"rows": design, "alpha": saved["alpha"], "alpha_ci": saved["alpha_ci"]}, table=pd.DataFrame(design)
    )
    intervals = optimum_interval_rows(np.geomspace(0.5, 4.0, 200))
    run.save("design_intervals", {"rows": intervals}, table=pd.DataFrame(intervals))


def check(run, synthetic_trials, seed, n_boot):
    """Record :func:`alpha_checks.checks` on ``run``: Algorithm 1 on log-normal draws with the paper's alpha
    exactly (at 10 log-spaced widths 4..256 of the bottleneck), the saved fits and the saved design."""
    terms = [sweeps.bottleneck_term(n) for n in sweeps.log_grid(4, 256, 10)]
    a_paper = paper.ALPHA_BOTTLENECK
    synthetic = fit.fit_alpha(terms, fit.synthetic_samples(a_paper, terms, synthetic_trials, seed=seed), n_boot=n_boot)
    fits = {"bottleneck": run.load("fit_bottleneck"), "mlp": run.load("fit_mlp")}
    for name, holds, detail in alpha_checks.checks(synthetic, a_paper, fits, run.load("design")["rows"]):
        run.check(name, holds, detail)
