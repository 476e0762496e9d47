"""Sec. 4.2.2 and App. A: the ImageNet tables (2a/2b: ResNeXt-50/101 on ImageNet; 3: ResNeXt-29 on
ImageNet32x32; 4: ResNeXt-38 on ImageNet64x64), the data they need, and what a run would cost.

:func:`table_models` lists each table's models with our exact parameter counts and FLOPs beside the
printed ones; :func:`dataset_status` says which of the three datasets the data root holds;
:func:`measure_throughput` times training steps of each model on random inputs and
:func:`cost_estimate` turns images/s into the GPU-hours of the paper's runs (its recipe's epochs over
the 1,281,167 ILSVRC-2012 training images, the paper's 5 runs per model). :func:`paper_table` shows
the paper's top-1/top-5 errors beside ours ("not run" until a run's results exist). The statistic
(``LAST_EPOCHS``): the tables are "averaged over 5 runs" and state no average over epochs, so a
run's error is its error after the final epoch; ours is the mean of those over runs.

The models of Tables 2-4 are the printed ones (``cepaper.sections.paper.MODELS``): none is re-derived, so
no fit of alpha changes which are trained.
"""

import pandas as pd

from cepaper import complexity as cxm
from cepaper import search
from cepaper._checks import choices
from cepaper.sections import paper
from cepaper.sections._shared import across, markdown, runs_sentence, save_grid, show, training_setup  # noqa: F401
from cepaper.training import recipes, sgd

#: ILSVRC-2012 training images; ImageNet32x32/64x64 keep every image (Chrabaszcz et al. [3]).
TRAIN_IMAGES = 1_281_167
#: The dataset and recipe of each table.
TABLES = {"2a": "imagenet", "2b": "imagenet", "3": "imagenet32", "4": "imagenet64"}
#: Tables 2-4: "Results are averaged over 5 runs": each run's final error (1 epoch), 5 runs.
LAST_EPOCHS, RUNS = paper.STATISTICS["imagenet"]["last_epochs"], paper.STATISTICS["imagenet"]["runs"]


def check_tables(tables):
    """``tables`` as a list, or a ``ValueError`` unless it is a non-empty list of keys of ``TABLES``."""
    return choices("tables", tables, tuple(TABLES))


def table_models(tables=tuple(TABLES)):
    """One row per model of the tables (Wide ResNets have no config here and are left out):
    ``table, dataset, arch, config, paper model, role, paper params (M), params (M)`` (ours, exact),
    ``params match`` (to the printed digits), ``GFLOPs`` (2 macs + acts + adds, at the dataset's resolution)."""
    rows = []
    for r in paper.MODELS:
        if r["table"] not in tables or r["config"] is None:
            continue
        rec = recipes.recipe(TABLES[r["table"]])
        cx = cxm.complexity(r["arch"], r["config"], classes=r["classes"], resolution=rec.resolution)
        ours = cx["params"] / 1e6
        decimals = max(0, len(str(r["params"]).split(".")[1]) if "." in str(r["params"]) else 0)
        rows.append(
            {
                "table": r["table"],
                "dataset": TABLES[r["table"]],
                "arch": r["arch"],
                "config": r["config"],
                "paper model": r["model"],
                "role": r["role"],
                "paper params (M)": r["params"],
                "params (M)": round(ours, 3),
                "params match": round(ours, decimals) == r["params"],
                "GFLOPs": round(search.flops_of(cx, "2macs+acts+adds") / 1e9, 3),
            }
        )
    return pd.DataFrame(rows)


#: The datasets of the tables, in table order.
DATASETS = tuple(dict.fromkeys(TABLES.values()))


def dataset_status(root=None, names=DATASETS):
    """For each dataset: ``found`` (its source) or why not (the loader's own message: missing
    files and how to get them, or a ``cepaper.data`` without that dataset), with paths named
    relative to the data root (:func:`cepaper.catalog.relative_source`)."""
    from cepaper import catalog, data

    rows = []
    for name in names:
        try:
            ds = data.load(name, "test", root=root, n=1)
            rows.append({"dataset": name, "found": True, "source or reason": catalog.relative_source(ds.source, root)})
        except (FileNotFoundError, ValueError) as e:
            rows.append({"dataset": name, "found": False, "source or reason": catalog.relative_source(str(e), root)})
    return pd.DataFrame(rows)


def timed_models(configs, models):
    """The ``(table, arch, config)`` to time: every distinct model of ``models`` when ``configs`` is
    ``None``, else each ``"table:arch:CxDd"`` of ``configs`` (checked)."""
    if configs is None:
        return list(dict.fromkeys(zip(models.table, models.arch, models.config)))
    out = []
    for item in configs:
        parts = item.split(":") if isinstance(item, str) else []
        if len(parts) != 3 or parts[0] not in TABLES or parts[1] not in cxm.ARCHS:
            raise ValueError(
                f"configs must hold 'table:arch:CxDd' strings with a table among {', '.join(TABLES)} "
                f"and an arch among {', '.join(cxm.ARCHS)}, e.g. '2a:resnext50:12x10d'; got {item!r}"
            )
        out.append((parts[0], parts[1], cxm.format_config(*cxm.parse_config(parts[2]))))
    return list(dict.fromkeys(out))


