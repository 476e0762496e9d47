"""Sec. 4.2.1 and App. B/C: ResNeXt-29 models derived by Algorithm 2, trained on CIFAR-10/100.

:func:`design_models` derives, for each baseline ``1 x n~ d``, the primal and dual optima (parameter
budget, Tables 1a/1b) and the FLOPs-budget primal optimum (Table 5), and models at given widths on
the primal and dual curves of the first baseline (Figs. 6-7), and adds further listed models: the
paper profile lists every model the tables print (:func:`printed_models`), so each printed row is
trained whatever alpha the derivation used; a derived optimum that differs from the printed one is
an extra row, labelled as such. :func:`grid` gives the runs with their recipe: every model with the
8-GPU recipe ``cifar`` (BatchNorm over 16 images), and the models of Table 1b's rows marked § with
the single-GPU ``cifar_1gpu`` (BatchNorm over 128). :func:`cepaper.training.grids.train_recipe_grid` trains them
with the recipe of Xie et al. [20] and :func:`cepaper.training.grids.grid_summary` gives the paper's statistic
(``LAST_EPOCHS``: each run's test error averaged over its last 10 epochs, then the mean and standard
error over runs); :func:`paper_table` puts it beside the paper's, each row beside the run with the
recipe of that row.

A *scaled-down* network (``stages``/``depth`` other than ResNeXt-29's, e.g. the quick CPU profile)
has its own baseline and its own optima, derived with the bottleneck of its first stage as the
member module (``w_in = w_out = stages[0]``); in the tables its models stand in the rows of the
paper's models with the same role (baseline, primal/dual/FLOPs optimum).
"""

import numpy as np
import pandas as pd

from cepaper import complexity as cxm
from cepaper import search
from cepaper._checks import positive_int
from cepaper.search import networks
from cepaper.sections import paper
from cepaper.training import recipes, sgd

#: The paper's rows each derived role stands in for (baseline 1x128d): Tables 1a, 1b and 5.
ROLE_ROWS = {
    "baseline": ("1x128d", None),
    "primal optimum": ("37x10d", "params"),
    "dual optimum": ("10x10d", "params"),
    "flops optimum": ("44x8d", "flops"),
}
#: The objective and budget of each derived optimum (``design_models`` roles).
OPTIMA = {
    "primal optimum": ("primal", "params"),
    "dual optimum": ("dual", "params"),
    "flops optimum": ("primal", "flops"),
}
CLASSES = {"cifar10": 10, "cifar100": 100}
RESNEXT29 = (tuple(cxm.CIFAR_STAGES["resnext29"]), 3)
TABLES = ("1a", "1b", "5")
#: The 8-GPU recipe (BatchNorm over 16 images) and the single-GPU one (Table 1b's § rows).
RECIPE, RECIPE_1GPU = "cifar", "cifar_1gpu"
#: Sec. 4.2.1: "Test errors are averaged over the last 10 epochs over 10 runs".
LAST_EPOCHS = paper.STATISTICS["cifar"]["last_epochs"]


def printed_models(tables=TABLES):
    """The ResNeXt-29 configs ``CxDd`` the CIFAR tables print (Wide ResNets left out), in order."""
    return list(dict.fromkeys(r["config"] for r in paper.MODELS if r["table"] in tables and r["config"]))


def row_recipe(row):
    """The recipe of a paper row: ``cifar_1gpu`` for the rows marked § (one GPU), else ``cifar`` (8 GPUs)."""
    return RECIPE_1GPU if paper.SINGLE_GPU_MARK in row["model"] else RECIPE


def check_params(datasets, n_runs, epochs):
    """Check the section's parameters: ``datasets`` among ``CLASSES``, ``n_runs >= 1``, ``epochs``
    ``None`` or ``>= 1``; return ``(datasets, n_runs, epochs)``."""
    if not datasets or any(d not in CLASSES for d in datasets):
        raise ValueError(f"datasets must be a non-empty list among {', '.join(CLASSES)}, got {datasets!r}")
    return list(datasets), positive_int("n_runs", n_runs), None if epochs is None else positive_int("epochs", epochs)


