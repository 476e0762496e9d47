"""The ``cepaper`` command: run the paper's notebooks, build the book, design ensembles.

One module per command (:mod:`~cepaper.cli.run`: run and book; :mod:`~cepaper.cli.design`: params and
design; :mod:`~cepaper.cli.alpha`: fit-alpha; :mod:`~cepaper.cli.train`: train), each with an
``add_<name>(sub)`` that declares its arguments and sets ``func`` to the command, a function of its module
named after it (``design.design``, ``alpha.fit_alpha``); :func:`commands` lists them. Each module imports
at the top, except the modules that would load torch (or papermill, submitit) for ``--help``: those are
imported where used, marked ``# heavy: ...``. ``python -m cepaper`` and ``python -m cepaper.cli`` run it.

Errors in the arguments exit with status 2 and a message that names the argument and what is allowed; so
do the errors a user can cause while a command runs (a full disk, a folder that is not writable, a
damaged file, broken YAML): one line that names the file and says what to do, never a traceback; so does
a section that is already running in another process. A notebook that fails exits with status 1; Ctrl-C
with 130 and SIGTERM with 143 (the shells' 128 + signal), after cleaning up. A ``--module`` factory is
the user's code: what it prints goes to stderr (``--json`` stays JSON), and what it raises,
``SystemExit`` included, is one line naming it.
"""

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading

import cepaper
from cepaper.book import results
from cepaper.cli import alpha as cli_alpha
from cepaper.cli import common as cli_common
from cepaper.cli import design as cli_design
from cepaper.cli import run as cli_run
from cepaper.cli import train as cli_train
from cepaper.cli.common import STDOUT, UsageError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that cleanup runs as for Ctrl-C (staging folders removed,
    locks released, child processes stopped)."""


def commands():
    """The ``add_<name>`` of every subcommand, in ``--help`` order."""
    return [
        cli_run.add_run,
        cli_run.add_book,
        cli_design.add_params,
        cli_design.add_design,
        cli_alpha.add_fit_alpha,
        cli_train.add_train,
    ]


def build_parser():
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
    """The ``cepaper`` command on ``argv`` (default ``sys.argv[1:]``): 0, or ``SystemExit`` with its status.

    A ``--module`` factory is the user's code, and may leave a non-daemon thread running, which would keep
    the process alive after the command: then, with one warning naming the factory, the process ends at
    once with the command's status (``os._exit`` after flushing)."""
    before = set(threading.enumerate())
    _FACTORY.clear()
    status = 1
    try:
        status = command(argv)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        raise
    finally:
        stray = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        if stray and _FACTORY:
            names, (name, spec) = ", ".join(t.name for t in stray), _FACTORY[-1]
            print(
                f"cepaper {name}: warning: --module {spec} left {len(stray)} thread(s) running ({names}); "
                "the command ends without waiting for them",
                file=sys.stderr,
            )
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(status)
    return status


#: The command and ``--module`` factory running, if any (named when it leaves threads running).
_FACTORY = []


def command(argv=None):
    """:func:`main` without its end: parse ``argv`` and run the command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # under torchrun every rank meets the same error and says it, naming its rank: the first rank to exit
    # makes torchrun stop the others, so a reason said by rank 0 alone could be lost with it
    rank = os.environ.get("RANK") if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else None
    who = f"cepaper {args.command}" + (f" (rank {rank})" if rank is not None else "")
    fail = lambda status, text: parser.exit(status, f"{who}: {text}\n")
    import functools
    import warnings

    previous_show = warnings.showwarning
    warnings.showwarning = functools.partial(cli_common.show_warning, args.command)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _on_sigterm) or signal.SIG_DFL) if main_thread else None
    # Ctrl-C (SIGINT) is KeyboardInterrupt even where this process was started with SIGINT ignored
    # (a background job of a shell script, nohup ... &): a SIGINT sent to it still stops it cleanly
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler) if main_thread else None
    try:
        if _factory_spec(args) is None:
            args.func(args)
        else:  # the factory's own prints (at import, when called) go to stderr: --json stays JSON
            _FACTORY.append((args.command, _factory_spec(args)))
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
        extra = cli_common.EXTRAS.get((getattr(e, "name", None) or "").split(".")[0]) if ours else None
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
