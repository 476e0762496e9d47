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
from cepaper._checks import choices, positive_int
from cepaper.search import networks
from cepaper.sections import paper
from cepaper.sections._cifar_page import (  # noqa: F401 (the notebook's)
    TRAIN_IMAGES,
    by_recipe,
    check_grid,
    finite,
    plot_curve_errors,
    save_throughput,
    throughput_rows,
    throughput_sentence,
    throughput_table,
)
from cepaper.sections._shared import across, markdown, runs_sentence, save_grid, show, training_setup  # noqa: F401

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
    datasets = choices("datasets", datasets, tuple(CLASSES))
    return datasets, positive_int("n_runs", n_runs), None if epochs is None else positive_int("epochs", epochs)


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


def _ours(summ, dataset, config, recipe):
    summ = by_recipe(summ)
    row = summ[(summ.dataset == dataset) & (summ.config == config) & (summ.recipe == recipe)]
    if row.empty:
        return None
    r = row.iloc[0]
    sem = "" if not finite(r.top1_sem) else f" ± {r.top1_sem:.2f}"
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


def net_name(stages, blocks):
    """How the page names the trained network: ResNeXt-29, or the scaled-down one with its stages."""
    scaled = not is_paper_scale(stages, blocks)
    return f"a scaled-down ResNeXt (stages {stages}, {blocks} block(s) each)" if scaled else "ResNeXt-29"


def alpha_of(alpha):
    """``(alpha, source)``: ``alpha`` ("given"), or the paper's 1.60 for the ResNeXt block when ``None``."""
    return (alpha, "given") if alpha is not None else networks.default_alpha("resnext29")


def _epochs_text(epochs):
    return "the recipe’s 300" if epochs is None else str(epochs)


def run_sentence(stages, blocks, datasets, n_train, n_test, epochs, n_runs, alpha, alpha_source, world_size=1):
    """Markdown: what this run trains (network, data, epochs, runs, alpha), and for a scaled-down network
    that it is not the paper's experiment and why its errors are no evidence."""
    text = (
        f"**What this run is.** {net_name(stages, blocks)}; datasets {', '.join(datasets)}; "
        f"{'all' if n_train is None else n_train} training and {'all' if n_test is None else n_test} test images; "
        f"{_epochs_text(epochs)} epoch(s); {n_runs} run(s) per model; α = {alpha:.3g} ({alpha_source})."
    )
    text += f" {across(world_size)}" if world_size > 1 else ""
    if not is_paper_scale(stages, blocks):
        text += (
            " **This is not the paper's experiment.** The network is far narrower and shallower than ResNeXt-29, "
            "so it has its *own* baseline and its *own* optima, derived by the same Algorithm 2 with the bottleneck "
            f"of its first stage ({stages[0]} → [n, n] → {stages[0]}) as the member; in the tables below its models "
            "stand in the rows of the paper's models with the same role. It trains on a small subset for a "
            "fraction of the schedule, so its errors are near chance and are **not evidence for or against the "
            "paper's claims**: this run checks that the whole pipeline (derive, train, evaluate, tabulate) works "
            "on real CIFAR images. The paper profile (`profiles/paper.yaml`, a GPU) runs the real experiment."
        )
    return markdown(text)


def save_models(run, baselines, primal_ns, dual_ns, models, stages, blocks, alpha, alpha_source):
    """:func:`design_models`, saved as ``models``; returns the specs."""
    specs = design_models(baselines, primal_ns, dual_ns, models, stages=stages, depth=blocks, alpha=alpha)
    run.save("models", {"models": specs, "alpha": alpha, "alpha_source": alpha_source}, table=pd.DataFrame(specs))
    return specs


def models_table(specs):
    """The designed models as the page shows them (without the alpha every row shares)."""
    return [{k: v for k, v in spec.items() if k != "alpha"} for spec in specs]


