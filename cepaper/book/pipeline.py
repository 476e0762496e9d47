"""Notebooks → papermill (profiles, cache) → book: the execution of sections, the second step of
`cepaper run` (plan → execute → publish → render). It executes each step that
:func:`~cepaper.book.profiles.plan` made (a :class:`~cepaper.book.profiles.Step`, which knows where its
results go), and hands each successful run to :func:`~cepaper.book.publish.publish_run`.

A section is a jupytext notebook ``notebooks/NN_<section>.py`` whose ``parameters`` cell holds the
quick-profile defaults. A profile ``profiles/<name>.yaml`` maps each section to its parameters. The
book's table of contents (``_toc.yml``) names the sections and their order.

Executing a section writes ``_build/executed/<profile>/NN_<section>.ipynb`` and a record beside it.
The record's cache key hashes the notebook source, the parameters, and the source of every cepaper
module the notebook imports (transitively); it also lists the results files the notebook read, with
their hashes. A section re-executes when any of these change. While a notebook runs, its results go
to a staging folder that replaces ``results/<profile>/<section>`` only when the notebook succeeds, so
a failure leaves neither half-written results nor an executed notebook behind.
"""

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cepaper import files
from cepaper.book import results
from cepaper.book.cache import cache_key, file_digest, missing_runs, reads_fresh
from cepaper.book.profiles import notebook_path, plan
from cepaper.book.publish import STORED, publish_run, recover, tree_digest

REPO = results.REPO
BUILD = REPO / "_build"


# --- execution --------------------------------------------------------------------------------

# resolve_parameters() has checked every name against the notebook; papermill's own, looser parser
# misreads comments that contain "=" and would warn "Unable to parse line" and "Passed unknown
# parameter" for valid names.
logging.getLogger("papermill").addFilter(lambda r: "Passed unknown parameter" not in r.getMessage())
logging.getLogger("papermill.translators").setLevel(logging.ERROR)


RECORD_KEYS = (
    "section",
    "profile",
    "notebook",
    "params",
    "key",
    "wall_s",
    "device",
    "git_commit",
    "date",
    "reads",
    "published",
)  # what a run record holds (see execute)


def executed_path(section, profile, notebook=None):
    """The book's copy of a section's executed notebook, ``_build/executed/<profile>/NN_<section>.ipynb``
    (its run record beside it, ``.json``); ``notebook``: the section's notebook, when already known."""
    return BUILD / "executed" / profile / f"{(notebook or notebook_path(section)).stem}.ipynb"


def _executed(step):
    """:func:`executed_path` of a planned step, and its record's path."""
    out = executed_path(step.section, step.profile, step.notebook)
    return out, out.with_suffix(".json")


def valid_record(step, key):
    """The record of an up-to-date executed notebook, or ``None``: same key, the results it read
    unchanged, and its published results present and unchanged at the step's destination."""
    out, path = _executed(step)
    if not (path.exists() and out.exists()):
        return None
    # a damaged record is only a cache miss: moved aside, and the section re-executes
    record = files.read_cached(path, required=RECORD_KEYS)
    if record is None or not isinstance(record.get("reads"), dict):
        if path.exists():
            files.move_aside(path, "its reads are not a mapping")
        return None
    if record.get("key") != key or not reads_fresh(record):
        return None
    # its results must be where the plan says, as that run wrote them
    if tree_digest(step.dest) != record.get("published"):
        return None
    if missing_runs(step.dest):  # a grid's runs failed or pending: resume them
        return None
    return record


class Busy(RuntimeError):
    """The section is already running in another process (:func:`section_lock`)."""


