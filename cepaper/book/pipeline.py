"""Notebooks → papermill (profiles, cache) → book.

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

import ast
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from cepaper.book import results
from cepaper.training import spine

REPO = results.REPO
NOTEBOOKS = REPO / "notebooks"
PROFILES = REPO / "profiles"
BUILD = REPO / "_build"
SECTIONS_DIR = REPO / "book" / "sections"
STORED = "notebook.ipynb"  # the executed notebook, kept beside a section's results
SUMMARIES = ("claims",)    # sections that read every other section's results: executed last


# --- sections, profiles, parameters -------------------------------------------------------------

def _yaml_file(path):
    """The YAML in ``path``; ``ValueError`` naming the file and the place of a syntax error."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        raise ValueError(f"{rel} is not valid YAML: {what}{at}; fix it and run again") from None


def book_sections():
    """Sections in book order, read from ``_toc.yml`` entries ``book/sections/NN_<section>``."""
    toc = _yaml_file(REPO / "_toc.yml")
    if not isinstance(toc, dict):
        raise ValueError("_toc.yml must be a mapping with `chapters` (or `parts` of chapters)")
    files = [e["file"] for part in toc.get("parts", [toc]) for e in part.get("chapters", [])]
    stems = [Path(f).name for f in files if f.startswith("book/sections/") and Path(f).name[:2].isdigit()]
    return [s.split("_", 1)[1] for s in stems]


def notebook_path(section):
    """The notebook of a section; the section must be one the book contains."""
    known = book_sections()
    if section not in known:
        raise ValueError(f"section must be one of {', '.join(known)}; got {section!r}")
    paths = sorted(NOTEBOOKS.glob(f"[0-9][0-9]_{section}.py"))
    if len(paths) != 1:
        raise FileNotFoundError(f"section {section} needs exactly one notebook notebooks/NN_{section}.py, "
                                f"found {len(paths)}")
    return paths[0]


def profile_names():
    """The profiles: the names of the files ``profiles/<name>.yaml``."""
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def load_profile(profile):
    """Parameters per section of ``profiles/<profile>.yaml``; ``profile`` must be one of
    :func:`profile_names` (a name, never a path: it names folders under ``_build/`` and the results)."""
    names = profile_names()
    if profile not in names:
        raise ValueError(f"profile must be one of {', '.join(names)}; got {profile!r}")
    path = PROFILES / f"{profile}.yaml"
    loaded = _yaml_file(path) or {}
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    if not isinstance(loaded, dict):
        raise ValueError(f"{rel} must map sections to their parameters (section: {{name: value}}), "
                         f"got {type(loaded).__name__}")
    for section, params in loaded.items():
        if params is None:
            loaded[section] = {}
        elif not isinstance(params, dict):
            raise ValueError(f"{rel}: section {section} must map parameter names to values, got {params!r}")
    return loaded


def _parameter_cell(path):
    import jupytext
    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name} must have exactly one cell tagged 'parameters', found {len(cells)}")
    return ast.parse(cells[0].source).body


def notebook_parameters(path):
    """Defaults of the ``parameters`` cell of a py:percent notebook, as ``{name: value}``."""
    return {node.target.id if isinstance(node, ast.AnnAssign) else t.id: ast.literal_eval(node.value)
            for node in _parameter_cell(path) if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def notebook_types(path):
    """The annotated types of the ``parameters`` cell (``name: float = None``), as ``{name: type}``."""
    builtin = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}
    return {node.target.id: builtin[node.annotation.id] for node in _parameter_cell(path)
            if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Name)
            and node.annotation.id in builtin}


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings", list: "lists"}


def _type_ok(kind, value):
    if kind is None or value is None:
        return True
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _check_list(section, name, value, default):
    """Elements of a list parameter have the type of the default's elements (when it has any)."""
    kinds = {type(v) for v in default if v is not None} if isinstance(default, list) else set()
    if len(kinds) != 1 or not isinstance(value, list):
        return
    kind = kinds.pop()
    for i, v in enumerate(value):
        if not _type_ok(kind, v):
            raise ValueError(f"parameter {name!r} of section {section} must be a list of "
                             f"{_PLURALS.get(kind, kind.__name__)}; element {i} is {v!r}")