def is_paper_scale(stages, depth):
    """True for ResNeXt-29 itself (stages 256, 512, 1024; 3 blocks each)."""
    return stages is None or (tuple(stages), depth) == RESNEXT29


def _net(stages, depth):
    """``(stages, depth)`` keyword arguments of a network (empty for ResNeXt-29 itself)."""
    return {} if is_paper_scale(stages, depth) else {"stages": tuple(stages), "depth": depth}


def member_module(stages=None):
    """The member of Algorithm 2: the bottleneck of the first stage, ``stages[0] -> [n, n] -> stages[0]``."""
    w = 256 if stages is None else positive_int("stages", stages[0])
    return search.BottleneckDesign(w_in=w, w_out=w)


def _spec(r, role, baseline, classes, net, alpha):
    cx = cxm.complexity("resnext29", r["config"], classes=classes, **net)
    return {
        "config": r["config"],
        "role": role,
        "baseline": baseline,
        "objective": r["objective"],
        "budget": r["budget"],
        "n": r["n"],
        "m": r["m"],
        "params": cx["params"],
        "gflops": search.flops_of(cx, "2macs+acts+adds") / 1e9,
        "rho": r["rho_params"],
        "var_ratio": r["var_ratio"],
        "alpha": alpha,
    }


def design_models(baselines, primal_ns=(), dual_ns=(), models=(), stages=None, depth=3, alpha=None, classes=10):
    """The models to train, one dict per distinct config (first role wins): ``config, role, baseline,
    objective, budget, n, m, params, gflops, rho`` (params ratio to the baseline), ``var_ratio``,
    ``alpha`` (of the derivation; ``None`` for listed models).

    Roles: ``baseline``, ``primal optimum``, ``dual optimum``, ``flops optimum`` (per baseline),
    ``primal curve`` / ``dual curve`` (the first baseline at widths ``primal_ns`` / ``dual_ns``),
    ``listed`` (``models``: further configs, e.g. :func:`printed_models`). ``alpha`` ``None``: the
    paper's 1.60 (:func:`cepaper.search.networks.default_alpha`).
    """
    if not baselines:
        raise ValueError("baselines must name at least one baseline CxDd, e.g. ['1x128d']")
    alpha = networks.default_alpha("resnext29")[0] if alpha is None else alpha
    net = _net(stages, depth)
    kw = dict(alpha=alpha, classes=classes, module=member_module(stages), **net)
    out = {}

    def add(spec):
        out.setdefault(spec["config"], spec)

    for b in baselines:
        add(
            _spec(
                networks.design("resnext29", b, "primal", n=cxm.parse_config(b)[1], **kw),
                "baseline",
                b,
                classes,
                net,
                alpha,
            )
        )
        for role, (objective, budget) in OPTIMA.items():
            add(_spec(networks.design("resnext29", b, objective, budget, **kw), role, b, classes, net, alpha))
    for ns, objective in ((primal_ns, "primal"), (dual_ns, "dual")):
        for n in ns:
            add(
                _spec(
                    networks.design("resnext29", baselines[0], objective, n=n, **kw),
                    f"{objective} curve",
                    baselines[0],
                    classes,
                    net,
                    alpha,
                )
            )
    for config in models:
        c = cxm.format_config(*cxm.parse_config(config))
        if c not in out:
            cx = cxm.complexity("resnext29", c, classes=classes, **net)
            out[c] = {
                "config": c,
                "role": "listed",
                "baseline": None,
                "objective": None,
                "budget": None,
                "n": cxm.parse_config(c)[1],
                "m": cxm.parse_config(c)[0],
                "params": cx["params"],
                "gflops": search.flops_of(cx, "2macs+acts+adds") / 1e9,
                "rho": None,
                "var_ratio": None,
                "alpha": None,
            }
    return list(out.values())


def curves(baseline, stages=None, alpha=None):
    """The red curves of Figs. 6-7 for ``baseline``: :func:`cepaper.search.curve` (params budget) as lists."""
    a = networks.default_alpha("resnext29")[0] if alpha is None else alpha
    c = search.curve(member_module(stages), cxm.parse_config(baseline)[1], a)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in c.items()}


def _finite(x):
    return x is not None and bool(np.isfinite(float(x)))


