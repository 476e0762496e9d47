"""The ``cepaper`` command: run the paper's notebooks, build the book, design ensembles.

Each subcommand is one ``_add_<name>(sub)`` function that declares its arguments and sets
``func``; :func:`commands` lists them. Errors in the arguments exit with status 2 and a message that
names the argument and what is allowed; so do the errors a user can cause while a command runs
(a full disk, a folder that is not writable, a damaged file, broken YAML): one line that names the
file and says what to do, never a traceback; so does a section that is already running in another
process. A notebook that fails exits with status 1; Ctrl-C with 130 and SIGTERM with 143 (the shells'
128 + signal), after cleaning up. A ``--module`` factory is the user's code: what it prints goes to
stderr (``--json`` stays JSON), and what it raises, ``SystemExit`` included, is one line naming it.
"""

import argparse
import contextlib
import errno
import os
import signal
import sys

from cepaper import cli_alpha, cli_design
from cepaper.cli_args import (
    NO_GPU,
    STDOUT,
    UsageError,
    _cli_type,
    _config_arg,
    _nonneg_int_arg,
    _positive_int_arg,
    emit,
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that cleanup runs as for Ctrl-C (staging folders removed,
    locks released, child processes stopped)."""


REUSE_HELP = (
    "execute nothing: use the executed notebooks stored with the results "
    "(results/<profile>/<section>/notebook.ipynb, e.g. a committed GPU run)"
)


def _add_run(sub):
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
    from cepaper.training import executors

    p.add_argument(
        "--executor",
        choices=executors.EXECUTORS,
        help="sections that train grids (cifar, imagenet): the runs in the notebook's process "
        "(inprocess, the default), or each a submitit job: local (this machine's GPUs) or slurm",
    )
    p.add_argument(
        "--gpus-per-run",
        type=_cli_type(_positive_int_arg),
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
    p.add_argument("--json", action="store_true", help="print the run records as JSON")

    def run(args):
        from cepaper.book import pipeline, profiles, ranks

        overrides = profiles.parse_overrides(args.parameter) + _run_flags(args)
        if ranks.launched():  # torchrun: the sections that train grids train every run across the processes
            if args.reuse:
                raise UsageError("--reuse executes nothing: run it as one process, without torchrun")
            with _run_terms():
                records = ranks.run(args.sections, args.profile, overrides, force=args.force)
            if os.environ["RANK"] == "0":
                emit(args, records, pipeline.format_records(records))
            return
        with _run_terms():
            records = pipeline.run(args.sections, args.profile, overrides, force=args.force, reuse_stored=args.reuse)
        emit(args, records, pipeline.format_records(records))

    p.set_defaults(func=run)


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
        from cepaper import catalog

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
    from cepaper.book import profiles, results

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


def _add_book(sub):
    p = sub.add_parser("book", help="run the notebooks of a profile, then build the HTML book")
    p.add_argument("--profile", default="quick", help="parameter profile: a file profiles/<name>.yaml")
    p.add_argument("--force", action="store_true", help="re-execute every notebook")
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)

    def book(args):
        from cepaper.book import render

        with _run_terms():
            index = render.book(args.profile, force=args.force, reuse_stored=args.reuse)
        print(f"The book is at {index}")

    p.set_defaults(func=book)


# --- `cepaper train` (Sec. 4.2, App. A: one ResNeXt with the paper's recipe) --------------------------


def _add_train(sub):
    from cepaper import complexity
    from cepaper.training import grids, recipes

    p = sub.add_parser("train", help="train one ResNeXt with a paper recipe (Sec. 4.2, App. A); resumable")
    pos_int = _cli_type(_positive_int_arg)
    p.add_argument("--arch", required=True, choices=[a for a in complexity.ARCHS if a.startswith("resnext")])
    p.add_argument("--config", required=True, type=_cli_type(_config_arg), metavar="CxDd", help="e.g. 37x10d")
    p.add_argument("--dataset", required=True, choices=list(recipes.DATASET_RECIPE), help="a cepaper.data dataset")
    p.add_argument(
        "--recipe",
        choices=list(recipes.RECIPES),
        help="default: the dataset's (cifar for CIFAR: BatchNorm over 16 images, as on 8 GPUs; cifar_1gpu: over 128)",
    )
    p.add_argument("--epochs", type=pos_int, help="default: the recipe's (milestones scale with it)")
    p.add_argument("--runs", type=pos_int, default=1, help="runs (seeds seed..seed+runs-1)")
    p.add_argument("--seed", type=_cli_type(_nonneg_int_arg), default=0, help="first seed (>= 0)")
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
    p.add_argument(
        "--workers", type=_cli_type(_nonneg_int_arg), default=8, help="DataLoader workers (ImageNet folders)"
    )
    from cepaper.training import distributed

    p.add_argument(
        "--rerun-stale",
        action="store_true",
        help="train again the finished runs that older training code made (default: reuse them, marked stale)",
    )
    from cepaper.training import executors

    p.add_argument(
        "--executor",
        choices=executors.EXECUTORS,
        default="inprocess",
        help="the runs (--runs) one after another here (default), or each a submitit job: local "
        "(this machine's GPUs, one each) or slurm (a SLURM cluster)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=_cli_type(_positive_int_arg),
        default=1,
        help="with --executor: the GPUs of each run's job, one rank each (the run across them, DDP)",
    )
    p.add_argument(
        "--backend",
        choices=distributed.BACKENDS,
        help="under torchrun: the process group's backend (default nccl on GPUs, gloo on CPUs)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    def train(args):
        try:
            return _train(args)
        finally:
            distributed.shutdown()

    def _train(args):
        from cepaper import data
        from cepaper import catalog
        from cepaper.book import results
        from cepaper.sections import paper
        from cepaper import files

        if (args.arch in ("resnext50", "resnext101")) != (args.dataset == "imagenet"):
            raise UsageError(
                f"--arch {args.arch} does not fit --dataset {args.dataset}: resnext50/101 are the "
                f"ImageNet (224x224) models, resnext29/38 the CIFAR-style ones (32x32, 64x64)"
            )
        rec = args.recipe or recipes.DATASET_RECIPE[args.dataset]
        results.check_device(args.device, fix=NO_GPU)
        distributed.check_backend(args.backend, args.device)
        if args.download and catalog.data_root(args.data_root) is None:
            raise UsageError("--download needs a data root: pass --data-root, or set CEPAPER_DATA")
        if distributed.launched():  # the world size is checked before anything is loaded or written
            distributed.check_world(recipes.recipe(rec), int(os.environ["WORLD_SIZE"]))
        w, device = distributed.setup(args.device, args.backend)
        if w.size > 1 and args.executor != "inprocess":
            raise UsageError("--executor runs each run as its own job; under torchrun leave it out (inprocess)")
        ex = executors.executor(
            args.executor, results.checkpoint_dir("cifar", "cli").parent / "jobs", gpus_per_job=args.gpus_per_run
        )
        per_run = w.size * (args.gpus_per_run if ex is not None else 1)
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
            arch=args.arch,
            recipe_name=rec,
            classes=classes,
            epochs=args.epochs,
            cache=results.checkpoint_dir(run.section, "cli"),
            device=args.device,
            channels_last=args.channels_last,
            bf16=args.bf16,
            workers=args.workers,
            progress=True,
            rerun_stale=args.rerun_stale,
            executor=ex,
        )
        if not w.writer:
            return None  # rank 0 saves and reports
        last = paper.STATISTICS[run.section]["last_epochs"]
        summ = grids.grid_summary(records, last=last)
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
            f"top-1 {r.top1:.2f}%  top-5 {r.top5:.2f}% ({per_run} process(es) a run; "
            + ("final epoch" if last == 1 else f"mean of the last {last} epochs")
            + f")\nsaved to {payload['saved']}"
            + "".join(
                f"\nstale: seed {s['seed']} was trained by older code "
                f"(commit {(s['commit'] or 'unknown')[:12]}; changed since: {', '.join(s['files'])}); "
                "--rerun-stale trains it again"
                for s in stale
            )
        )
        emit(args, payload, text)

    p.set_defaults(func=train)


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


def commands():
    """The ``_add_<name>`` of every subcommand, in ``--help`` order (params and design are
    :mod:`cepaper.cli_design`, fit-alpha :mod:`cepaper.cli_alpha`)."""
    return [_add_run, _add_book, cli_design.add_params, cli_design.add_design, cli_alpha.add_fit_alpha, _add_train]


def build_parser():
    parser = argparse.ArgumentParser(prog="cepaper", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in commands():
        add(sub)
    return parser


# errno -> (what happened, what to do); the file is named before it
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some space there and run again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space there and run again"),
    errno.EFBIG: (
        "file too large",
        "it passed the file-size limit (`ulimit -f`) or the filesystem's largest "
        "file: raise the limit or write to another filesystem, then run again",
    ),
    errno.EACCES: ("permission denied", "fix its permissions, then run again"),
    errno.EPERM: ("operation not permitted", "fix its permissions, then run again"),
    errno.EROFS: ("the filesystem is read-only", "write somewhere writable instead"),
    errno.EXDEV: ("it cannot be moved across filesystems", "keep it and its destination on one filesystem"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.EISDIR: ("it is a folder, not a file", "check the path"),
    errno.EIO: ("input/output error", "check the disk"),
    errno.EMFILE: ("too many open files", "raise the limit (`ulimit -n`)"),
}


def os_error_line(e):
    """One line for an ``OSError``: the file, what happened, what to do (and any note the pipeline
    added: which section stopped, that the last good results are kept)."""
    notes = " ".join(getattr(e, "__notes__", ()))
    if e.errno is None:  # ours, with its own message
        return f"{e}{' ' + notes if notes else ''}"
    files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what, fix = _OS_ERRORS.get(e.errno, (e.strerror or os.strerror(e.errno), "check it, then run again"))
    if e.filename is not None and e.errno in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
    ):
        from cepaper.book import results

        if os.path.abspath(e.filename).startswith(os.path.abspath(results.root()) + os.sep):
            fix += ", or point CEPAPER_RESULTS at another folder"
    code = errno.errorcode.get(e.errno, str(e.errno))
    return f"{files or 'a file'}: {what} ({code}); {fix}{' ' + notes if notes else ''}"


def _factory_spec(args):
    """The ``--module`` of a command given a factory (``FILE.py:FUNC``, ``package.module:FUNC``,
    ``torchvision:NAME``), else ``None``."""
    spec = getattr(args, "module", None)
    return spec if isinstance(spec, str) and ":" in spec else None


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    fail = lambda status, text: parser.exit(status, f"cepaper {args.command}: {text}\n")
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _on_sigterm) or signal.SIG_DFL) if main_thread else None
    # Ctrl-C (SIGINT) is KeyboardInterrupt even where this process was started with SIGINT ignored
    # (a background job of a shell script, nohup ... &): a SIGINT sent to it still stops it cleanly
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler) if main_thread else None
    try:
        if _factory_spec(args) is None:
            args.func(args)
        else:  # the factory's own prints (at import, when called) go to stderr: --json stays JSON
            token = STDOUT.set(sys.stdout)
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    args.func(args)
            finally:
                STDOUT.reset(token)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
    except OSError as e:  # before ValueError's handler: FileNotFoundError, PermissionError, ...
        fail(2, f"error: {os_error_line(e)}")
    except (UsageError, ValueError) as e:
        spec = _factory_spec(args)
        named = spec is not None and str(e).startswith("factory:")  # the factory's messages name the spec
        fail(2, f"error: --module {spec}: {str(e)[len('factory: ') :]}" if named else f"error: {e}")
    except RuntimeError as e:  # a notebook raised, or the book did not build; a section already running: 2
        pipeline = sys.modules.get("cepaper.book.pipeline")
        fail(2 if pipeline is not None and isinstance(e, pipeline.Busy) else 1, f"error: {e}")
    except KeyboardInterrupt as e:
        import logging  # the interrupted kernel's tasks are collected at exit: no "never retrieved" traceback

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        status, what = (143, "terminated (SIGTERM)") if isinstance(e, Terminated) else (130, "interrupted (Ctrl-C)")
        fail(
            status,
            f"{what}; nothing half-written is kept and the last good results stay; run the same "
            "command again to continue (train and fit-alpha --checkpoint resume)",
        )
    except Exception as e:  # a bug: still one line, with where it happened
        if os.environ.get("CEPAPER_TRACEBACK"):
            raise
        import traceback

        last = traceback.extract_tb(e.__traceback__)[-1]
        fail(
            1,
            f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            f"(at {os.path.basename(last.filename)}:{last.lineno}); this is a bug in cepaper, please "
            "report it; CEPAPER_TRACEBACK=1 shows the traceback",
        )
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.SIG_DFL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