def resolve_parameters(section, profile, overrides=()):
    """The parameters papermill passes: notebook defaults < profile < overrides, all checked."""
    path = notebook_path(section)
    defaults, types = notebook_parameters(path), notebook_types(path)
    params = {**load_profile(profile).get(section, {}), **dict(overrides)}
    for name, value in params.items():
        if name == "profile":
            raise ValueError(f"profile is not a parameter of section {section}: choose it with --profile "
                             f"({', '.join(profile_names())})")
        if name not in defaults:
            raise ValueError(f"unknown parameter {name!r} for section {section}; "
                             f"allowed: {', '.join(sorted(set(defaults) - {'profile'}))}")
        kind = types.get(name, None if defaults[name] is None else type(defaults[name]))
        if not _type_ok(kind, value):
            raise ValueError(f"parameter {name!r} of section {section} must be "
                             f"{_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")
        _check_list(section, name, value, defaults[name])
    return {**defaults, **params, "profile": profile}


class _Yaml12Loader(yaml.SafeLoader):
    """YAML as 1.2 reads numbers: ``1e-2`` and ``1E3`` are floats (1.1 reads them as strings)."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_overrides(pairs):
    """``[(NAME, "VALUE"), ...]`` from the command line, values parsed as YAML 1.2 would."""
    out = []
    for name, value in pairs:
        try:
            out.append((name, yaml.load(value, Loader=_Yaml12Loader)))
        except yaml.YAMLError as e:
            raise ValueError(f"-p {name}: {value!r} is not a YAML value ({str(e).splitlines()[0]}); "
                             "quote strings, write lists as [1, 2]") from None
    return out


# --- cache key --------------------------------------------------------------------------------

def _sha(data):
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()


def _cepaper_imports(source):
    """cepaper modules a piece of Python source imports, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cepaper"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cepaper":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _module_file(name):
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def dependencies(source):
    """Source files of every cepaper module ``source`` imports, transitively (``cepaper`` included)."""
    todo, seen = sorted(_cepaper_imports(source) | {"cepaper"}), {}
    while todo:
        path = _module_file(todo.pop())
        if path and path not in seen.values():
            seen[str(path.relative_to(REPO))] = path
            todo.extend(_cepaper_imports(path.read_text()))
            parent = path.parent if path.name != "__init__.py" else path.parent.parent
            if parent != REPO:
                todo.append(".".join(parent.relative_to(REPO).parts))
    return dict(sorted(seen.items()))


def cache_key(section, params):
    """Hash of the notebook, its parameters, the cepaper source it depends on, and the executor
    (this module and the pinned requirements): each file's content and modification time, so an
    edited or touched file re-executes the sections that import it."""
    path = notebook_path(section)
    source = path.read_text()
    parts = [json.dumps(params, sort_keys=True)]
    executor = {"cepaper/pipeline.py": Path(__file__), "requirements.txt": REPO / "requirements.txt"}
    files = {path.name: path, **dependencies(source), **{k: p for k, p in executor.items() if p.exists()}}
    parts += [f"{rel}\n{p.stat().st_mtime_ns}\n{p.read_text()}" for rel, p in sorted(files.items())]
    return _sha("\0".join(parts))


def _reads_fresh(record):
    """True when every results file the notebook read still has the hash it had then."""
    return all(_file_digest(path) == digest for path, digest in record.get("reads", {}).items())


def _file_digest(path):
    """sha256 of a file relative to the repository, or ``None`` when it does not exist."""
    p = REPO / path
    return _sha(p.read_bytes()) if p.exists() else None


# --- execution --------------------------------------------------------------------------------

