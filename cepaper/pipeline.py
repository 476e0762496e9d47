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
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from cepaper import results

REPO = results.REPO
NOTEBOOKS = REPO / "notebooks"
PROFILES = REPO / "profiles"
BUILD = REPO / "_build"
SECTIONS_DIR = REPO / "book" / "sections"
STORED = "notebook.ipynb"  # the executed notebook, kept beside a section's results


# --- sections, profiles, parameters -------------------------------------------------------------

def book_sections():
    """Sections in book order, read from ``_toc.yml`` entries ``book/sections/NN_<section>``."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
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


def load_profile(profile):
    """Parameters per section of ``profiles/<profile>.yaml``."""
    path = PROFILES / f"{profile}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise ValueError(f"profile must be one of {', '.join(names)}; got {profile!r}")
    return yaml.safe_load(path.read_text()) or {}


def notebook_parameters(path):
    """Defaults of the ``parameters`` cell of a py:percent notebook, as ``{name: value}``."""
    import jupytext
    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name} must have exactly one cell tagged 'parameters', found {len(cells)}")
    tree = ast.parse(cells[0].source)
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def _type_ok(default, value):
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def resolve_parameters(section, profile, overrides=()):
    """The parameters papermill passes: notebook defaults < profile < overrides, all checked."""
    defaults = notebook_parameters(notebook_path(section))
    params = {**load_profile(profile).get(section, {}), **dict(overrides)}
    for name, value in params.items():
        if name not in defaults:
            raise ValueError(f"unknown parameter {name!r} for section {section}; "
                             f"allowed: {', '.join(sorted(defaults))}")
        if not _type_ok(defaults[name], value):
            raise ValueError(f"parameter {name!r} of section {section} must be "
                             f"{type(defaults[name]).__name__}, got {value!r}")
    return {**defaults, **params, "profile": profile}


def parse_overrides(pairs):
    """``[(NAME, "VALUE"), ...]`` from the command line, values parsed as YAML."""
    return [(name, yaml.safe_load(value)) for name, value in pairs]


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


def executed_path(section, profile):
    return BUILD / "executed" / profile / f"{notebook_path(section).stem}.ipynb"


def _record_path(section, profile):
    return executed_path(section, profile).with_suffix(".json")


def cached_record(section, profile, key):
    """The record of an up-to-date executed notebook, or ``None``."""
    path = _record_path(section, profile)
    if not (path.exists() and executed_path(section, profile).exists()):
        return None
    record = json.loads(path.read_text())
    return record if record.get("key") == key and _reads_fresh(record) else None


def _discard(section, profile):
    for p in (executed_path(section, profile), _record_path(section, profile)):
        p.unlink(missing_ok=True)


def execute(section, params, key):
    """Execute one section with papermill; return its record. Raise on any failure."""
    import jupytext
    import papermill

    profile = params["profile"]
    out = executed_path(section, profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = BUILD / "staging" / profile
    shutil.rmtree(staging, ignore_errors=True)
    reads_log = staging / "reads.log"
    staging.mkdir(parents=True)
    src = staging / out.name
    nb = jupytext.read(notebook_path(section))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, src)
    env = {"CEPAPER_STAGING": str(staging), "CEPAPER_READS_LOG": str(reads_log),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # figures into the notebook
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _discard(section, profile)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(src, staging / "out.ipynb", parameters=params, kernel_name="python3",
                                   language="python", cwd=str(REPO), progress_bar=sys.stderr.isatty())
    except BaseException as e:
        failed = BUILD / "failed" / profile / out.name
        failed.parent.mkdir(parents=True, exist_ok=True)
        if (staging / "out.ipynb").exists():
            os.replace(staging / "out.ipynb", failed)
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, papermill.PapermillExecutionError):
            raise RuntimeError(f"section {section} raised {e.ename}: {e.evalue} "
                               f"(the failed notebook is {failed.relative_to(REPO)})") from None
        raise
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    wall = time.perf_counter() - start
    own = results.section_dir(section, profile)
    reads = sorted({r for r in (reads_log.read_text().split() if reads_log.exists() else [])
                    if (REPO / r).parent != own})
    record = {
        "section": section, "profile": profile, "notebook": str(notebook_path(section).relative_to(REPO)),
        "params": params, "key": key, "wall_s": round(wall, 2), "cached": False,
        "device": results.device_name(params.get("device", "cpu")), "git_commit": results.git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reads": {r: _file_digest(r) for r in reads},
    }
    text = _finish_notebook(staging / "out.ipynb", record)
    results.write_atomic(staging / profile / section / STORED, text)  # published with the results
    _publish(staging / profile / section, own)
    results.write_atomic(out, text)
    results.write_atomic(_record_path(section, profile), json.dumps(record, indent=1))
    shutil.rmtree(staging, ignore_errors=True)
    return record


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
    results.write_atomic(_record_path(section, profile), json.dumps(record, indent=1))
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


def _publish(new, dest):
    """Replace the results folder ``dest`` by ``new`` (a folder the run wrote), or keep it if none."""
    if not new.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def run(sections, profile="quick", overrides=(), force=False, reuse_stored=False):
    """Execute ``sections`` (all of the book when empty) with ``profile``; skip up-to-date ones.

    With ``reuse_stored``, execute nothing: take each section's executed notebook stored with its
    results (see :func:`reuse`), e.g. the paper profile run on a GPU and committed."""
    load_profile(profile)
    sections = list(sections) or book_sections()
    plan = []
    for section in sections:  # validate everything before executing anything
        params = resolve_parameters(section, profile, overrides)
        plan.append((section, params))
    records = []
    for section, params in plan:
        if reuse_stored:
            records.append(reuse(section, profile))
            continue
        key = cache_key(section, params)
        record = None if force else cached_record(section, profile, key)
        if record is None:
            print(f"[cepaper] executing {section} (profile {profile})", file=sys.stderr, flush=True)
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

def runs_page(records):
    """Markdown of the page that lists, per notebook, profile, device and execution time."""
    lines = ["# Runs behind this book", "",
             "Every section page was executed by papermill through `cepaper run`; this table is "
             "written from the run records in `_build/executed/<profile>/`.", "",
             "| section | notebook | profile | device | execution time (s) | executed (UTC) | commit |",
             "|---|---|---|---|---:|---|---|"]
    for r in records:
        lines.append(f"| {r['section']} | `{r['notebook']}` | `{r['profile']}` | {r['device']} | "
                     f"{r['wall_s']:.1f} | {r['date']} | `{(r['git_commit'] or 'unknown')[:12]}` |")
    total = sum(r["wall_s"] for r in records)
    lines += ["", f"Total execution time: {total:.1f} s.", "", "## Parameters of each run", ""]
    for r in records:
        params = ", ".join(f"`{k}={v!r}`" for k, v in r["params"].items())
        lines += [f"- **{r['section']}**: {params}"]
    return "\n".join(lines) + "\n"


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
    """Run every section of the book with ``profile``, then build the HTML book; return index.html."""
    records = run([], profile, force=force, reuse_stored=reuse_stored)
    vendor_mathjax()
    SECTIONS_DIR.mkdir(parents=True, exist_ok=True)
    wanted = {executed_path(r["section"], profile) for r in records}
    for old in set(SECTIONS_DIR.glob("*.ipynb")) - {SECTIONS_DIR / p.name for p in wanted}:
        old.unlink()
    for src in wanted:  # copy only what changed, so Sphinx rebuilds only those pages
        dst = SECTIONS_DIR / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)
    page = SECTIONS_DIR / "runs.md"
    if not page.exists() or page.read_text() != runs_page(records):
        results.write_atomic(page, runs_page(records))
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(REPO), "--warningiserror",
           "--nitpick", "--keep-going", "--quiet"]
    print("[cepaper] building the book", file=sys.stderr, flush=True)
    if subprocess.run(cmd, cwd=REPO).returncode:
        raise RuntimeError("jupyter-book could not build the book; its messages above say why")
    return BUILD / "html" / "index.html"
