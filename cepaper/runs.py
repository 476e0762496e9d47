"""Runs: what every long computation of cepaper shares, and what code it depends on.

* atomic files (:func:`cepaper.files.write_atomic`): no record or checkpoint is ever half written;
* checkpoints (:func:`save_checkpoint`, :func:`resume`): one helper saves and restores model,
  optimizer, scheduler and RNG states, and refuses a checkpoint written with other settings;
* seeds (:func:`derive_seed`): every stream of random numbers is ``SeedSequence(parts)``;
* data digests (:func:`cepaper.files.digest`), in every checkpoint's and record's settings;
* the cached resumable grid runner (:func:`run_grid`): one record per job in ``cache/<key>.json``,
  ``key`` the hash of the job's settings and of the code that computes it (:func:`source_key`); an
  interrupted job resumes from ``cache/<key>.pt``;
* the run cache of long runs (:func:`cached_run`, ``run_grid(..., by_definition=True)``): a record
  keyed by what defines the run alone, with the code version in its provenance (:func:`code_version`);
  after a code change a finished run is reused and marked stale (:func:`stale_mark`: which commit
  made it, which files changed since), never silently discarded; ``rerun_stale`` retrains it.

What code a computation depends on (:func:`dependencies`): the cepaper modules it imports, read from
its source, transitively; the book's cache key, the run cache's stale check and the layout test use it.

Every function that reads or writes a record takes the process group as an argument (``world``: an
object with ``rank`` and ``size``, e.g. :func:`cepaper.training.distributed.world`; ``None``: one
process): rank 0 writes, and all ranks wait for it (``torch.distributed.barrier``).

This module imports torch where a checkpoint or an RNG state needs it, not at the top: the book's cache
key and `cepaper run` use :func:`dependencies` and the records, and a process that executes nothing loads
no torch.

A damaged cache file or checkpoint (not JSON, empty, truncated) is moved aside (:func:`move_aside`)
and recomputed, never read again. Checkpoints are read with ``weights_only=True``: one whose pickle
asks for more than tensors and plain containers (a planted file) is refused unread (:func:`load_checkpoint`).
"""

import ast
import hashlib
import importlib
import io
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cepaper.files import checkout, jsonable, move_aside, read_cached, reason, write_atomic

#: The folder that holds the ``cepaper`` package (the repository, in a checkout).
ROOT = Path(__file__).resolve().parents[1]


# --- what code a computation depends on ---------------------------------------------------------


def module_file(name, root=None):
    """The source file of the dotted module ``name``: under ``root`` (default :data:`ROOT`) for a
    cepaper module (``None`` when there is none), else where Python imports it from."""
    if name.split(".")[0] != "cepaper":
        return Path(importlib.import_module(name).__file__).resolve()
    base = Path(root or ROOT).joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def _type_only(tree):
    """The statements of ``tree`` under ``if TYPE_CHECKING:`` (imports for type checkers, never run)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            yield from (n for stmt in node.body for n in ast.walk(stmt))


def imports(source, root=None, run_only=False):
    """The cepaper modules a piece of Python source imports, anywhere in it (function bodies
    included), as dotted names: ``from cepaper.<pkg> import <name>`` is ``cepaper.<pkg>.<name>`` when that is a
    module (under ``root``), else ``cepaper.<pkg>``. ``run_only``: not those under ``if TYPE_CHECKING:``."""
    found, tree = set(), ast.parse(source)
    skip = set(map(id, _type_only(tree))) if run_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cepaper"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cepaper":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if module_file(sub, root) else node.module)
    return found


def dependencies(modules=(), source=None, root=None):
    """``{path: file}`` of the code that ``modules`` (dotted names) and ``source`` (Python source)
    depend on: their own files and those of every cepaper module they import, transitively (imports
    for type checkers only are not followed), with the packages above each (their ``__init__.py``
    runs first); ``path`` relative to ``root`` (default :data:`ROOT`; a file outside it by its full
    path), sorted."""
    root = Path(root or ROOT)
    todo, seen = list(modules) + sorted(imports(source, root, run_only=True) if source is not None else ()), {}
    while todo:
        name = todo.pop()
        path = module_file(name, root)
        if path is None or path in seen.values():
            continue
        seen[str(path.relative_to(root)) if path.is_relative_to(root) else str(path)] = path
        todo += imports(path.read_text(), root, run_only=True)
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1) if name.startswith("cepaper.")]
    return dict(sorted(seen.items()))


def _source(modules):
    """The text of every file ``modules`` depend on (:func:`dependencies`), in order."""
    return "".join(f"{rel}\n{path.read_text()}" for rel, path in dependencies(modules).items())


def _barrier(world):
    """Wait for every rank of ``world`` (nothing for one process)."""
    if world is not None and world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def _writer(world):
    return world is None or world.rank == 0


def source_key(settings, modules, length=16, source=None):
    """Hash of ``settings`` (as JSON) and of the code ``modules`` (dotted names) depend on
    (:func:`dependencies`, transitively): the name of a checkpoint, so that a change of settings or of
    the code that computes it starts afresh. ``source``: that code's text, when known (a grid reads it once)."""
    text = json.dumps(settings, sort_keys=True, default=str) + (_source(modules) if source is None else source)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _read_record(path, required, world):
    """:func:`~cepaper.files.read_cached` of ``path`` by every rank of ``world``; across ranks one (the writer) first
    moves a damaged record or checkpoint aside, then all read."""
    if world is not None and world.size > 1:
        if _writer(world):
            read_cached(path, required)
            check_checkpoint(path.with_suffix(".pt"))
        _barrier(world)
    return read_cached(path, required)


