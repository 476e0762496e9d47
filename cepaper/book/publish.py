"""Publishing a section's run (the third step of `cepaper run`: plan → execute → publish → render): its
executed notebook is finished (:func:`finish_notebook`) and stored with its results, and the staged folder
replaces ``results/<profile>/<section>`` in one step (``renameat2(RENAME_EXCHANGE)`` where the filesystem
has it, else two renames that :func:`recover` completes after a crash), so a reader sees the old results or
the new, never a mix."""

import os
import shutil
import sys
import time
from pathlib import Path

from cepaper import files
from cepaper.book import results
from cepaper.book.cache import sha

STORED = "notebook.ipynb"  # the executed notebook, kept beside a section's results


def tree_digest(folder):
    """sha256 over the names and contents of the files under ``folder`` except the stored notebook
    (which holds this digest): what a published results folder must still hold for its cache entry."""
    folder = Path(folder)
    if not folder.exists():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STORED)
    return sha("\0".join(f"{p.relative_to(folder)}\n{sha(p.read_bytes())}" for p in files))


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


def recover(dest):
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
    recover(dest)
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


def finish_notebook(path, record, staged, dest):
    """The executed notebook ``path`` as text, with its run ``record`` in its metadata and only
    papermill's injected-parameters cell on the page (the values this run used), its ``results_dir``
    the folder it is published in (``dest``), not the staging folder ``staged`` the kernel wrote to."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace(f'"{staged}"', f'"{results.in_repo(dest)}"')
    if "results_dir" in nb.metadata.get("papermill", {}).get("parameters", {}):
        nb.metadata["papermill"]["parameters"]["results_dir"] = str(results.in_repo(dest))
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    for machine_path in ("input_path", "output_path"):  # papermill's absolute paths of this machine
        nb.metadata.get("papermill", {}).pop(machine_path, None)
    nb.metadata["cepaper"] = record
    return nbformat.writes(nb)


def publish_run(notebook, staged, dest, record):
    """Publish one successful run: its executed ``notebook`` finished (:func:`finish_notebook`) and
    stored with the results it ``staged``, the whole folder then swapped in at ``dest``
    (:func:`publish`). Returns the finished notebook's text; on a failure the last good results stay."""
    record["published"] = tree_digest(staged)
    text = finish_notebook(notebook, record, staged, dest)
    try:
        files.write_atomic(Path(staged) / STORED, text)  # published with the results
        publish(staged, dest)
    except OSError as e:
        e.add_note(
            f"(section {record['section']} ran, but its results could not be published; the last good results are kept)"
        )
        raise
    return text
