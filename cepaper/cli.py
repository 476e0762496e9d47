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

from cepaper import cli_alpha, cli_args, cli_design, cli_train
from cepaper.cli_args import STDOUT, UsageError, _cli_type, _positive_int_arg, emit


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
    p.add_argument(
        "--replace",
        action="store_true",
        help="publish a run with -p into the profile's own folder, replacing its results (default: apart, "
        "under results/<profile>+<overrides>/, so the book's runs and yours never overwrite each other)",
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
            records = pipeline.run(
                args.sections,
                args.profile,
                overrides,
                force=args.force,
                reuse_stored=args.reuse,
                apart=not args.replace,
            )
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


def commands():
    """The ``_add_<name>`` of every subcommand, in ``--help`` order (params and design are
    :mod:`cepaper.cli_design`, fit-alpha :mod:`cepaper.cli_alpha`, train :mod:`cepaper.cli_train`)."""
    return [
        _add_run,
        _add_book,
        cli_design.add_params,
        cli_design.add_design,
        cli_alpha.add_fit_alpha,
        cli_train.add_train,
    ]


def build_parser():
    import cepaper

    parser = argparse.ArgumentParser(prog="cepaper", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cepaper {cepaper.__version__}")
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
    import functools
    import threading
    import warnings

    previous_show = warnings.showwarning
    warnings.showwarning = functools.partial(cli_args.show_warning, args.command)

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
    except Exception as e:  # a bug: still one line, with where it happened (or an optional dependency missing)
        ours = isinstance(e, ImportError) and _factory_spec(args) is None  # not a factory's own import
        extra = cli_args.EXTRAS.get((getattr(e, "name", None) or "").split(".")[0]) if ours else None
        if extra is not None:
            fail(2, f"error: {e.name} is not installed; `pip install 'cepaper[{extra}]'` installs what it needs")
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
        warnings.showwarning = previous_show
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.SIG_DFL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