# resolve_parameters() has checked every name against the notebook; papermill's own, looser parser
# misreads comments that contain "=" and would warn "Unable to parse line" and "Passed unknown
# parameter" for valid names.
logging.getLogger("papermill").addFilter(lambda r: "Passed unknown parameter" not in r.getMessage())
logging.getLogger("papermill.translators").setLevel(logging.ERROR)


RECORD_KEYS = ("section", "profile", "notebook", "params", "key", "wall_s", "device", "git_commit", "date",
               "reads", "published")  # what a run record holds (see execute)


def executed_path(section, profile):
    return BUILD / "executed" / profile / f"{notebook_path(section).stem}.ipynb"


def _record_path(section, profile):
    return executed_path(section, profile).with_suffix(".json")


def cached_record(section, profile, key):
    """The record of an up-to-date executed notebook, or ``None``: same key, the results it read
    unchanged, and its published results present and unchanged under the current results root."""
    path = _record_path(section, profile)
    if not (path.exists() and executed_path(section, profile).exists()):
        return None
    # a damaged record is only a cache miss: moved aside, and the section re-executes
    record = spine.read_cached(path, required=RECORD_KEYS)
    if record is None or not isinstance(record.get("reads"), dict):
        if path.exists():
            spine.move_aside(path, "its reads are not a mapping")
        return None
    if record.get("key") != key or not _reads_fresh(record):
        return None
    # its results must be where the current results root says, as that run wrote them
    if _tree_digest(results.section_dir(section, profile)) != record.get("published"):
        return None
    return record


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
            raise RuntimeError(f"section {section} (profile {profile}) is already running in another "
                               f"process; wait for it to finish, then run again") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def execute(section, params, key):
    """Execute one section with papermill; return its record. Raise on any failure.

    The run stages in a folder of its own; its results are published (:func:`publish`) and its
    executed notebook replaces the last good one only when the notebook succeeded."""
    import jupytext
    import papermill

    profile = params["profile"]
    out = executed_path(section, profile)
    own = results.section_dir(section, profile)
    spine.check_writable(own)  # before hours of work, not after
    (BUILD / "staging").mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=BUILD / "staging", prefix=f"{profile}-{section}-"))
    try:
        reads_log = staging / "reads.log"
        src = staging / out.name
        nb = jupytext.read(notebook_path(section))
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(nb, src)
        env = {"CEPAPER_STAGING": str(staging), "CEPAPER_READS_LOG": str(reads_log),
               "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # figures into the notebook
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        start = time.perf_counter()
        kernel_log = BUILD / "logs" / profile / f"{out.stem}.kernel.log"
        kernel_log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(kernel_log, "w") as log:
                papermill.execute_notebook(src, staging / "out.ipynb", parameters=params, kernel_name="python3",
                                           language="python", cwd=str(REPO), progress_bar=sys.stderr.isatty(),
                                           kernel_manager_class=_kernel_manager(log))
        except BaseException as e:
            failed = _keep_failed(staging / "out.ipynb", BUILD / "failed" / profile / out.name)
            kept = (f"the failed notebook is {failed.relative_to(REPO)}; " if failed else "") + \
                "the last good results are kept"
            if isinstance(e, papermill.PapermillExecutionError):
                oserror = _kernel_oserror(e)
                if oserror is not None:  # full disk, read-only or unwritable folder, ...: the user's to fix
                    oserror.add_note(f"(section {section} stopped; {kept})")
                    raise oserror from None
                raise RuntimeError(f"section {section} raised {e.ename}: {e.evalue} ({kept})") from None
            if isinstance(e, OSError):
                e.add_note(f"(section {section} stopped; {kept})")
            raise
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        wall = time.perf_counter() - start
        reads = sorted({r for r in (reads_log.read_text().split() if reads_log.exists() else [])
                        if (REPO / r).parent != own})
        record = {
            "section": section, "profile": profile, "notebook": str(notebook_path(section).relative_to(REPO)),
            "params": params, "key": key, "wall_s": round(wall, 2), "cached": False,
            "device": results.device_name(params.get("device", "cpu")), "git_commit": results.git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reads": {r: _file_digest(r) for r in reads},
        }
        staged = staging / profile / section
        record["published"] = _tree_digest(staged)
        text = _finish_notebook(staging / "out.ipynb", record)
        try:
            spine.write_atomic(staged / STORED, text)  # published with the results
            publish(staged, own)
        except OSError as e:
            e.add_note(f"(section {section} ran, but its results could not be published; the last good "
                       "results are kept)")
            raise
        spine.write_atomic(out, text)
        spine.write_atomic(_record_path(section, profile), json.dumps(record, indent=1))
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
            super().__init__(**kw)
            self.transport_encryption = "auto"

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw.setdefault("stderr", log)
            return await super()._async_launch_kernel(kernel_cmd, **kw)
    return QuietKernelManager


def _keep_failed(src, dest):
    """Move a failed run's notebook ``src`` to ``dest`` for inspection; ``dest``, or ``None`` when
    there is none or it cannot be kept (that must not hide the error that stopped the run)."""
    try:
        if not src.exists():
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dest)  # a rename, or a copy where _build/failed is on another filesystem
        return dest
    except OSError:
        return None


