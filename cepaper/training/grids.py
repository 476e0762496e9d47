"""Grids of recipe runs (Tables 1-5): ResNeXts x seeds trained with one recipe, cached and resumable,
and the paper's summary statistic over them."""

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from cepaper._checks import choice, positive_int
from cepaper.training import distributed, executors, recipes
from cepaper.training.recipes import RECIPES, data_digest
from cepaper.training.sgd import final_error, init_seed, train_recipe


@dataclass(frozen=True)
class Network:
    """The ResNeXt every model of a grid is, but its ``CxDd`` config: ``arch`` (a key of
    ``cepaper.complexity.ARCHS``), ``classes`` outputs, and for a scaled-down CIFAR ResNeXt its ``stages``
    and ``depth`` (:func:`cepaper.models.resnext.resnext`; ``None``: the architecture's)."""

    arch: str = "resnext29"
    classes: int = 10
    stages: tuple | None = None
    depth: int | None = None

    def scaled(self):
        """``stages``/``depth`` where given: the keyword arguments of :func:`~cepaper.models.resnext.resnext`."""
        net = (("stages", None if self.stages is None else tuple(self.stages)), ("depth", self.depth))
        return {k: v for k, v in net if v is not None}

    def build(self, config):
        """The model of ``config`` (``CxDd``), with the caller's initial weights (torch's generator)."""
        from cepaper.models.resnext import resnext

        return resnext(self.arch, config, self.classes, **self.scaled())


@dataclass(frozen=True)
class Hardware:
    """How the runs use the machine (none of it defines a run): the torch ``device``, the channels-last
    memory format, bfloat16 autocast and the DataLoader ``workers`` of a folder dataset
    (:func:`cepaper.training.sgd.train_recipe`'s)."""

    device: str = "cpu"
    channels_last: bool = False
    bf16: bool = False
    workers: int = 0


def train_recipe_grid(
    configs,
    dataset,
    train,
    test,
    seeds,
    *,
    net=Network(),
    recipe_name="cifar",
    epochs=None,
    cache=None,
    hardware=Hardware(),
    launcher=None,
    progress=False,
):
    """Train every ResNeXt ``net`` of ``configs`` (``CxDd``, :class:`Network`) on ``train`` (evaluated on
    ``test``, both of ``dataset``) once per seed of ``seeds`` with recipe ``recipe_name`` (a key of
    ``RECIPES``; ``epochs``: scaled to that many, :meth:`~cepaper.training.recipes.Recipe.scaled`) on
    ``hardware`` (:class:`Hardware`); one record per run.

    A record: ``dataset, arch, config, recipe, seed, params, history``
    (:func:`cepaper.training.sgd.train_recipe`), ``final_top1``, ``final_top5`` (the errors after the
    last epoch) and ``wall_s``. With ``cache`` (a folder),
    finished runs are ``<key>.json`` there and the running one checkpoints to ``<key>.pt`` every epoch.

    The run cache (:func:`cepaper.runs.cached_run`): ``key`` is the run's definition (model,
    recipe, data, seed, epochs, precision; not the device, nor the number of processes), each record
    carries its code version (``code``: commit and file digests); after a change of the training code
    a finished run is reused with ``stale`` saying which commit made it and which files changed since
    (``None``: made by this code); the launcher's ``rerun_stale`` trains stale runs again
    (:func:`stale_runs` lists them).

    ``launcher`` (:class:`cepaper.training.executors.Launcher`; ``None``: here, one after another): how
    the runs are launched. With its ``missing_ok`` a run whose job failed (or, ``wait=False``, has not
    finished) is a record ``dataset, arch, config, recipe, seed, missing`` (``"failed"``/``"pending"``),
    ``why``, ``job`` instead of an error (:func:`missing_runs` lists them; :func:`grid_summary` leaves
    them out). In a process group every rank calls this alike: each run trains across the ranks, or,
    for a recipe the ranks cannot share (:func:`cepaper.training.distributed.shares`: ``cifar_1gpu``),
    the runs are dealt over the ranks, each trained whole on its rank's own GPU.
    """
    choice("recipe_name", recipe_name, tuple(RECIPES))
    for name, value, kind in (("net", net, Network), ("hardware", hardware, Hardware)):
        if not isinstance(value, kind):
            raise ValueError(f"{name} must be a grids.{kind.__name__}, got {value!r}")
    seeds = [int(s) for s in seeds]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must name at least one seed, each an integer >= 0, got {seeds}")
    launcher = launcher or executors.Launcher()
    data = {"train": data_digest(train), "test": data_digest(test)} if cache else None
    jobs = [
        dict(
            dataset=dataset,
            arch=net.arch,
            config=config,
            seed=seed,
            recipe=recipe_name,
            classes=net.classes,
            epochs=epochs,
            data=data,
            bf16=hardware.bf16,
            channels_last=hardware.channels_last,
            device=str(hardware.device),
            **{k: list(v) if k == "stages" else v for k, v in net.scaled().items()},
        )
        for config in configs
        for seed in seeds
    ]
    w = distributed.world()
    # a recipe whose per-GPU batch is its whole batch (cifar_1gpu) cannot share a run between the ranks:
    # each rank trains whole runs of its own, on its own GPU, and the records are gathered
    shared = distributed.shares(recipes.recipe(recipe_name), w.size)
    device = hardware.device
    if not shared and torch.device(device).type == "cuda" and torch.device(device).index is None:
        device = torch.device("cuda", w.local_rank)

    def one(job, checkpoint):
        torch.manual_seed(init_seed(job["seed"], job["config"]))
        model = net.build(job["config"])
        t0 = time.perf_counter()
        hist = train_recipe(
            model,
            train,
            test,
            recipe_name,
            epochs=epochs,
            seed=job["seed"],
            checkpoint=checkpoint,
            progress=progress,
            **{**asdict(hardware), "device": device},
        )
        return {
            "dataset": dataset,
            "arch": net.arch,
            "config": job["config"],
            "recipe": recipe_name,
            "seed": job["seed"],
            "params": sum(p.numel() for p in model.parameters()),
            "history": hist,
            "final_top1": final_error(hist),
            "final_top5": final_error(hist, "test_top5"),
            "wall_s": time.perf_counter() - t0,
        }

    out = launcher.run_grid(
        jobs,
        one,
        shared=shared,
        cache=cache,
        required=RECORD_KEYS,
        progress=progress,
        desc=f"{dataset} runs",
        key=definition,
        modules=(__name__,),  # and all it imports: the model, recipes, loop, loaders, ranks
    )
    return [
        {**{k: job[k] for k in ("dataset", "arch", "config", "recipe", "seed")}, **r} if r.get("missing") else r
        for job, r in zip(jobs, out)
    ]