def train(runs, datasets, seeds, data_root, n_train, n_test, stages, blocks, *, epochs, cache, launcher, **hardware):
    """Train the grid ``runs`` (:func:`grid`) on each of ``datasets`` (the first ``n_train``/``n_test``
    images; ``None``: all) with seeds ``seeds``, one :func:`cepaper.training.grids.train_recipe_grid` per
    recipe (``epochs``, ``cache``, ``launcher`` its own; ``hardware``: the fields of
    :class:`cepaper.training.grids.Hardware`, ``device, channels_last, bf16``). Returns ``(records, notes)``:
    the runs' records, and per dataset a sentence naming its images (relative to the data root)."""
    from cepaper import catalog, data
    from cepaper.training import grids

    scaled = not is_paper_scale(stages, blocks)
    records, notes = [], []
    for name in datasets:
        train_set = data.load(name, "train", root=data_root, n=n_train)
        test_set = data.load(name, "test", root=data_root, n=n_test)
        net = grids.Network("resnext29", CLASSES[name], stages if scaled else None, blocks if scaled else None)
        for recipe in dict.fromkeys(r["recipe"] for r in runs):
            records += grids.train_recipe_grid(
                [r["config"] for r in runs if r["recipe"] == recipe],
                name,
                train_set,
                test_set,
                seeds,
                net=net,
                recipe_name=recipe,
                epochs=epochs,
                cache=cache,
                hardware=grids.Hardware(**hardware),
                launcher=launcher,
            )
        source = catalog.relative_source(train_set.source, data_root)
        notes.append(markdown(f"{name}: {len(train_set)} training images from {source}; {len(test_set)} test images."))
    return records, notes


_TITLES = {
    "1a": "Table 1a (primal, parameter budget)",
    "1b": "Table 1b (dual, parameter budget)",
    "5": "Table 5 (primal, FLOPs budget)",
}


def paper_tables(run, specs):
    """What the page shows of Tables 1a, 1b and 5 from this run's saved summary: the runs' status, then per
    table its title (naming the run) and :func:`paper_table`."""
    from cepaper.book import pages, results

    saved = run.load("summary")
    summ, scaled = pd.DataFrame(saved["rows"]), saved["scaled"]
    which = results.describe(results.load("cifar", run.profile, "summary"))
    shown = [runs_sentence(run.load("runs")["records"])]
    for table, title in _TITLES.items():
        shown += [
            markdown(f"**{title}**. Ours: {which}."),
            pages.show(paper_table(table, specs, summ, scaled)),
        ]
    return shown


def committed_tables(profile):
    """What the page shows of the committed paper-scale run (``results/paper/cifar/``): its Tables 1a, 1b
    and 5, or a sentence that there is none; nothing from the paper profile itself (its own tables are above)."""
    from cepaper.book import pages, results

    committed = results.find("cifar", "summary", profiles=("paper",)) if profile != "paper" else None
    if committed is None:
        return [
            markdown(
                "**Paper-scale results:** none committed yet (`results/paper/cifar/`); the paper "
                "profile (`cepaper run cifar --profile paper` on a GPU) writes them."
            )
        ]
    specs = results.find("cifar", "models", profiles=("paper",))["data"]["models"]
    summ, scaled = pd.DataFrame(committed["data"]["rows"]), committed["data"]["scaled"]
    return [markdown(f"**Paper-scale results** (committed run: {results.describe(committed)}):")] + [
        pages.show(paper_table(table, specs, summ, scaled)) for table in _TITLES
    ]


def curve_caption(baseline, datasets, stages, blocks, epochs, n_runs):
    """The caption of Figs. 6–7's figure."""
    return (
        f"Test error (± SE) of our models on the primal (left) and dual (right) curves of the baseline {baseline}, "
        f"against the width n, on {', '.join(datasets)}; red: the curve of Algorithm 2. {net_name(stages, blocks)}, "
        f"{_epochs_text(epochs)} epoch(s), {n_runs} run(s) per model"
    )