_OS_ERRORS = {"OSError", "IOError", "PermissionError", "FileNotFoundError", "FileExistsError", "IsADirectoryError",
              "NotADirectoryError", "BlockingIOError", "InterruptedError", "TimeoutError"}


def _kernel_oserror(e):
    """The ``OSError`` (with its errno and file) a notebook raised, rebuilt from papermill's
    ``PapermillExecutionError``; ``None`` for any other exception, or an OSError without an errno."""
    match = re.match(r"\[Errno (\d+)\] ([^:]+?)(?:: '(.*)')?$", str(e.evalue).strip())
    if e.ename not in _OS_ERRORS or not match:
        return None
    return OSError(int(match[1]), match[2], *(match.groups()[2:] if match[3] else ()))


def _clean_leftovers(section, profile):
    """Undo what runs of this section that died (SIGKILL, power loss) left: their staging folders,
    and their half-done publishing (:func:`_recover`). Called while holding the section's
    :func:`section_lock`, so no live run owns them."""
    pattern = re.compile(re.escape(f"{profile}-{section}-") + r"[A-Za-z0-9_]{8}")
    for folder in (BUILD / "staging").glob(f"{profile}-{section}-*"):
        if pattern.fullmatch(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
    dest = results.section_dir(section, profile)
    if dest.parent.is_dir():
        _recover(dest)


def _tree_digest(folder):
    """sha256 over the names and contents of the files under ``folder`` except the stored notebook
    (which holds this digest): what a published results folder must still hold for its cache entry."""
    folder = Path(folder)
    if not folder.exists():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STORED)
    return _sha("\0".join(f"{p.relative_to(folder)}\n{_sha(p.read_bytes())}" for p in files))


def reuse(section, profile):
    """Take the executed notebook stored with a section's results (``results/<profile>/<section>/
    notebook.ipynb``, e.g. a committed GPU run) for the book instead of executing; return its record."""
    import nbformat
    path = results.section_dir(section, profile) / STORED
    if not path.exists():
        raise FileNotFoundError(f"no executed notebook {path}: run `cepaper run {section} --profile {profile}` "
                                f"(the paper profile on a GPU) and commit results/{profile}/{section}/")
    record = {**nbformat.read(path, as_version=4).metadata["cepaper"], "cached": True}
    out = executed_path(section, profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, out)
    spine.write_atomic(_record_path(section, profile), json.dumps(record, indent=1))
    return record