def _write_record(path, record, world):
    """Rank 0 of ``world`` writes ``record`` to ``path`` atomically and drops its checkpoint; all wait."""
    if _writer(world):
        write_atomic(path, json.dumps(jsonable(record)) + "\n")
        path.with_suffix(".pt").unlink(missing_ok=True)
    _barrier(world)


def cached_record(cache, settings, modules, compute, required=(), world=None, source=None):
    """A JSON-able record kept in ``cache/<key>.json`` (``key``: :func:`source_key` of ``settings``
    and ``modules``). When that file exists it is read back; else ``compute(checkpoint)`` makes the
    record (``checkpoint``: ``<key>.pt``, for the computation to resume from), which is written
    atomically, and the checkpoint removed. ``cache=None`` computes with no checkpoint.

    A damaged record (not JSON, empty, or missing a key of ``required``) or a checkpoint that
    ``torch.load`` cannot read is moved aside (:func:`move_aside`) and recomputed. ``world``: the
    process group (``None``: one process); ``source``: see :func:`source_key`."""
    if cache is None:
        return compute(None)
    path = Path(cache) / f"{source_key(settings, modules, source=source)}.json"
    record = _read_record(path, required, world)
    if record is not None:
        return record
    check_checkpoint(path.with_suffix(".pt"))
    record = compute(path.with_suffix(".pt"))
    _write_record(path, record, world)
    return record


def definition_key(definition, length=16):
    """Hash of a run's definition alone (a JSON-able dict): the name of its record in the run cache."""
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:length]


