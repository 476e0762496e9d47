"""The cache key of a section's execution: its notebook, its parameters and the cepaper source it
imports (transitively), with each file's content and modification time; and the results files a
run read, whose change re-executes it."""

import ast
import hashlib
import json
from pathlib import Path

from cepaper.book.profiles import notebook_path
from cepaper.book.results import REPO


def sha(data):
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
    executor = {"cepaper/book/cache.py": Path(__file__), "requirements.txt": REPO / "requirements.txt"}
    files = {path.name: path, **dependencies(source), **{k: p for k, p in executor.items() if p.exists()}}
    parts += [f"{rel}\n{p.stat().st_mtime_ns}\n{p.read_text()}" for rel, p in sorted(files.items())]
    return sha("\0".join(parts))


def reads_fresh(record):
    """True when every results file the notebook read still has the hash it had then."""
    return all(file_digest(path) == digest for path, digest in record.get("reads", {}).items())


def file_digest(path):
    """sha256 of a file relative to the repository, or ``None`` when it does not exist."""
    p = REPO / path
    return sha(p.read_bytes()) if p.exists() else None