@contextlib.contextmanager
def section_lock(section, profile):
    """Hold ``_build/locks/<profile>-<section>.lock`` while a section runs; refuse a second run.

    Runs of different sections, or of one section with different profiles, proceed at once."""
    path = BUILD / "locks" / f"{profile}-{section}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"section {section} (profile {profile}) is already running in another "
                f"process; wait for it to finish, then run again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def execute(step, key, rank=0, env=None):
    """Execute one planned section (a :class:`~cepaper.book.profiles.Step`) with papermill; return its
    record. Raise on any failure.

    The run stages in a folder of its own; its results are published (:func:`~cepaper.book.publish.publish_run`)
    and its executed notebook replaces the last good one only when the notebook succeeded. ``env``: more
    environment for the kernel. ``rank`` > 0: a follower of a run across torchrun's processes
    (:mod:`cepaper.book.ranks`): its kernel trains its share, and what it wrote is discarded (rank
    0 publishes); returns ``None``."""
    import jupytext
    import papermill

    section, params, profile = step.section, step.params, step.profile
    out, record_path = _executed(step)
    if not rank:  # before hours of work, not after: the folder, and its parent where publishing renames
        files.check_writable(step.dest)
        files.check_writable(step.dest.parent)
    results.STAGING.mkdir(parents=True, exist_ok=True)
    prefix = f"{profile}-{section}-" if not rank else f"rank{rank}-{profile}-{section}-"
    staging = Path(tempfile.mkdtemp(dir=results.STAGING, prefix=prefix))
    staged = staging / profile / section  # where the notebook saves (its results_dir), published from here
    try:
        reads_log = staging / "reads.log"
        src = staging / out.name
        nb = jupytext.read(step.notebook)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(nb, src)
        env = {
            "CEPAPER_READS_LOG": str(reads_log),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # figures into the notebook
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        start = time.perf_counter()
        kernel_log = BUILD / "logs" / profile / f"{out.stem}{f'.rank{rank}' if rank else ''}.kernel.log"
        kernel_log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(kernel_log, "w") as log:
                papermill.execute_notebook(
                    src,
                    staging / "out.ipynb",
                    parameters={**params, "results_dir": str(staged)},  # absolute: the kernel's repository may differ
                    kernel_name="python3",
                    language="python",
                    cwd=str(REPO),
                    progress_bar=sys.stderr.isatty(),
                    kernel_manager_class=_kernel_manager(log),
                )
        except BaseException as e:
            dest = BUILD / "failed" / profile / (out.name if not rank else f"{out.stem}.rank{rank}{out.suffix}")
            kept = _keep_failed(staging / "out.ipynb", dest) + "the last good results are kept"
            if isinstance(e, papermill.PapermillExecutionError):
                oserror = _kernel_oserror(e)
                if oserror is not None:  # full disk, read-only or unwritable folder, ...: the user's to fix
                    oserror.add_note(f"(section {section} stopped; {kept})")
                    raise oserror from None
                raise RuntimeError(f"section {section} raised {e.ename}: {e.evalue} ({kept})") from None
            if isinstance(e, OSError):
                if e.filename is None and e.errno is not None:  # papermill writing the executed notebook
                    e = OSError(e.errno, e.strerror, str(results.in_repo(out)))
                e.add_note(f"(section {section} stopped; {kept})")
                raise e from None
            if isinstance(e, RuntimeError):  # the kernel died ("Kernel died"), or never started
                from nbclient.exceptions import DeadKernelError

                died = isinstance(e, DeadKernelError)
                why = "its kernel died (out of memory, or killed)" if died else f"its kernel failed: {e}"
                log = results.in_repo(kernel_log)
                raise RuntimeError(f"section {section} stopped: {why}; its log is {log}; {kept}") from None
            raise
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        wall = time.perf_counter() - start
        if rank:
            return None
        reads = sorted(
            {r for r in (reads_log.read_text().split() if reads_log.exists() else []) if (REPO / r).parent != step.dest}
        )
        record = {
            "section": section,
            "profile": profile,
            "notebook": str(step.notebook.relative_to(REPO)),
            "params": params,
            "key": key,
            "wall_s": round(wall, 2),
            "cached": False,
            "device": results.device_name(params.get("device", "cpu")),
            "git_commit": results.git_commit(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "reads": {r: file_digest(r) for r in reads},
        }
        text = publish_run(staging / "out.ipynb", staged, step.dest, record)
        files.write_atomic(out, text)
        files.write_atomic(record_path, json.dumps(record, indent=1))
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _kernel_manager(log):
    """The kernel manager papermill starts kernels with. Its kernel writes its own stderr (start-up
    warnings, the messages of a kernel interrupted at shutdown or by Ctrl-C) to the open file ``log``,
    ``_build/logs/<profile>/NN_<section>.kernel.log``, not into the command's output (what the cells
    print stays in the notebook); and CurveZMQ keys are provisioned where the kernelspec supports
    them (ipykernel >= 7.3 warns about unencrypted TCP otherwise)."""
    from jupyter_client import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(**{**kernel_transport(), **kw})
            self.transport_encryption = "auto"

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw.setdefault("stderr", log)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return QuietKernelManager


def kernel_transport():
    """How a kernel started here talks with its client: on POSIX, over Unix sockets of its own
    (``<tmp>/cepaper-kernel-<random>-N``), not TCP ports. Over TCP, jupyter_client picks free ports,
    closes them and hands them to the kernel; kernels starting at once (torchrun's ranks, the test
    workers) or any outgoing connection can take one in between, and the kernel dies ("Kernel died
    before replying to kernel_info"). Keyword arguments for a jupyter_client kernel manager."""
    if os.name != "posix":
        return {}
    return {"transport": "ipc", "ip": os.path.join(tempfile.gettempdir(), f"cepaper-kernel-{uuid.uuid4().hex}")}


def _keep_failed(src, dest):
    """Move a failed run's notebook ``src`` to ``dest`` for inspection, when it is a whole notebook;
    what the error message says of it: ``"the failed notebook is <dest>; "``, that it was truncated
    (a full disk, a file-size limit: not a place to look), or nothing when there is none or it cannot
    be kept (that must not hide the error that stopped the run)."""
    import nbformat

    try:
        if not src.exists():
            return ""
        try:
            nbformat.read(src, as_version=4)
        except Exception:  # not JSON, or not a notebook: cut short as it was written
            return "its notebook was truncated while being written, so none is kept; "
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dest)  # a rename, or a copy where _build/failed is on another filesystem
        return f"the failed notebook is {results.in_repo(dest)}; "
    except OSError:
        return ""


_OS_ERRORS = {
    "OSError",
    "IOError",
    "PermissionError",
    "FileNotFoundError",
    "FileExistsError",
    "IsADirectoryError",
    "NotADirectoryError",
    "BlockingIOError",
    "InterruptedError",
    "TimeoutError",
}


def _kernel_oserror(e):
    """The ``OSError`` (with its errno and file) a notebook raised, rebuilt from papermill's
    ``PapermillExecutionError``; ``None`` for any other exception, or an OSError without an errno."""
    match = re.match(r"\[Errno (\d+)\] ([^:]+?)(?:: '(.*)')?$", str(e.evalue).strip())
    if e.ename not in _OS_ERRORS or not match:
        return None
    return OSError(int(match[1]), match[2], *(match.groups()[2:] if match[3] else ()))


def _clean_leftovers(step):
    """Undo what runs of this section that died (SIGKILL, power loss) left: their staging folders,
    and their half-done publishing (:func:`~cepaper.book.publish.recover`). Called while holding the
    section's :func:`section_lock`, so no live run owns them."""
    prefix = f"{step.profile}-{step.section}-"
    pattern = re.compile(re.escape(prefix) + r"[A-Za-z0-9_]{8}")
    for folder in results.STAGING.glob(f"{prefix}*"):
        if pattern.fullmatch(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
    if step.dest.parent.is_dir():
        recover(step.dest)


def reuse(step):
    """Take the executed notebook stored with a section's results (``results/<profile>/<section>/
    notebook.ipynb``, e.g. a committed GPU run) for the book instead of executing; return its record."""
    import nbformat

    path = step.dest / STORED
    if not path.exists():
        raise FileNotFoundError(
            f"no executed notebook {path}: run `cepaper run {step.section} --profile {step.profile}` "
            f"(the paper profile on a GPU) and commit results/{step.profile}/{step.section}/"
        )
    record = {**nbformat.read(path, as_version=4).metadata["cepaper"], "cached": True}
    out, record_path = _executed(step)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, out)
    files.write_atomic(record_path, json.dumps(record, indent=1))
    return record


def tidy(step):
    """:func:`_clean_leftovers` of the section when no run of it is live (its :func:`section_lock`
    free; a live run owns what lies beside its results): before every run, cached or not, so that what
    a killed publish left never outlives the next run."""
    try:
        with section_lock(step.section, step.profile):
            _clean_leftovers(step)
    except Busy:
        pass


def up_to_date(step, force=False):
    """``(key, record)``: the step's cache key and its up-to-date record (``None``: it must execute),
    after tidying what killed runs left (:func:`tidy`: a publish cut between its renames is completed
    first, so the results the record names are in place)."""
    tidy(step)
    key = cache_key(step.notebook, step.params)
    return key, None if force else valid_record(step, key)


def execute_locked(step, key, env=None):
    """:func:`execute` while holding the section's :func:`section_lock`, after cleaning up what
    runs that died left."""
    print(f"[cepaper] executing {step.section} (profile {step.profile})", file=sys.stderr, flush=True)
    with section_lock(step.section, step.profile):
        _clean_leftovers(step)
        return execute(step, key, env=env)


def shown(step, record):
    """A record as `cepaper run` returns it: with ``results``, where the step's results are (relative to
    the repository when inside it)."""
    return {**record, "results": f"{results.in_repo(step.dest)}/"}


def run(sections, profile="quick", overrides=(), force=False, reuse_stored=False, apart=False):
    """Execute ``sections`` (all of the book when empty) with ``profile``; skip up-to-date ones.
    ``apart``: a run with other parameters publishes under their :func:`~cepaper.book.profiles.label` (:func:`plan`).

    With ``reuse_stored``, execute nothing: take each section's executed notebook stored with its
    results (see :func:`reuse`), e.g. the paper profile run on a GPU and committed."""
    steps = plan(sections, profile, overrides, apart)  # validate everything before executing anything
    if reuse_stored:
        missing = [step.section for step in steps if not (step.dest / STORED).exists()]
        if missing:
            raise FileNotFoundError(
                f"--reuse: no committed {profile}-profile run of {', '.join(missing)} (results/{profile}/<section>/"
                f"{STORED}); run them with `cepaper run SECTION --profile {profile}` and commit their results, "
                f"or build the default book (`make book`), which shows every committed run beside the quick pages"
            )
    records = []
    for step in steps:
        if reuse_stored:
            records.append(shown(step, reuse(step)))
            continue
        key, record = up_to_date(step, force)
        records.append(shown(step, execute_locked(step, key) if record is None else {**record, "cached": True}))
    return records


def format_records(records):
    """A readable table of run records."""
    width = max([8] + [len(r["profile"]) for r in records])
    rows = [f"{'section':<13} {'profile':<{width}} {'status':<9} {'wall s':>8}  {'results':<28} device"]
    rows += [
        f"{r['section']:<13} {r['profile']:<{width}} {'cached' if r['cached'] else 'executed':<9} "
        f"{r['wall_s']:>8.1f}  {r['results']:<28} {r['device']}"
        for r in records
    ]
    return "\n".join(rows)


# --- book -------------------------------------------------------------------------------------


def run_child(cmd, cwd=None, grace=5.0):
    """Run ``cmd`` to its end in a process group of its own and return its exit status; on any
    exception here (Ctrl-C, or the ``cli.Terminated`` that the CLI's SIGTERM handler raises) terminate
    the whole group (SIGTERM, then SIGKILL after ``grace`` seconds), so no grandchild outlives us.
    (For ``book()``'s jupyter-book: a Ctrl-C then no longer reaches the child directly, this does.)"""
    import signal

    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):  # what is left of the group, if anything
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
