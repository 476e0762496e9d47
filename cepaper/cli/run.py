"""`cepaper run` and `cepaper book`: execute the section notebooks of a profile with papermill (cached),
publish their results, and build the HTML book."""

import contextlib
import os

from cepaper.book import profiles, results
from cepaper.cli.common import UsageError, cli_type, emit, positive_int_arg
from cepaper.training import executors

REUSE_HELP = (
    "execute nothing: use the executed notebooks stored with the results "
    "(results/<profile>/<section>/notebook.ipynb, e.g. a committed GPU run)"
)


def add_run(sub):
    p = sub.add_parser("run", help="execute section notebooks with papermill (cached)")
    p.add_argument("sections", nargs="*", metavar="SECTION", help="sections to run (default: all in the book)")
    p.add_argument("--profile", default="quick", help="parameter profile: a file profiles/<name>.yaml")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override one notebook parameter (YAML value)",
    )
    p.add_argument("--force", action="store_true", help="execute even when the cache is up to date")
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)
    p.add_argument(
        "--executor",
        choices=executors.EXECUTORS,
        help="sections that train grids (cifar, imagenet): the runs in the notebook's process "
        "(inprocess, the default), or each a submitit job: local (this machine's GPUs) or slurm",
    )
    p.add_argument(
        "--gpus-per-run",
        type=cli_type(positive_int_arg),
        help="sections that train grids, with --executor: the GPUs of each run's job, one rank each (DDP)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="sections that train grids, with --executor: do not wait for the jobs; the page shows the "
        "finished runs and counts the others pending, and running again gathers them (no run is submitted twice)",
    )
    p.add_argument(
        "--rerun-stale",
        action="store_true",
        help="sections that train grids: train again the finished runs that older training code "
        "made (default: reuse them, counted stale on the page)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="publish a run with -p into the profile's own folder, replacing its results (default: apart, "
        "under results/<profile>+<overrides>/, so the book's runs and yours never overwrite each other)",
    )
    p.add_argument("--json", action="store_true", help="print the run records as JSON")

    p.set_defaults(func=run)


def run(args):
    """`cepaper run`: the sections' notebooks of a profile executed (cached) and published
    (:func:`cepaper.book.pipeline.run`; under torchrun :func:`cepaper.book.ranks.run`)."""
    from cepaper.book import pipeline  # heavy: papermill (and no torch: the notebooks' kernels import it)

    overrides = profiles.parse_overrides(args.parameter) + _run_flags(args)
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:  # one of several processes: only then torch.distributed
        from cepaper.book import ranks  # heavy: torch

        if ranks.launched():  # torchrun: the sections that train grids train every run across the processes
            if args.reuse:
                raise UsageError("--reuse executes nothing: run it as one process, without torchrun")
            with _run_terms():
                records = ranks.run(args.sections, args.profile, overrides, force=args.force)
            if os.environ["RANK"] == "0":
                emit(args, records, pipeline.format_records(records))
            return
    with _run_terms():
        records = pipeline.run(
            args.sections,
            args.profile,
            overrides,
            force=args.force,
            reuse_stored=args.reuse,
            apart=not args.replace,
        )
    emit(args, records, pipeline.format_records(records))


@contextlib.contextmanager
def _run_terms():
    """A notebook's error (a RuntimeError naming what the section raised) in the terms of `cepaper run`
    and `cepaper book`: the notebooks' parameters are ``-p NAME VALUE`` and they download nothing, so a
    missing dataset says how to put it under the data root or fetch it with `cepaper train --download`,
    not ``download=True``."""
    try:
        yield
    except RuntimeError as e:
        text = str(e)
        if not any(k in text for k in ("download=True", "root=", "pass n=...")):
            raise
        from cepaper import catalog  # heavy: torch

        for name, how in catalog.HOW_TO_GET.items():
            text = text.replace(how, _how_to_get(name, how))
        for library, cli_text in (
            ("root=None", "no -p data_root"),
            ("pass root=...", "pass -p data_root DIR"),
            ("pass n=...", "pass -p n_train N / -p n_test N"),
            ("download=True", "--download of cepaper train"),
        ):
            text = text.replace(library, cli_text)
        raise type(e)(text) from None


def _how_to_get(name, how):
    """How to get the dataset ``name`` (its library text ``how``) for `cepaper run`: the files under the
    data root (``-p data_root DIR`` or ``$CEPAPER_DATA``); the CIFARs fetched by `cepaper train
    --download` (MNIST by no command)."""
    root = "the data root (-p data_root DIR, or $CEPAPER_DATA)"
    if name in ("cifar10", "cifar100"):
        put = {"cifar10": "put `cifar10_jpeg.npz` or `cifar10.npz`", "cifar100": "put cifar-100-python/"}[name]
        return (
            f"{put} in {root}, or fetch it there with `cepaper train --arch resnext29 --config 1x4d --dataset "
            f"{name} --data-root DIR --download --epochs 1 --n-train 16 --n-test 16` (it downloads with "
            "torchvision, then trains a one-epoch check)"
        )
    if name == "mnist":
        return f"put `mnist.npz` (keys x_train, y_train, x_test, y_test) in {root} (no cepaper command downloads MNIST)"
    return how.replace("the data root", root)


def _run_flags(args):
    """The overrides of `cepaper run`'s ``--executor`` and ``--rerun-stale``: parameters of the
    sections that train grids; a section without such a parameter is a UsageError."""
    flags = [
        (flag, name, value)
        for flag, name, value in (
            ("--executor", "executor", args.executor),
            ("--gpus-per-run", "gpus_per_run", args.gpus_per_run),
            ("--no-wait", "wait", False if args.no_wait else None),
            ("--rerun-stale", "rerun_stale", args.rerun_stale or None),
        )
        if value is not None
    ]
    if not flags:
        return []
    sections = list(args.sections) or results.book_sections()
    declared = {s: profiles.notebook_parameters(profiles.notebook_path(s)) for s in sections}
    for flag, name, _ in flags:
        lacking = [s for s in sections if name not in declared[s]]
        if lacking:
            having = [
                s for s in results.book_sections() if name in profiles.notebook_parameters(profiles.notebook_path(s))
            ]
            raise UsageError(
                f"{flag} is a parameter ({name}) of the sections that train grids ({', '.join(having)}); "
                f"section{'s' if len(lacking) > 1 else ''} {', '.join(lacking)} "
                f"{'have' if len(lacking) > 1 else 'has'} none: name only those sections"
            )
    return [(name, value) for _, name, value in flags]


def add_book(sub):
    p = sub.add_parser("book", help="run the notebooks of a profile, then build the HTML book")
    p.add_argument("--profile", default="quick", help="parameter profile: a file profiles/<name>.yaml")
    p.add_argument("--force", action="store_true", help="re-execute every notebook")
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)

    p.set_defaults(func=book)


def book(args):
    """`cepaper book`: :func:`run` of every section, then the HTML book (:func:`cepaper.book.render.book`)."""
    from cepaper.book import render  # heavy: torch

    with _run_terms():
        index = render.book(args.profile, force=args.force, reuse_stored=args.reuse)
    print(f"The book is at {index}")