def _finish_notebook(path, record):
    """The executed notebook as text, with its run record in its metadata and only papermill's
    injected-parameters cell on the page (the values this run used)."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nb.metadata["cepaper"] = record
    return nbformat.writes(nb)


def _exchange(a, b):
    """Swap the paths ``a`` and ``b`` (two folders on one filesystem) in one atomic step, Linux's
    ``renameat2(RENAME_EXCHANGE)``; ``False`` where the system or filesystem cannot."""
    import ctypes
    import errno
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _copy_tree(src, dst, shown):
    """``shutil.copytree`` whose first failure raises that file's ``OSError`` (its errno, and its name
    under ``shown``, the folder the copy is for: a full disk is ENOSPC on the file that did not fit),
    not ``shutil.Error``'s list of every file."""
    dst.mkdir()
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        try:
            (dst / rel).mkdir() if path.is_dir() else shutil.copy2(path, dst / rel)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(shown / rel)) if e.errno is not None else e from None


def _recover(dest):
    """Undo what a run killed inside :func:`publish` left beside ``dest``: the previous results put
    back when the fallback's two renames were cut between them, half-copied folders removed.
    Called while holding the section's lock."""
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not dest.exists():
        os.replace(olds.pop(), dest)
    for left in [*olds, *dest.parent.glob(f".{dest.name}.new-*")]:
        shutil.rmtree(left, ignore_errors=True)


def publish(new, dest):
    """Replace the results folder ``dest`` by ``new`` (a folder the run wrote), atomically on
    ``dest``'s own filesystem: ``new`` is first copied beside ``dest``, then swapped in by one
    atomic exchange (:func:`_exchange`; where there is none, two renames, undone by the next run if
    cut between them). Any failure, or a kill at any point, leaves the previous results in place or
    the new ones complete."""
    new, dest = Path(new), Path(dest)
    if not new.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    _recover(dest)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    incoming, old = dest.with_name(f".{dest.name}.new-{tag}"), dest.with_name(f".{dest.name}.old-{tag}")
    try:
        _copy_tree(new, incoming, dest)  # may cross filesystems; the renames below never do
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    if dest.exists() and _exchange(incoming, dest):
        shutil.rmtree(incoming, ignore_errors=True)  # it now holds the previous results
        return
    had_old = dest.exists()
    if had_old:
        os.replace(dest, old)
    try:
        os.replace(incoming, dest)
    except BaseException:
        if had_old:
            os.replace(old, dest)
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def run(sections, profile="quick", overrides=(), force=False, reuse_stored=False):
    """Execute ``sections`` (all of the book when empty) with ``profile``; skip up-to-date ones.

    With ``reuse_stored``, execute nothing: take each section's executed notebook stored with its
    results (see :func:`reuse`), e.g. the paper profile run on a GPU and committed."""
    load_profile(profile)
    sections = list(sections) or book_sections()
    # the claims page summarizes the other sections' results: it executes after them
    sections = [s for s in sections if s not in SUMMARIES] + [s for s in sections if s in SUMMARIES]
    plan = []
    for section in sections:  # validate everything before executing anything
        params = resolve_parameters(section, profile, overrides)
        plan.append((section, params))
    if reuse_stored:
        missing = [section for section, _ in plan if not (results.section_dir(section, profile) / STORED).exists()]
        if missing:
            raise FileNotFoundError(
                f"--reuse: no committed {profile}-profile run of {', '.join(missing)} (results/{profile}/<section>/"
                f"{STORED}); run them with `cepaper run SECTION --profile {profile}` and commit their results, "
                f"or build the default book (`make book`), which shows every committed run beside the quick pages")
    records = []
    for section, params in plan:
        if reuse_stored:
            records.append(reuse(section, profile))
            continue
        key = cache_key(section, params)
        record = None if force else cached_record(section, profile, key)
        if record is None:
            print(f"[cepaper] executing {section} (profile {profile})", file=sys.stderr, flush=True)
            with section_lock(section, profile):
                _clean_leftovers(section, profile)
                record = execute(section, params, key)
        else:
            record = {**record, "cached": True}
        records.append(record)
    return records


