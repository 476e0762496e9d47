"""Grids of recipe runs (Tables 1-5): ResNeXts x seeds trained with one recipe, cached and resumable,
and the paper's summary statistic over them."""

import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch

from cepaper._checks import positive_int
from cepaper.training import recipes, spine
from cepaper.training.recipes import RECIPES, data_digest
from cepaper.training.sgd import final_error, init_seed, train_recipe


def train_recipe_grid(configs, dataset, train, test, seeds, *, arch="resnext29", recipe_name="cifar", classes=10,
                      stages=None, depth=None, epochs=None, cache=None, device="cpu", channels_last=False,
                      bf16=False, workers=0, progress=False, rerun_stale=False,
                      executor=None):
    """Train every ResNeXt ``arch`` of ``configs`` (``CxDd``) once per seed with recipe ``recipe_name``
    (a key of ``RECIPES``); one record per run.

    ``stages``/``depth``: a scaled-down CIFAR ResNeXt (see :func:`cepaper.models.resnext.resnext`).
    A record: ``dataset, arch, config, recipe, seed, params, history`` (:func:`fit`), ``final_top1``,
    ``final_top5`` (the errors after the last epoch) and ``wall_s``. With ``cache`` (a folder),
    finished runs are ``<key>.json`` there and the running one checkpoints to ``<key>.pt`` every epoch.

    The run cache (:func:`cepaper.training.spine.cached_run`): ``key`` is the run's definition (model,
    recipe, data, seed, epochs, precision; not the device, nor the number of processes), each record
    carries its code version (``code``: commit and file digests); after a change of the training code
    a finished run is reused with ``stale`` saying which commit made it and which files changed since
    (``None``: made by this code); ``rerun_stale`` trains stale runs again (:func:`stale_runs` lists them).
    ``executor``: a submitit executor (:func:`cepaper.training.executors.executor`), each run a job.
    """
    from cepaper.models.resnext import resnext
    if not isinstance(recipe_name, str) or recipe_name not in RECIPES:
        raise ValueError(f"recipe_name must be one of {', '.join(RECIPES)}, got {recipe_name!r}")
    seeds = [int(s) for s in seeds]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must name at least one seed, each an integer >= 0, got {seeds}")
    net = {k: v for k, v in (("stages", None if stages is None else tuple(stages)), ("depth", depth)) if v is not None}
    data = {"train": data_digest(train), "test": data_digest(test)} if cache else None
    jobs = [dict(dataset=dataset, arch=arch, config=config, seed=seed, recipe=recipe_name, classes=classes,
                 epochs=epochs, data=data, bf16=bf16, channels_last=channels_last, device=str(device),
                 **{k: list(v) if k == "stages" else v for k, v in net.items()})
            for config in configs for seed in seeds]

    def one(job, checkpoint):
        torch.manual_seed(init_seed(job["seed"], job["config"]))
        model = resnext(arch, job["config"], classes, **net)
        t0 = time.perf_counter()
        hist = train_recipe(model, train, test, recipe_name, epochs=epochs, seed=job["seed"], device=device,
                            checkpoint=checkpoint, channels_last=channels_last, bf16=bf16, workers=workers,
                            progress=progress)
        return {"dataset": dataset, "arch": arch, "config": job["config"], "recipe": recipe_name, "seed": job["seed"],
                "params": sum(p.numel() for p in model.parameters()), "history": hist,
                "final_top1": final_error(hist), "final_top5": final_error(hist, "test_top5"),
                "wall_s": time.perf_counter() - t0}

    return spine.run_grid(jobs, one, cache=cache, required=RECORD_KEYS, progress=progress, desc=f"{dataset} runs",
                          by_definition=True, key=definition, rerun_stale=rerun_stale, executor=executor,
                          modules=("cepaper.models.resnext", "cepaper.training.recipes", "cepaper.training.sgd",
                                   "cepaper.training.spine", __name__))


def definition(job):
    """What defines a run (its cache key): the job without the device it runs on, its recipe by value
    (every setting, the epochs applied; not its citation)."""
    rec = recipes.recipe(job["recipe"])
    rec = rec.scaled(job["epochs"]) if job.get("epochs") is not None else rec
    return {**{k: v for k, v in job.items() if k != "device"},
            "recipe": {k: v for k, v in asdict(rec).items() if k != "source"}}


def stale_runs(records):
    """The runs of ``records`` made by older code: ``dataset, config, recipe, seed, commit, files``."""
    return [{**{k: r[k] for k in ("dataset", "config", "recipe", "seed")}, **r["stale"]}
            for r in records if r.get("stale")]


RECORD_KEYS = ("dataset", "arch", "config", "recipe", "seed", "params", "history", "final_top1", "final_top5",
               "wall_s")


def grid_summary(records, last=1):
    """Per dataset, model and recipe: the mean over runs of each run's test error averaged over its
    last ``last`` epochs (:func:`final_error`; the paper's is
    ``cepaper.sections.paper.STATISTICS[...]["last_epochs"]``),
    its standard error (``nan`` for one run: undefined) and the number of runs. Columns ``dataset,
    arch, config, recipe, params, top1, top1_sem, top5, runs, stale`` (``stale``: how many of the runs
    older code made, :func:`stale_runs`)."""
    last = positive_int("last", last)
    df = pd.DataFrame([{**{k: r[k] for k in ("dataset", "arch", "config", "recipe", "params")},
                        "final_top1": final_error(r["history"], "test_top1", last),
                        "final_top5": final_error(r["history"], "test_top5", last),
                        "stale": bool(r.get("stale"))} for r in records])
    g = df.groupby(["dataset", "arch", "config", "recipe"], sort=False)
    out = g.agg(params=("params", "first"), top1=("final_top1", "mean"), top1_sd=("final_top1", "std"),
                top5=("final_top5", "mean"), runs=("final_top1", "size"), stale=("stale", "sum")).reset_index()
    out["top1_sem"] = out.pop("top1_sd") / np.sqrt(out["runs"])
    return out
