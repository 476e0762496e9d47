"""Results store: JSON (and CSV for tables) under ``results/<profile>/<section>/``, with provenance.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash never leaves a half-written result to be mistaken for a good one. Each JSON file holds::

    {"data": {...}, "provenance": {"section", "name", "profile", "params", "seed", "cepaper",
                                   "git_commit", "device", "wall_s", "date"}}

Only `cepaper run` (which stages a notebook's results and publishes them when it succeeds) and the
CLI's own commands (profile ``cli``) write into the store. A notebook executed any other way (plain
papermill, nbval) writes to ``$CEPAPER_RESULTS/<profile>/<section>`` when that is set, else to a
scratch folder named after its parameters, ``_build/scratch/<section>-<hash>/`` (see :class:`Run`).
"""

import contextlib
import hashlib
import importlib
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import cepaper

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("claims", "lemma1", "theorem1", "alpha", "primal_dual", "mnist", "cifar", "imagenet", "design")


def root():
    """The results folder: ``$CEPAPER_RESULTS`` or ``results/`` in the repository."""
    return Path(os.environ.get("CEPAPER_RESULTS", REPO / "results"))


def section_dir(section, profile):
    """``results/<profile>/<section>``; the section must be one of ``SECTIONS``."""
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {', '.join(SECTIONS)}; got {section!r}")
    return root() / profile / section


def checkpoint_dir(section, profile):
    """Resumable work of a section: ``_build/checkpoints/<profile>/<section>`` in the repository,
    outside the results store (which a notebook run replaces only when it succeeds)."""
    return REPO / "_build" / "checkpoints" / profile / section


def source_key(settings, modules, length=16):
    """Hash of ``settings`` (as JSON) and of the source of ``modules`` (dotted names): the name of a
    checkpoint, so that a change of settings or of the code that computes it starts afresh."""
    src = "".join(inspect.getsource(importlib.import_module(name)) for name in modules)
    text = json.dumps(settings, sort_keys=True, default=str) + src
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def cached_record(cache, settings, modules, compute, required=()):
    """A JSON-able record kept in ``cache/<key>.json`` (``key``: :func:`source_key` of ``settings``
    and ``modules``). When that file exists it is read back; else ``compute(checkpoint)`` makes the
    record (``checkpoint``: ``<key>.pt``, for the computation to resume from), which is written
    atomically, and the checkpoint removed. ``cache=None`` computes with no checkpoint.

    A damaged record (not JSON, empty, or missing a key of ``required``) or a checkpoint that
    ``torch.load`` cannot read is moved aside (:func:`move_aside`) and recomputed."""
    if cache is None:
        return compute(None)
    path = Path(cache) / f"{source_key(settings, modules)}.json"
    record = read_cached(path, required)
    if record is not None:
        return record
    check_checkpoint(path.with_suffix(".pt"))
    record = compute(path.with_suffix(".pt"))
    write_atomic(path, json.dumps(_jsonable(record)) + "\n")
    path.with_suffix(".pt").unlink(missing_ok=True)
    return record


def move_aside(path, why):
    """Rename a damaged cache file or checkpoint ``path`` to ``<path>.corrupt`` (kept for inspection,
    never read again) and say so on stderr; return the new path."""
    path = Path(path)
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    print(f"[cepaper] {path} is damaged ({why}): moved aside to {aside.name}; it is recomputed",
          file=sys.stderr, flush=True)
    return aside


def _why(e):
    """A one-line reason from a read/parse exception."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def read_cached(path, required=()):
    """The JSON record in the cache file ``path``, or ``None`` when there is none; a file that is not
    JSON, is empty, or lacks a key of ``required`` is moved aside (:func:`move_aside`) and is ``None``."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        move_aside(path, f"not JSON, {_why(e)}")
        return None
    missing = [k for k in required if not isinstance(record, dict) or k not in record]
    if not record or missing:
        move_aside(path, "an empty record" if not record else f"no {', '.join(map(repr, missing))} in the record")
        return None
    return record


def load_checkpoint(path):
    """``torch.load`` of the checkpoint ``path`` (to the CPU), or ``None`` when there is none; one
    that it cannot read (empty, truncated, not a checkpoint) is moved aside and is ``None``."""
    path = Path(path)
    if not path.exists():
        return None
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # a file this code wrote in _build/
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        if isinstance(e, OSError) and e.errno is not None:
            raise  # unreadable (permissions, I/O), not damaged: not ours to move
        move_aside(path, f"torch.load failed, {_why(e)}")
        return None


