"""The cache key of a section's execution: its notebook, its parameters and the cepaper source it
imports (transitively, :func:`cepaper.runs.dependencies`), with each file's content and modification
time; and the results files a run read, whose change re-executes it."""

import hashlib
import json
from pathlib import Path

from cepaper import runs
from cepaper.book.results import REPO


def sha(data):
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()


def cache_key(notebook, params):
    """Hash of the ``notebook``, its parameters, the cepaper source it depends on, and the executor
    (this module and the pinned requirements): each file's content and modification time, so an
    edited or touched file re-executes the sections that import it."""
    path = Path(notebook)
    source = path.read_text()
    parts = [json.dumps(params, sort_keys=True)]
    executor = {"cepaper/book/cache.py": Path(__file__), "requirements.txt": REPO / "requirements.txt"}
    files = {
        path.name: path,
        **runs.dependencies(("cepaper",), source, root=REPO),
        **{k: p for k, p in executor.items() if p.exists()},
    }
    parts += [f"{rel}\n{p.stat().st_mtime_ns}\n{p.read_text()}" for rel, p in sorted(files.items())]
    return sha("\0".join(parts))


def reads_fresh(record):
    """True when every results file the notebook read still has the hash it had then."""
    return all(file_digest(path) == digest for path, digest in record.get("reads", {}).items())


def file_digest(path):
    """sha256 of a file relative to the repository, or ``None`` when it does not exist."""
    p = REPO / path
    return sha(p.read_bytes()) if p.exists() else None


def missing_runs(folder):
    """How many runs the results published in ``folder`` record as missing (a grid's ``records`` with
    ``missing``: failed or pending, :func:`cepaper.training.grids.missing_runs`). An execution that
    left runs missing is never up to date: the section executes again, and resumes exactly those,
    until every run has finished."""
    count = 0
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else ():
        try:
            data = json.loads(path.read_text()).get("data")
        except (OSError, ValueError, AttributeError):
            continue  # not a record of runs (the store moves a damaged file aside)
        records = data.get("records") if isinstance(data, dict) else None
        count += sum(isinstance(r, dict) and bool(r.get("missing")) for r in records or () if isinstance(records, list))
    return count