def format_records(records):
    """A readable table of run records."""
    rows = [f"{'section':<12} {'profile':<8} {'status':<9} {'wall s':>8}  device"]
    rows += [f"{r['section']:<12} {r['profile']:<8} {'cached' if r['cached'] else 'executed':<9} "
             f"{r['wall_s']:>8.1f}  {r['device']}" for r in records]
    return "\n".join(rows)


# --- book -------------------------------------------------------------------------------------

def runs_page(records, scale_records=()):
    """Markdown of the page that lists, per notebook, profile, device and execution time: the runs
    of the section pages, then the committed runs at scale (``scale_records``)."""
    head = ["| section | notebook | profile | device | execution time (s) | executed (UTC) | commit |",
            "|---|---|---|---|---:|---|---|"]
    row = lambda r: (f"| {r['section']} | `{r['notebook']}` | `{r['profile']}` | {r['device']} | "
                     f"{r['wall_s']:.1f} | {r['date']} | `{(r['git_commit'] or 'unknown')[:12]}` |")
    lines = ["# Runs behind this book", "",
             "Every section page was executed by papermill through `cepaper run`; this table is "
             "written from the run records in `_build/executed/<profile>/`.", "", *head, *map(row, records)]
    total = sum(r["wall_s"] for r in records)
    lines += ["", f"Total execution time: {total:.1f} s.", ""]
    if scale_records:
        lines += ["## Committed runs at scale", "",
                  "The pages *at scale* show these runs, committed under `results/<profile>/<section>/` "
                  "and rendered without re-executing. The execution time is the run's whole wall time "
                  "on its machine (a resumed run: its last session).", "", *head, *map(row, scale_records), ""]
    lines += ["## Parameters of each run", ""]
    for r in [*records, *scale_records]:
        params = ", ".join(f"`{k}={v!r}`" for k, v in r["params"].items())
        lines += [f"- **{r['section']}** (`{r['profile']}`): {params}"]
    return "\n".join(lines) + "\n"


#: Profiles whose committed runs the book shows beside the pages it builds, best first.
EVIDENCE = ("paper", "cpu-evidence")


def stored_run(section, profiles=EVIDENCE):
    """``(profile, path)`` of the first executed notebook stored with a section's results
    (``results/<profile>/<section>/notebook.ipynb``) among ``profiles``, or ``(None, None)``."""
    for profile in profiles:
        path = results.section_dir(section, profile) / STORED
        if path.exists():
            return profile, path
    return None, None


def _title(section):
    """The first heading of a section's notebook, without the leading ``#``."""
    import jupytext
    for cell in jupytext.read(notebook_path(section)).cells:
        for line in cell.source.splitlines():
            if cell.cell_type == "markdown" and line.startswith("# "):
                return line[2:].strip()
    return section


def _with_banner(nb, banner, suffix=None):
    """``nb`` with a markdown cell ``banner`` after its title cell (and `` — suffix`` on the title)."""
    import nbformat
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown")
    if suffix:
        lines = nb.cells[first].source.split("\n")
        lines[0] = f"{lines[0]} — {suffix}"
        nb.cells[first].source = "\n".join(lines)
    nb.cells.insert(first + 1, nbformat.v4.new_markdown_cell(banner))
    for cell in nb.cells:
        cell.pop("id", None)
    nb.nbformat_minor = max(nb.nbformat_minor, 4)
    nbformat.validator.normalize(nb)
    return nb