def check_checkpoint(path):
    """``True`` when the checkpoint ``path`` exists and ``torch.load`` reads it (else, see
    :func:`load_checkpoint`, it is moved aside): checked before a computation resumes from it."""
    return load_checkpoint(path) is not None


def check_json_files(folder):
    """Move aside (:func:`move_aside`) every ``*.json`` under ``folder`` that is not valid JSON: the
    per-width files of a checkpointed Monte Carlo sweep (``cepaper.fit.ntk_sweep``), checked before
    the sweep reads them. Returns the paths moved aside."""
    moved = []
    for path in sorted(Path(folder).rglob("*.json")) if Path(folder).is_dir() else []:
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            moved.append(move_aside(path, f"not JSON, {_why(e)}"))
    return moved


def read_json(path):
    """The JSON value in the results file ``path``; ``ValueError`` naming it when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"results file {path} is damaged ({_why(e)}): delete it and run the section "
                         "(or command) that writes it again") from None


def git_commit():
    """The repository's HEAD commit, with ``+dirty`` when the code differs from it (any change outside
    ``results/``: results being written by runs do not make the code that writes them dirty), or ``None``."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True,
                                        timeout=10, check=True).stdout.strip()
        return run("rev-parse", "HEAD") + ("+dirty" if run("status", "--porcelain", "--", ".", ":!results") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def check_device(device, fix="run the paper profile on a GPU machine, or pass `-p device cpu`"):
    """Raise a clear ``ValueError`` unless torch can use ``device`` here; ``fix`` says what to do
    when it names a GPU that is not there (the CLI's commands name their ``--device`` flag)."""
    import torch
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no GPU here; {fix}")
    return device


def device_name(device="cpu"):
    """A readable name of the device a computation ran on, e.g. ``cpu (x86_64, 2 threads)``."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _jsonable(x):
    """Convert numpy/torch scalars and arrays (and NaN) to plain JSON values."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_writable(folder):
    """Raise ``PermissionError`` naming ``folder`` (or its first existing parent) unless files can be
    created there: checked before a long run, not after it."""
    folder = Path(folder)
    probe = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write results to {probe}: it is not writable; fix its permissions "
                              "or point CEPAPER_RESULTS at a writable folder")
    return folder