def _by_recipe(summ):
    """``summ`` with a ``recipe`` column (a summary older than the recipes matches no row)."""
    return summ if "recipe" in summ else summ.iloc[0:0].assign(recipe=pd.Series(dtype=object))


def _ours(summ, dataset, config, recipe):
    summ = _by_recipe(summ)
    row = summ[(summ.dataset == dataset) & (summ.config == config) & (summ.recipe == recipe)]
    if row.empty:
        return None
    r = row.iloc[0]
    sem = "" if not _finite(r.top1_sem) else f" ± {r.top1_sem:.2f}"
    return f"{r.top1:.2f}{sem} ({int(r.runs)})"


def stand_in(row, specs, scaled):
    """Our model for a paper row: the same config at paper scale; for a scaled-down network, our
    derived model of the same role (``ROLE_ROWS``), else ``None``."""
    by_config = {s["config"]: s for s in specs}
    if not scaled:
        return by_config.get(row["config"])
    for s in specs:
        config, budget = ROLE_ROWS.get(s["role"], (None, None))
        if s["baseline"] == specs[0]["baseline"] and config == row["config"] and budget in (None, row["budget"]):
            return s
    return None


def grid(specs, scaled):
    """The runs of the section, one dict per ``(config, recipe)``: ``config, role, recipe`` and
    ``paper rows`` (the rows of Tables 1a, 1b, 5 it stands beside). Every model of ``specs`` with the
    8-GPU ``cifar`` recipe; the models of the rows marked § (Table 1b) also with ``cifar_1gpu``."""
    by_config = {s["config"]: s for s in specs}
    out = {(s["config"], RECIPE): [] for s in specs}
    for row in paper.MODELS:
        if row["table"] in TABLES and row["config"]:
            s = stand_in(row, specs, scaled)
            if s is not None:
                out.setdefault((s["config"], row_recipe(row)), []).append(f"{row['table']}: {row['model']}")
    return [
        {"config": c, "role": by_config[c]["role"], "recipe": r, "paper rows": ", ".join(rows) or "none"}
        for (c, r), rows in out.items()
    ]


def _derived_elsewhere(row, specs):
    """Derived optima (paper scale) of the same baseline, objective and budget as an optimum ``row``
    of the paper, whose config is not the printed one: the extra rows to show after it."""
    if row["role"] != "optimum" or row_recipe(row) != RECIPE:
        return []
    return [
        s
        for s in specs
        if s["role"] in OPTIMA
        and s["baseline"] == row["from_baseline"]
        and OPTIMA[s["role"]] == (row["objective"], row["budget"])
        and s["config"] != row["config"]
    ]


def paper_table(table, specs, summ, scaled):
    """Table ``1a``, ``1b`` or ``5``: every paper row (model, params, C10/C100 error) beside ours
    (model, recipe, params, error mean ± s.e. (runs) per dataset, "not run" where we trained none),
    each with the recipe of its row (``cifar_1gpu`` for §). At paper scale a derived optimum whose
    config differs from the printed one (another alpha) follows the printed row as an extra row,
    ``paper model`` saying so; its paper columns are ``None``."""
    rows = []

    def line(row, s, recipe, label=None):
        out = {"paper model": label or row["model"], "paper params (M)": None if label else row["params"]}
        if table == "5":
            out["paper GFLOPs"] = None if label else row["gflops"]
        if table == "1b":
            out["paper rho"] = None if label else row["rho"]
        out.update(
            {
                "paper C10": None if label else row["c10"],
                "paper C100": None if label else row["c100"],
                "our model": s["config"] if s else "not run",
                "our recipe": recipe,
                "our params (M)": round(s["params"] / 1e6, 4) if s else None,
            }
        )
        if table == "5":
            out["our GFLOPs"] = round(s["gflops"], 4) if s else None
        for ds, col in (("cifar10", "our C10"), ("cifar100", "our C100")):
            out[col] = (_ours(summ, ds, s["config"], recipe) if s else None) or "not run"
        return out

    for row in [r for r in paper.MODELS if r["table"] == table]:
        rows.append(
            line(
                row, stand_in(row, specs, scaled) if row["config"] else None, row_recipe(row) if row["config"] else None
            )
        )
        for s in [] if scaled else _derived_elsewhere(row, specs):
            rows.append(
                line(
                    row,
                    s,
                    RECIPE,
                    label=f"{s['config']}: our {s['role']} of {s['baseline']} at "
                    f"α = {s['alpha']:.3g} (the paper's is {row['config']})",
                )
            )
    return pd.DataFrame(rows)