def measure_throughput(models, batch_size=8, steps=1, device="cpu", channels_last=True, bf16=False, progress=False):
    """Training images/s of each ``(table, arch, config)`` on random inputs at its dataset's resolution
    (:func:`cepaper.training.sgd.throughput`, 1 warm-up step). Returns a DataFrame ``table, arch, config,
    resolution, batch, images_per_s``."""
    from tqdm import tqdm

    from cepaper.models.resnext import resnext

    rows = []
    for table, arch, config in tqdm(models, disable=not progress, desc="throughput"):
        rec = recipes.recipe(TABLES[table])
        model = resnext(arch, config, 1000)
        ips = sgd.throughput(model, batch_size, rec.resolution, 1000, device, steps, 1, channels_last, bf16)
        rows.append(
            {
                "table": table,
                "arch": arch,
                "config": config,
                "resolution": rec.resolution,
                "batch": batch_size,
                "images_per_s": ips,
            }
        )
        del model
    return pd.DataFrame(rows)


def cost_estimate(throughput, runs=RUNS):
    """Hours of the paper's runs at the measured speed: ``epochs x TRAIN_IMAGES / images_per_s``
    per run (training only, no evaluation or data loading), and times ``runs``."""
    out = throughput.copy()
    epochs = [recipes.recipe(TABLES[t]).epochs for t in out.table]
    out["epochs"] = epochs
    out["hours per run"] = [e * sgd.epoch_hours(TRAIN_IMAGES, ips) for e, ips in zip(epochs, out.images_per_s)]
    out[f"hours for {runs} runs"] = out["hours per run"] * runs
    return out


def _mean_sem(r):
    sem = f" ± {r.top1_sem:.2f}" if pd.notna(r.get("top1_sem")) else ""
    return f"{r.top1:.2f}{sem} ({int(r.runs)})"


def paper_table(table, summ=None):
    """Table ``table`` (2a, 2b, 3, 4): the paper's params, rho, top-1 and top-5 errors beside ours
    (``summ``: :func:`cepaper.training.grids.grid_summary` with ``last=LAST_EPOCHS`` of runs with the table's
    recipe, or ``None``: every model "not run"): mean ± s.e. over runs of the final error (runs)."""
    rows = []
    for r in [r for r in paper.MODELS if r["table"] == table]:
        ours = None
        if summ is not None and "recipe" in summ and r["config"] is not None:  # (older summaries have no recipe)
            hit = summ[
                (summ.dataset == TABLES[table])
                & (summ.arch == r["arch"])
                & (summ.config == r["config"])
                & (summ.recipe == TABLES[table])
            ]
            ours = None if hit.empty else hit.iloc[0]
        rows.append(
            {
                "paper model": r["model"],
                "paper rho": r["rho"],
                "paper params (M)": r["params"],
                "paper top-1": r["top1"],
                "paper top-5": r["top5"],
                "our top-1": "not run" if ours is None else _mean_sem(ours),
                "our top-5": "not run" if ours is None else f"{ours.top5:.2f}",
            }
        )
    return pd.DataFrame(rows)


def plot_models(models):
    """Each table's models: our exact parameter count (bars) beside the printed one (black ticks),
    and GFLOPs (red dots, right axis). ``models``: :func:`table_models` rows."""
    import matplotlib.pyplot as plt

    models = pd.DataFrame(models)
    tables = list(dict.fromkeys(models["table"]))
    fig, axes = plt.subplots(1, len(tables), figsize=(3.2 * len(tables), 3.6), squeeze=False)
    fig.subplots_adjust(wspace=0.6, bottom=0.3, top=0.88, left=0.06, right=0.95)
    for ax, table in zip(axes[0], tables):
        m = models[models["table"] == table]
        x = range(len(m))
        ax.bar(x, m["params (M)"], color="tab:blue", alpha=0.7, label="ours")
        ax.plot(x, m["paper params (M)"], "k_", ms=14, mew=2, label="printed")
        ax.set_xticks(
            list(x), [f"{a.replace('resnext', 'R')} {c}" for a, c in zip(m.arch, m.config)], rotation=70, fontsize=7
        )
        ax.set_ylabel("params (M)")
        ax.set_title(f"Table {table} ({m.dataset.iloc[0]})", fontsize=9)
        twin = ax.twinx()
        twin.plot(x, m["GFLOPs"], "o", color="tab:red")
        twin.set_ylabel("GFLOPs", color="tab:red")
    axes[0][0].legend(fontsize=7, loc="lower left")
    return fig