def write_atomic(path, content):
    """Write ``content`` to ``path`` atomically: a temporary file, then rename.

    ``content`` is a str, bytes, or a function that writes to the open binary file (for data too
    large to hold in memory). An ``OSError`` (full disk, file-size limit, read-only or unwritable
    folder) names ``path``, not the temporary file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _naming(e, path) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would ignore the user's umask
        with os.fdopen(fd, "w" if isinstance(content, str) else "wb") as f:
            content(f) if callable(content) else f.write(content)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            raise _naming(e, path) from None
        raise
    return path


def _naming(e, path):
    """The same ``OSError`` (same errno, hence subclass), naming ``path`` instead of a temporary file."""
    return OSError(e.errno, e.strerror, str(path)) if e.errno is not None else e


def scratch_dir(section, profile, params=None, seed=None, device="cpu"):
    """``_build/scratch/<section>-<hash>``: where a notebook executed outside `cepaper run` (and with
    no ``$CEPAPER_RESULTS``) saves its results; the hash is of its profile, parameters, seed and device,
    so runs with other parameters never mix."""
    what = json.dumps(_jsonable({"profile": profile, "params": dict(params or {}), "seed": seed,
                                 "device": str(device)}), sort_keys=True, default=str)
    return REPO / "_build" / "scratch" / f"{section}-{hashlib.sha256(what.encode()).hexdigest()[:10]}"


_ACTIVE = {}  # (section, profile) -> folder of a Run outside the store, read first by load()


class Run:
    """One notebook's run: collects provenance and saves named results of a section.

    Where its results go (``self.dir``):

    - inside `cepaper run` (``$CEPAPER_STAGING``): the run's staging folder, published to
      ``results/<profile>/<section>`` only when the notebook succeeds;
    - ``store=True`` (the CLI's own commands, profile ``cli``): ``results/<profile>/<section>``;
    - else, with ``$CEPAPER_RESULTS`` set: ``$CEPAPER_RESULTS/<profile>/<section>``, as the user asked;
    - else (plain papermill, nbval): :func:`scratch_dir`, never the book's published results.

    Example::

        run = Run("lemma1", profile, params=dict(n=n, m_max=m_max), seed=seed, device=device)
        run.save("fig2", {"gamma": gamma, "mean": mean})
        data = run.load("fig2")
    """

    def __init__(self, section, profile, params=None, seed=None, device="cpu", store=False):
        check_device(device)
        self.dir = section_dir(section, profile)
        self.section, self.profile = section, profile
        self.params, self.seed, self.device = dict(params or {}), seed, str(device)
        self.staged = bool(os.environ.get("CEPAPER_STAGING"))
        if self.staged:  # inside `cepaper run`: published only on success
            self.dir = Path(os.environ["CEPAPER_STAGING"]) / profile / section
        elif not store and not os.environ.get("CEPAPER_RESULTS"):
            self.dir = scratch_dir(section, profile, self.params, seed, device)
            _ACTIVE[(section, profile)] = self.dir  # the store does not hold it: load() looks here first
        self.started = time.perf_counter()

    def where(self):
        """Where this run's results go, as a reader should see it: for a staged run (a book page) the
        store's ``results/<profile>/<section>/``, else the folder, relative to the repository if in it."""
        if self.staged:
            return f"results/{self.profile}/{self.section}/"
        return f"{self.dir.relative_to(REPO) if self.dir.is_relative_to(REPO) else self.dir}/"

    def header(self):
        """Markdown for the top of a notebook: the profile and device this run uses, and where its
        results go (outside `cepaper run`: a scratch folder, not the book's results)."""
        from IPython.display import Markdown
        commit = (git_commit() or "unknown")[:12]
        where = f"results in `{self.where()}`"
        if not self.staged and self.dir != section_dir(self.section, self.profile):
            where += (" (executed outside `cepaper run`, so not the book's results; set CEPAPER_RESULTS "
                      "to choose the folder)")
        return Markdown(f"**This run:** profile `{self.profile}` on {device_name(self.device)}, "
                        f"cepaper {cepaper.__version__} @ `{commit}`; {where}.")

    def provenance(self, name):
        return {
            "section": self.section, "name": name, "profile": self.profile,
            "params": _jsonable(self.params), "seed": self.seed,
            "cepaper": cepaper.__version__, "git_commit": git_commit(),
            "device": device_name(self.device), "wall_s": round(time.perf_counter() - self.started, 3),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def save(self, name, data, table=None):
        """Save ``data`` (a dict) as ``<name>.json`` and, if given, a DataFrame as ``<name>.csv``,
        in ``self.dir``. Returns nothing, so a notebook cell ending in ``run.save`` shows nothing."""
        record = {"data": _jsonable(data), "provenance": self.provenance(name)}
        if table is not None:
            write_atomic(self.dir / f"{name}.csv", table.to_csv(index=False))
        write_atomic(self.dir / f"{name}.json", json.dumps(record, indent=1) + "\n")

    def load(self, name):
        """The ``data`` dict of a result this section saved (see :func:`load`)."""
        path = self.dir / f"{name}.json"
        if path.exists() or not self.staged:
            if not path.exists():
                raise FileNotFoundError(f"no result {path}: save {name!r} before loading it")
            return read_json(path)["data"]
        return load(self.section, self.profile, name)["data"]


def _locate(section, profile, name):
    """Path of a saved result, looking first in the staging folder of a running notebook (or the
    folder of a :class:`Run` of this process outside the store).

    A read from the store (found or not) is appended to ``$CEPAPER_READS_LOG`` so the pipeline knows which
    results a notebook depends on.
    """
    staged = os.environ.get("CEPAPER_STAGING")
    if staged and (path := Path(staged) / profile / section / f"{name}.json").exists():
        return path
    if (section, profile) in _ACTIVE and (path := _ACTIVE[(section, profile)] / f"{name}.json").exists():
        return path
    path = section_dir(section, profile) / f"{name}.json"
    if os.environ.get("CEPAPER_READS_LOG"):
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        with open(os.environ["CEPAPER_READS_LOG"], "a") as log:
            log.write(f"{rel}\n")
    return path


def load(section, profile, name):
    """The saved record ``{"data", "provenance"}`` of ``results/<profile>/<section>/<name>.json``."""
    path = _locate(section, profile, name)
    if not path.exists():
        raise FileNotFoundError(f"no result {path}; run `cepaper run {section} --profile {profile}` first")
    return read_json(path)


def find(section, name, profiles=("paper", "quick")):
    """The first saved record of ``section/name`` among ``profiles`` (in order), or ``None``."""
    for profile in profiles:
        path = _locate(section, profile, name)
        if path.exists():
            return read_json(path)
    return None


def describe(record):
    """One line saying which run produced a record: profile, device, commit, date, wall time."""
    p = record["provenance"]
    commit = (p.get("git_commit") or "unknown")[:12]
    return (f"{p['section']}/{p['name']}: profile `{p['profile']}`, {p['device']}, "
            f"cepaper {p['cepaper']} @ {commit}, {p['date']}, {p['wall_s']:.1f} s")