def scale_page(section, built_profile, head=None):
    """The page *at scale* of a section: the best committed run at a profile other than
    ``built_profile`` with a banner saying which run it is (and whether it is older than ``head``,
    the commit the book is built at: default :func:`cepaper.book.results.git_commit`), or a page saying
    none is committed. Returns ``(notebook, record or None)``."""
    import nbformat
    profile, path = stored_run(section, [p for p in EVIDENCE if p != built_profile])
    stem = notebook_path(section).stem
    if path is None:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(
            f"# {_title(section)} — at scale\n\n**Not run.** No run of this section at the paper's scale "
            f"(profile `paper`) or at the CPU-evidence scale (profile `cpu-evidence`) is committed, so the "
            f"[section page]({stem}.ipynb) shows only its quick run. The [claims page](00_claims.ipynb) says "
            f"what running each of its experiments would cost, from the speeds measured in this book.")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        return nb, None
    nb = nbformat.read(path, as_version=4)
    rec = {**nb.metadata["cepaper"], "cached": True}
    commit = (rec.get("git_commit") or "unknown")[:12]
    head = ((results.git_commit() if head is None else head) or "unknown")[:12]
    old = "" if commit == head else f" The book is built at `{head}`: this run is from older code."
    what = {"paper": "the paper's scale", "cpu-evidence": "the CPU-evidence scale (the paper's models, "
            "optimizer and data; fewer repetitions, epochs and seeds, as the page says)"}[profile]
    banner = (f"**At {what}**: profile `{profile}`, executed on {rec['device']} at commit `{commit}` on "
              f"{rec['date'][:10]} (its last execution took {rec['wall_s'] / 60:.1f} min; work it resumed from "
              f"checkpoints of earlier executions is not counted); committed in "
              f"`results/{profile}/{section}/` and shown here without re-executing.{old} "
              f"[The quick run of this section]({stem}.ipynb).")
    return _with_banner(nb, banner, f"at scale ({profile})"), rec


def _write_if_changed(path, text):
    """Write ``text`` to ``path`` only when it differs, so Sphinx rebuilds only changed pages."""
    if not path.exists() or path.read_text() != text:
        spine.write_atomic(path, text)


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


def vendor_mathjax():
    """Copy MathJax 3 (pip package django-static-mathjax) to ``book/_static/mathjax``: the book's
    math then renders without a network (``mathjax_path`` in ``_config.yml``)."""
    import mathjax
    src = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dst = REPO / "book" / "_static" / "mathjax"
    if not (dst / "tex-chtml.js").exists():  # copied whole, then renamed: never half there
        tmp = dst.with_name(".mathjax.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)


def book(profile="quick", force=False, reuse_stored=False):
    """Run every section of the book with ``profile``, then build the HTML book; return index.html.

    Each section page is followed by its page *at scale* (:func:`scale_page`): the committed run of
    the section at the best other profile of :data:`EVIDENCE`, rendered without executing."""
    import nbformat
    records = run([], profile, force=force, reuse_stored=reuse_stored)
    vendor_mathjax()
    SECTIONS_DIR.mkdir(parents=True, exist_ok=True)
    pages, scale_records, head = {}, [], results.git_commit()
    for r in records:
        src = executed_path(r["section"], profile)
        nb = nbformat.read(src, as_version=4)
        if r["section"] not in SUMMARIES:
            scale, rec = scale_page(r["section"], profile, head)
            pages[f"{src.stem}_scale.ipynb"] = nbformat.writes(scale)
            if rec is not None:
                scale_records.append(rec)
                nb = _with_banner(nb, f"**Results at scale:** this page is the `{profile}` run; the same section "
                                      f"at profile `{rec['profile']}` is on [its page at scale]({src.stem}_scale.ipynb).")
        pages[src.name] = nbformat.writes(nb)
    for old in set(SECTIONS_DIR.glob("*.ipynb")) - {SECTIONS_DIR / name for name in pages}:
        old.unlink()
    for name, text in pages.items():
        _write_if_changed(SECTIONS_DIR / name, text)
    _write_if_changed(SECTIONS_DIR / "runs.md", runs_page(records, scale_records))
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(REPO), "--warningiserror",
           "--nitpick", "--keep-going", "--quiet"]
    print("[cepaper] building the book", file=sys.stderr, flush=True)
    if run_child(cmd, cwd=REPO):
        raise RuntimeError("jupyter-book could not build the book; its messages above say why")
    return BUILD / "html" / "index.html"