def definition(job):
    """What defines a run (its cache key): the job without the device it runs on, its recipe by value
    (every setting, the epochs applied; not its citation)."""
    rec = recipes.recipe(job["recipe"])
    rec = rec.scaled(job["epochs"]) if job.get("epochs") is not None else rec
    return {
        **{k: v for k, v in job.items() if k != "device"},
        "recipe": {k: v for k, v in asdict(rec).items() if k != "source"},
    }


def stale_runs(records):
    """The runs of ``records`` made by older code: ``dataset, config, recipe, seed, commit, files``."""
    return [
        {**{k: r[k] for k in ("dataset", "config", "recipe", "seed")}, **r["stale"]} for r in records if r.get("stale")
    ]


def finished_runs(records):
    """The records of ``records`` that are runs with results (not :func:`missing_runs`)."""
    return [r for r in records if not r.get("missing")]


def missing_runs(records):
    """The runs of ``records`` without results: ``dataset, config, recipe, seed, missing, why, job``."""
    return [
        {k: r.get(k) for k in ("dataset", "config", "recipe", "seed", "missing", "why", "job")}
        for r in records
        if r.get("missing")
    ]


def _runs(n):
    return f"{n} run{'' if n == 1 else 's'}"


def run_status(records):
    """Sentences on a grid's runs: how many finished, how many are missing (failed, pending: the
    tables show the others) and how many are stale (made by older code: which commit, which files
    changed since); ``""`` when every run finished and none is stale."""
    done, lost, old = finished_runs(records), missing_runs(records), stale_runs(records)
    if not lost and not old:
        return ""
    out = [f"{len(done)} of the {_runs(len(records))} finished."]
    if lost:
        kinds = []
        for state in ("failed", "pending"):
            ms = [m for m in lost if m["missing"] == state]
            if ms:
                kinds.append(
                    f"{len(ms)} {state}"
                    + (f", e.g. {ms[0]['config']} seed {ms[0]['seed']}: {ms[0]['why']}" if state == "failed" else "")
                )
        out.append(
            f"{len(lost)} {'is' if len(lost) == 1 else 'are'} missing ({'; '.join(kinds)}): the tables show "
            "the finished runs, and running again resumes the others."
        )
    if old:
        commits = {}
        for s in old:
            commits.setdefault((s["commit"] or "unknown")[:12], set()).update(s["files"])
        out.append(
            f"{_runs(len(old))} {'is' if len(old) == 1 else 'are'} stale, trained by older code ("
            + "; ".join(f"commit {c}, changed since: {', '.join(sorted(f))}" for c, f in commits.items())
            + "): reused as they are, and --rerun-stale trains them again."
        )
    return " ".join(out)


RECORD_KEYS = ("dataset", "arch", "config", "recipe", "seed", "params", "history", "final_top1", "final_top5", "wall_s")


def grid_summary(records, last=1):
    """Per dataset, model and recipe: the mean over runs of each run's test error averaged over its
    last ``last`` epochs (:func:`final_error`; the paper's is
    ``cepaper.sections.paper.STATISTICS[...]["last_epochs"]``),
    its standard error (``nan`` for one run: undefined) and the number of runs. Columns ``dataset,
    arch, config, recipe, params, top1, top1_sem, top5, runs, stale`` (``stale``: how many of the runs
    older code made, :func:`stale_runs`). Runs without results (:func:`missing_runs`) are left out:
    a model none of whose runs finished has no row."""
    last = positive_int("last", last)
    records = finished_runs(records)
    df = pd.DataFrame(
        [
            {
                **{k: r[k] for k in ("dataset", "arch", "config", "recipe", "params")},
                "final_top1": final_error(r["history"], "test_top1", last),
                "final_top5": final_error(r["history"], "test_top5", last),
                "stale": bool(r.get("stale")),
            }
            for r in records
        ],
        columns=["dataset", "arch", "config", "recipe", "params", "final_top1", "final_top5", "stale"],
    )
    g = df.groupby(["dataset", "arch", "config", "recipe"], sort=False)
    out = g.agg(
        params=("params", "first"),
        top1=("final_top1", "mean"),
        top1_sd=("final_top1", "std"),
        top5=("final_top5", "mean"),
        runs=("final_top1", "size"),
        stale=("stale", "sum"),
    ).reset_index()
    out["top1_sem"] = out.pop("top1_sd") / np.sqrt(out["runs"])
    return out
