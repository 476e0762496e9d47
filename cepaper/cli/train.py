"""`cepaper train` (Sec. 4.2, App. A): one ResNeXt trained with a paper recipe, resumable; its runs in
this process, under torchrun (DDP), or each a submitit job. Its record is named by what defines the
runs (:func:`_train_name`), and ``data.load``'s messages are given in the command's flags."""

import os

from cepaper import complexity, files
from cepaper.book import results
from cepaper.cli.common import (
    UsageError,
    check_device,
    cli_type,
    config_arg,
    emit,
    nonneg_int_arg,
    positive_int_arg,
)
from cepaper.sections import paper
from cepaper.training import executors, recipes

#: cepaper.training.distributed.BACKENDS, here so that parsing the arguments loads no torch (a test checks they agree)
BACKENDS = ("nccl", "gloo")


def add_train(sub):
    p = sub.add_parser("train", help="train one ResNeXt with a paper recipe (Sec. 4.2, App. A); resumable")
    pos_int = cli_type(positive_int_arg)
    p.add_argument("--arch", required=True, choices=[a for a in complexity.ARCHS if a.startswith("resnext")])
    p.add_argument("--config", required=True, type=cli_type(config_arg), metavar="CxDd", help="e.g. 37x10d")
    p.add_argument("--dataset", required=True, choices=list(recipes.DATASET_RECIPE), help="a cepaper.data dataset")
    p.add_argument(
        "--recipe",
        choices=list(recipes.RECIPES),
        help="default: the dataset's (cifar for CIFAR: BatchNorm over 16 images, as on 8 GPUs; cifar_1gpu: over 128)",
    )
    p.add_argument("--epochs", type=pos_int, help="default: the recipe's (milestones scale with it)")
    p.add_argument("--runs", type=pos_int, default=1, help="runs (seeds seed..seed+runs-1)")
    p.add_argument("--seed", type=cli_type(nonneg_int_arg), default=0, help="first seed (>= 0)")
    p.add_argument("--n-train", type=pos_int, help="first N training images (default: all)")
    p.add_argument("--n-test", type=pos_int, help="first N test images (default: all)")
    p.add_argument("--data-root", help="data folder (default: $CEPAPER_DATA)")
    p.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download the CIFARs into the data root when they are not there",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--workers", type=cli_type(nonneg_int_arg), default=8, help="DataLoader workers (ImageNet folders)")
    p.add_argument(
        "--rerun-stale",
        action="store_true",
        help="train again the finished runs that older training code made (default: reuse them, marked stale)",
    )
    p.add_argument(
        "--executor",
        choices=executors.EXECUTORS,
        default="inprocess",
        help="the runs (--runs) one after another here (default), or each a submitit job: local "
        "(this machine's GPUs, one each) or slurm (a SLURM cluster)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=cli_type(positive_int_arg),
        default=1,
        help="with --executor: the GPUs of each run's job, one rank each (the run across them, DDP)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="under torchrun: the process group's backend (default nccl on GPUs, gloo on CPUs)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p.set_defaults(func=train)


def train(args):
    """`cepaper train`: ``--runs`` runs of one ResNeXt with a paper recipe
    (:func:`cepaper.training.grids.train_recipe_grid`), saved as one record (:func:`_train_name`); the process
    group, if any, shut down at the end."""
    from cepaper.training import distributed  # heavy: torch

    try:
        return _train(args)
    finally:
        distributed.shutdown()


def _train(args):
    from cepaper import catalog, data  # heavy: torch
    from cepaper.training import distributed, grids  # heavy: torch, pandas

    if (args.arch in ("resnext50", "resnext101")) != (args.dataset == "imagenet"):
        raise UsageError(
            f"--arch {args.arch} does not fit --dataset {args.dataset}: resnext50/101 are the "
            f"ImageNet (224x224) models, resnext29/38 the CIFAR-style ones (32x32, 64x64)"
        )
    rec = args.recipe or recipes.DATASET_RECIPE[args.dataset]
    check_device(args.device)
    distributed.check_backend(args.backend, args.device)
    if args.download and catalog.data_root(args.data_root) is None:
        raise UsageError("--download needs a data root: pass --data-root, or set CEPAPER_DATA")
    if distributed.launched():  # the world size is checked before anything is loaded or written
        distributed.check_world(recipes.recipe(rec), int(os.environ["WORLD_SIZE"]))
    w, device = distributed.setup(args.device, args.backend)
    if w.size > 1 and args.executor != "inprocess":
        raise UsageError("--executor runs each run as its own job; under torchrun leave it out (inprocess)")
    launcher = executors.launcher(
        args.executor,
        results.checkpoint_dir("cifar", "cli").parent / "jobs",
        gpus_per_run=args.gpus_per_run,
        rerun_stale=args.rerun_stale,
    )
    per_run = w.size * (args.gpus_per_run if args.executor != "inprocess" else 1)
    run = results.Run(
        "cifar" if args.dataset.startswith("cifar") else "imagenet",
        "cli",
        seed=args.seed,
        device=str(device),
        params={k: v for k, v in vars(args).items() if k != "func"},
        store=True,
    )
    files.check_writable(run.dir)  # before the training, not after
    load = lambda: tuple(
        _load_split(data, args, split, n, flag)
        for split, n, flag in (("train", args.n_train, "--n-train"), ("test", args.n_test, "--n-test"))
    )
    tr, te = load() if w.writer else (None, None)  # rank 0 first: it may download
    distributed.barrier(w)
    tr, te = (tr, te) if w.writer else load()
    classes = {"cifar10": 10, "cifar100": 100}.get(args.dataset, 1000)
    records = grids.train_recipe_grid(
        [args.config],
        args.dataset,
        tr,
        te,
        range(args.seed, args.seed + args.runs),
        net=grids.Network(args.arch, classes),
        recipe_name=rec,
        epochs=args.epochs,
        cache=results.checkpoint_dir(run.section, "cli"),
        hardware=grids.Hardware(args.device, args.channels_last, args.bf16, args.workers),
        launcher=launcher,
        progress=True,
    )
    if not w.writer:
        return None  # rank 0 saves and reports
    last = paper.STATISTICS[run.section]["last_epochs"]
    summ = grids.grid_summary(records, last=last)
    epochs = {len(r["history"]["test_top1"]) for r in grids.finished_runs(records)}
    averaged = min(last, min(epochs, default=last))  # a run shorter than `last` epochs averages all it has
    name = _train_name(args, rec)
    run.save(name, {"records": records, "summary": summ.to_dict("records"), "world_size": per_run}, table=summ)
    r = summ.iloc[0]
    stale = grids.stale_runs(records)
    payload = {
        "summary": summ.to_dict("records"),
        "saved": str(run.dir / f"{name}.json"),
        "world_size": per_run,
        "stale": stale,
    }
    text = (
        f"{args.arch} {args.config} on {args.dataset} ({tr.source}), recipe {rec}, {int(r.runs)} run(s): "
        f"top-1 error {r.top1:.2f}%  top-5 error {r.top5:.2f}% ({per_run} process(es) a run; "
        + ("final epoch" if averaged == 1 else f"mean of the last {averaged} epochs")
        + f")\nsaved to {payload['saved']}"
        + "".join(
            f"\nstale: seed {s['seed']} was trained by older code "
            f"(commit {(s['commit'] or 'unknown')[:12]}; changed since: {', '.join(s['files'])}); "
            "--rerun-stale trains it again"
            for s in stale
        )
    )
    emit(args, payload, text)


def _train_name(args, rec):
    """The name of a `cepaper train` record: one per dataset, network, recipe, epochs, seeds and, when
    given, ``--n-train``/``--n-test`` (a run on 64 images never overwrites one on 256)."""
    subset = "".join(f"_{flag}{n}" for flag, n in (("ntrain", args.n_train), ("ntest", args.n_test)) if n is not None)
    return (
        f"train_{args.dataset}_{args.arch}_{args.config}_{rec}_e{args.epochs or 'all'}"
        f"_s{args.seed}-{args.seed + args.runs - 1}{subset}"
    )


# data.load's messages in the library's terms, and the flags of `cepaper train` that do the same
_DATA_FLAGS = (
    ("pass download=True", "pass --download"),
    ("download=True", "--download"),
    ("root=None", "no --data-root"),
    ("pass root=...", "pass --data-root"),
    ("pass n=...", "pass --n-train / --n-test"),
)


def _load_split(data, args, split, n, flag):
    """``data.load`` of one split for `cepaper train`: its errors name the command's flags, and a
    ``--n-train``/``--n-test`` above the split's size is an error (not silently the whole split)."""
    try:
        ds = data.load(args.dataset, split, root=args.data_root, download=args.download, n=n)
    except (FileNotFoundError, PermissionError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # the OS's own error: reported with its file
        text = str(e)
        for library, flag_text in _DATA_FLAGS:
            text = text.replace(library, flag_text)
        raise type(e)(text) from None
    if n is not None and len(ds) < n:
        raise UsageError(
            f"{flag} {n} is more than the {len(ds)} {split} images of {args.dataset} "
            f"({ds.source}); pass at most {flag} {len(ds)}, or leave it out for all of them"
        )
    return ds