def plot_curve_errors(specs, summ, curve, datasets):
    """Figs. 6-7: one row per dataset (Fig. 7 is CIFAR-10, Fig. 6 CIFAR-100): the test error (8-GPU
    recipe) of the models on the primal (left) and dual (right) curves of the first baseline against
    their width ``n``, with s.e. bars, and the red curve (Var(K_e)/Var(K_ñ) at m_p(n); rho(m_d(n), n)) on a
    twin axis."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.6 * len(datasets)), squeeze=False)
    fig.subplots_adjust(wspace=0.5, hspace=0.5, top=0.9, bottom=0.1, left=0.08, right=0.9)
    base = specs[0]["baseline"]
    summ = _by_recipe(summ)
    summ = summ[summ.recipe == RECIPE]
    for row, ds in zip(axes, datasets):
        for ax, objective, key, label in (
            (row[0], "primal", "var_ratio_primal", "Var(K_e)/Var(K_ñ) at m_p(n)"),
            (row[1], "dual", "rho_dual", "ρ(m_d(n), n)"),
        ):
            on = sorted(
                [
                    s
                    for s in specs
                    if s["baseline"] == base and s["role"] in (f"{objective} curve", f"{objective} optimum", "baseline")
                ],
                key=lambda s: s["n"],
            )
            pts = [(s["n"], summ[(summ.dataset == ds) & (summ.config == s["config"])]) for s in on]
            pts = [(n, r.iloc[0]) for n, r in pts if not r.empty]
            if pts:
                ax.errorbar(
                    [n for n, _ in pts],
                    [r.top1 for _, r in pts],
                    yerr=[r.top1_sem if _finite(r.top1_sem) else 0.0 for _, r in pts],
                    fmt="o-",
                    capsize=3,
                    label="test error",
                )
                for n, r in pts:
                    ax.annotate(r.config, (n, r.top1), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xscale("log")
            ax.set_xlabel("width n")
            ax.set_ylabel("test error (%)")
            ax.set_title(f"{ds}: ({'a' if objective == 'primal' else 'b'}) {objective} curve of {base}", fontsize=10)
            ax.legend(fontsize=8, loc="upper left")
            twin = ax.twinx()
            twin.plot(curve["n"], curve[key], color="tab:red", lw=1.5)
            twin.set_ylabel(label, color="tab:red")
            if objective == "primal":
                twin.set_yscale("log")
    return fig


#: CIFAR-10's (and CIFAR-100's) training images.
TRAIN_IMAGES = 50_000


def throughput_rows(configs=("1x128d", "37x10d"), batch_size=8, steps=1, device="cpu", channels_last=True):
    """Training images/s of the paper's ResNeXt-29 ``configs`` at CIFAR's 32x32 (10 classes) on
    ``device`` (:func:`cepaper.training.sgd.throughput`), and what one epoch of CIFAR-10 and the paper's
    runs (10 runs x the recipe's 300 epochs) cost at that speed. A list of dicts ``table, arch, config,
    resolution, batch, images_per_s, hours per epoch, hours for the paper's runs``."""
    from cepaper.models.resnext import resnext

    rec = recipes.recipe("cifar")
    rows = []
    for config in configs:
        ips = sgd.throughput(
            resnext("resnext29", config, 10), batch_size, rec.resolution, 10, device, steps, 1, channels_last
        )
        epoch_h = sgd.epoch_hours(TRAIN_IMAGES, ips)
        rows.append(
            {
                "table": "1a",
                "arch": "resnext29",
                "config": config,
                "resolution": rec.resolution,
                "batch": batch_size,
                "images_per_s": ips,
                "hours per epoch": epoch_h,
                "hours for the paper's runs": epoch_h * rec.epochs * paper.STATISTICS["cifar"]["runs"],
            }
        )
    return rows