def git_head(paths=()):
    """The commit of the checkout this code is in (``+dirty`` when one of ``paths`` differs from it),
    or ``None`` outside a git checkout and for an installed package (:func:`cepaper.files.checkout`)."""
    import subprocess

    top = checkout()
    if top is None:  # an installed package: a repository around site-packages is not cepaper's
        return None
    run = lambda *a: subprocess.run(["git", *a], cwd=top, capture_output=True, text=True, timeout=30)
    try:
        head = run("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = run("diff", "--quiet", "HEAD", "--", *map(str, paths)).returncode if paths else 0
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def code_version(modules):
    """The code version of a record: ``{"commit": git_head, "files": {file: sha256[:16] of its bytes}}``
    for every file ``modules`` (dotted names: the module that computes a run) depend on
    (:func:`dependencies`, transitively), relative to the repository."""
    files = dependencies(modules)
    return {
        "commit": git_head(files.values()),
        "files": {rel: hashlib.sha256(f.read_bytes()).hexdigest()[:16] for rel, f in files.items()},
    }


def stale_mark(record, modules, version=None):
    """``None`` when the record was made by the code of ``modules`` as it is now, else ``{"commit":
    the commit that made it, "files": the files changed since}`` (a record without a code version is
    stale, commit ``None``; ``version``: :func:`code_version` of ``modules``, when known)."""
    then = record.get("code") or {}
    now = (version or code_version(modules))["files"]
    old = then.get("files") or {}
    changed = sorted(f for f in set(now) | set(old) if now.get(f) != old.get(f))
    return {"commit": then.get("commit"), "files": changed} if changed else None


def cached_run(cache, definition, modules, compute, required=(), rerun_stale=False, version=None, world=None):
    """A long run's record in ``cache/<key>.json``, ``key`` the hash of ``definition`` alone
    (:func:`definition_key`): a finished run is read back whatever the code is now, with ``"stale"``
    (:func:`stale_mark`) saying whether the code of ``modules`` changed since it was made; else
    ``compute(checkpoint)`` makes it (resuming from ``cache/<key>.pt``), with its ``"code"``
    (:func:`code_version`). ``rerun_stale``: a stale record is computed again, the old one kept as
    ``<key>.<commit>.json`` beside it. ``cache=None`` computes with no checkpoint. ``version``: the
    :func:`code_version` of ``modules`` (computed once for a grid). ``world``: the process group
    (``None``: one process)."""
    version = version or code_version(modules)
    if cache is None:
        return {**compute(None), "code": version, "stale": None}
    path = run_path(cache, definition)
    record = _read_record(path, required, world)
    if record is not None:
        stale = stale_mark(record, modules, version)
        if not (stale and rerun_stale):
            return {**record, "stale": stale}
        _barrier(world)
        if _writer(world):  # kept, never silently discarded
            os.replace(path, path.with_name(f"{path.stem}.{(stale['commit'] or 'unknown')[:12]}.json"))
    check_checkpoint(path.with_suffix(".pt"))
    record = {**compute(path.with_suffix(".pt")), "code": version}
    _write_record(path, record, world)
    return {**record, "stale": None}


def run_path(cache, definition):
    """Where the run cache keeps the record of the run ``definition``: ``cache/<definition_key>.json``."""
    return Path(cache) / f"{definition_key(definition)}.json"


def finished_run(cache, definition, modules, required=(), rerun_stale=False, version=None):
    """The record :func:`cached_run` would read back without computing (``"stale"`` marked), or
    ``None`` when the run must be computed: no record, or a stale one with ``rerun_stale``."""
    record = read_cached(run_path(cache, definition), required)
    if record is None:
        return None
    stale = stale_mark(record, modules, version)
    return None if stale and rerun_stale else {**record, "stale": stale}


# What torch.load's weights_only unpickler names when a pickle asks for more than tensors and plain
# containers (a global it does not allow, an object it may not build or call): such a file is not a
# checkpoint this code wrote, and is refused unread rather than moved aside as damage.
_FOREIGN = re.compile(
    r"GLOBAL (\S+) was not an allowed global|unsupported GLOBAL (\S+) whose module|"
    r"reduce for unrecognized function (.+?)(?: which belongs|$)|new object for .* but got (.+)$|"
    r"Can only build .* but got (.+)$",
    re.MULTILINE,
)


def load_checkpoint(path):
    """``torch.load`` of the checkpoint ``path`` (to the CPU), or ``None`` when there is none; one
    that it cannot read (empty, truncated, not a checkpoint) is moved aside and is ``None``.

    Loaded with ``weights_only=True``: a checkpoint holds tensors, numbers, strings and the plain
    containers of model, optimizer, scheduler and RNG states, nothing that unpickling could run. A
    pickle that names anything else (a planted ``.pt`` whose loading would call ``os.system``) is
    refused, a ValueError naming the file and what it asked for, and is never unpickled."""
    import torch  # heavy: here, not at the top (see the module's docstring)

    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        if isinstance(e, OSError) and e.errno is not None:
            raise  # unreadable (permissions, I/O), not damaged: not ours to move
        if isinstance(e, pickle.UnpicklingError) and (found := _FOREIGN.search(str(e))):
            what = next(g for g in found.groups() if g).strip()
            raise ValueError(
                f"checkpoint {path} refused: not a plain checkpoint (its pickle asks for {what}; a checkpoint "
                "holds only tensors, numbers, strings and plain containers); it was not loaded: delete it, "
                "or move it away if it is yours"
            ) from None
        move_aside(path, f"torch.load failed, {reason(e)}")
        return None


def check_checkpoint(path):
    """``True`` when the checkpoint ``path`` exists and ``torch.load`` reads it (else, see
    :func:`load_checkpoint`, it is moved aside): checked before a computation resumes from it."""
    return load_checkpoint(path) is not None


def save_checkpoint(path, state):
    """``torch.save(state)`` to ``path`` atomically (:func:`write_atomic`)."""
    import torch  # heavy: here, not at the top (see the module's docstring)

    buf = io.BytesIO()
    torch.save(state, buf)
    return write_atomic(path, buf.getvalue())


def derive_seed(*parts, bits=32):
    """The seed of one random stream: ``SeedSequence(parts)``'s first word (``bits`` 32 or 64).

    ``parts`` are integers >= 0 or strings (a string enters as its characters' code points), e.g.
    ``derive_seed(seed, m, n, rep)`` or ``derive_seed(seed, "37x10d")``."""
    words = []
    for p in parts:
        if isinstance(p, str):
            words += [ord(c) for c in p]
        elif isinstance(p, (bool, float)) or int(p) < 0:
            raise ValueError(f"seed parts must be integers >= 0 or strings, got {p!r}")
        else:
            words.append(int(p))
    dtype = {32: np.uint32, 64: np.uint64}[bits]
    return int(np.random.SeedSequence(words).generate_state(1, dtype)[0])


def rng_state():
    """The torch RNG states (CPU, and every CUDA device when there is one): for a checkpoint."""
    import torch  # heavy: here, not at the top (see the module's docstring)

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore :func:`rng_state`."""
    import torch  # heavy: here, not at the top (see the module's docstring)

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume(
    path, settings, *, model, optimizer=None, scheduler=None, rng=False, required=(), name="a checkpoint", refuse=None
):
    """Load the checkpoint ``path`` into ``model`` (and ``optimizer``, ``scheduler``, the RNG states
    when ``rng``); return its state dict (``epoch``, ``history``, ...), or ``None`` when there is none.

    The checkpoint's ``settings`` must equal ``settings``: else a ValueError names what differs.
    One that ``torch.load`` cannot read, or that lacks a key of ``required``, is moved aside
    (:func:`move_aside`): then ``None``, and the run starts afresh. ``refuse(old_settings)``: a reason
    why the checkpoint cannot resume this run (a ValueError that gives it), or ``None``."""
    state = load_checkpoint(path)
    if state is None:
        return None
    if not isinstance(state, dict) or any(k not in state for k in ("settings", "model", *required)):
        move_aside(path, f"not {name}")
        return None
    why = refuse(state["settings"]) if refuse is not None and isinstance(state["settings"], dict) else None
    if why:
        raise ValueError(f"checkpoint {path} cannot resume this run: {why}")
    if state["settings"] != settings:
        old = state["settings"] if isinstance(state["settings"], dict) else {}
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        diff |= {k: (v, None) for k, v in old.items() if k not in settings}
        raise ValueError(
            f"checkpoint {path} was written by a run with other settings (checkpoint, now): {diff}; "
            "delete it or use another path"
        )
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if rng:
        set_rng_state(state["rng"])
    return state


def run_grid(
    jobs,
    compute,
    *,
    cache=None,
    modules=(),
    required=(),
    progress=False,
    desc="runs",
    by_definition=False,
    key=None,
    rerun_stale=False,
    launcher=None,
    world=None,
):
    """The cached resumable grid runner: ``compute(job, checkpoint)`` for every ``job`` (a JSON-able
    dict of settings), one record each, in order.

    With ``cache`` (a folder) each record is kept in ``cache/<key>.json`` (:func:`cached_record`,
    ``key`` from the job and the code ``modules`` depend on): a finished job is read back, an
    interrupted one resumes from its checkpoint ``cache/<key>.pt``. ``progress``: a bar over the jobs.
    ``modules``: the module that computes the records (its imports are followed, :func:`dependencies`).

    ``by_definition``: the run cache of long runs instead (:func:`cached_run`): keyed by ``key(job)``
    (default the job) alone, a finished run is reused after a code change and marked stale, and
    ``rerun_stale`` computes stale ones again. ``launcher``: how the runs are launched, an object whose
    ``map(fn, jobs, finished=..., records=...)`` returns ``[fn(job) for job in jobs]`` (e.g. each a
    job of :class:`cepaper.training.executors.Launcher`), given ``finished(job)`` (the record of a run
    that needs no job, else ``None``) and each run's record path; ``None``: here, one after another.
    ``world``: the process group every rank calls this in (``None``: one process)."""
    jobs = list(jobs)
    bar = tqdm(jobs, disable=not progress or not _writer(world), desc=desc)
    if not by_definition:
        src = _source(modules)
        one = lambda job: cached_record(cache, job, modules, lambda ckpt: compute(job, ckpt), required, world, src)
        return [one(job) for job in bar]
    key, version = key or (lambda job: job), code_version(modules)
    one = lambda job: cached_run(
        cache, key(job), modules, lambda ckpt: compute(job, ckpt), required, rerun_stale, version, world
    )
    if launcher is None:
        return [one(job) for job in bar]
    if cache is None:
        return launcher.map(one, jobs)
    # finished runs need no job; a job still running from an earlier call is waited for, not submitted again
    return launcher.map(
        one,
        jobs,
        finished=lambda job: finished_run(cache, key(job), modules, required, rerun_stale, version),
        records=[run_path(cache, key(job)) for job in jobs],
    )