def checks(models):
    """The tables' models checked on a run: ``[(name, holds, detail)]`` for
    :meth:`cepaper.book.results.Run.check`. ``models``: :func:`table_models`. Checked: every model has the
    printed parameter count, to the printed digits."""
    off = models[~models["params match"].astype(bool)]
    tables = ", ".join(dict.fromkeys(models["table"].astype(str)))
    return [
        (
            f"every model of Tables {tables} has the printed parameter count, to the printed digits",
            off.empty,
            f"{len(models) - len(off)} of {len(models)} models"
            + "".join(
                f"; {r['paper model']}: {r['params (M)']}M, printed {r['paper params (M)']}M" for _, r in off.iterrows()
            ),
        )
    ]


# ------------------------------------------------------------------------------------ the notebook's steps


def save_models(run, tables):
    """:func:`table_models` of ``tables``, saved as ``models``; returns them (a DataFrame)."""
    models = table_models(tables)
    run.save("models", {"rows": models.to_dict("records")}, table=models)
    return models


def save_datasets(run, data_root):
    """:func:`dataset_status` of the data root, saved as ``datasets``; returns it (a DataFrame)."""
    status = dataset_status(data_root)
    run.save("datasets", {"rows": status.to_dict("records")}, table=status)
    return status


def save_throughput(run, configs, models, batch_size, steps, device, channels_last, bf16):
    """:func:`cost_estimate` of :func:`measure_throughput` on the :func:`timed_models` ``configs``, saved as
    ``throughput``; returns it (a DataFrame)."""
    timed = timed_models(configs, models)
    speed = cost_estimate(measure_throughput(timed, batch_size, steps, device, channels_last, bf16))
    run.save("throughput", {"rows": speed.to_dict("records")}, table=speed)
    return speed


def train(run, enabled, models, status, data_root, seeds, world_size=1, *, epochs, cache, launcher, **hardware):
    """With ``enabled``, train every model of ``models`` on its table's dataset with its table's recipe, once
    per seed of ``seeds`` (:func:`cepaper.training.grids.train_recipe_grid`: ``epochs``, ``cache``,
    ``launcher`` its own; ``hardware``: the fields of :class:`cepaper.training.grids.Hardware`, ``device,
    channels_last, bf16, workers``), and save the runs and their summary; a ``FileNotFoundError`` naming the
    data root and what is missing when ``status`` (:func:`dataset_status`) lacks a dataset. Returns what the
    page shows: the summary and the runs' status, or a sentence that nothing is trained."""
    from cepaper import catalog, data
    from cepaper.book import pages
    from cepaper.training import grids

    if not enabled:
        return [markdown("`train = False`: nothing is trained in this run.")]
    missing = status[~status.found & status.dataset.isin(models.dataset)]
    if len(missing):
        raise FileNotFoundError(
            f"train=True needs {', '.join(missing.dataset)} in the data root "
            f"({catalog.data_root(data_root) or 'unset: pass data_root or set CEPAPER_DATA'}): "
            + "; ".join(missing["source or reason"])
        )
    records = []
    for name, group in models.groupby("dataset", sort=False):
        train_set, test_set = data.load(name, "train", root=data_root), data.load(name, "test", root=data_root)
        for arch, sub in group.groupby("arch", sort=False):
            records += grids.train_recipe_grid(
                list(dict.fromkeys(sub.config)),
                name,
                train_set,
                test_set,
                seeds,
                net=grids.Network(arch, 1000),
                recipe_name=TABLES[sub.table.iloc[0]],
                epochs=epochs,
                cache=cache,
                hardware=grids.Hardware(**hardware),
                launcher=launcher,
            )
    ddp = markdown(across(world_size)) if world_size > 1 else None
    return [ddp, pages.show(save_grid(run, records, LAST_EPOCHS), 3), runs_sentence(records)]


_TITLES = {
    "2a": "Table 2a (ImageNet, primal)",
    "2b": "Table 2b (ImageNet, dual)",
    "3": "Table 3 (ImageNet32×32)",
    "4": "Table 4 (ImageNet64×64)",
}


def paper_tables(run, trained, tables):
    """What the page shows of ``tables``: which run ours come from (this one when ``trained``, else the
    committed paper-scale run, else "not run"), the runs' status, and per table its title and :func:`paper_table`."""
    from cepaper.book import pages, results

    own = results.find("imagenet", "summary", profiles=(run.profile,)) if trained else None
    committed = own or (results.find("imagenet", "summary", profiles=("paper",)) if run.profile != "paper" else None)
    ours = None if committed is None else pd.DataFrame(committed["data"]["rows"])
    which = (
        "not run: no run has trained these models (no committed `results/paper/imagenet/summary.json`)."
        if committed is None
        else results.describe(committed)
    )
    shown = [markdown(f"**Ours:** {which}"), runs_sentence(run.load("runs")["records"]) if trained else None]
    for table in (t for t in _TITLES if t in tables):
        shown += [markdown(f"**{_TITLES[table]}**"), pages.show(paper_table(table, ours))]
    return shown


def check(run, speed, models):
    """Stop the run unless every timed model trained at a positive speed, and record :func:`checks` on ``run``."""
    assert (speed.images_per_s > 0).all(), "every timed model must train at a positive speed"
    for name, holds, detail in checks(models):
        run.check(name, holds, detail)
