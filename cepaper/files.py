"""Files that are never half written, and fingerprints of data.

:func:`write_atomic` writes a temporary file in the same folder, then ``os.replace`` puts it in place, so a crash
never leaves a half-written record or checkpoint to be mistaken for a good one; a damaged file is
moved aside (:func:`move_aside`), never read again. :func:`digest` is a short fingerprint of arrays,
so a checkpoint or a cached record is known to be for this data. :func:`checkout` tells a source
checkout from an installed package, so that nothing is ever written into site-packages.
"""

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def checkout():
    """The source checkout this package runs from: the folder that holds ``cepaper/`` with the book's
    ``_toc.yml`` beside it; ``None`` for an installed package (site-packages, a wheel), which has neither."""
    top = Path(__file__).resolve().parents[1]
    return top if (top / "_toc.yml").is_file() else None


def move_aside(path, why):
    """Rename a damaged cache file or checkpoint ``path`` to ``<path>.corrupt`` (kept for inspection,
    never read again) and say so on stderr; return the new path."""
    path = Path(path)
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    print(
        f"[cepaper] {path} is damaged ({why}): moved aside to {aside.name}; it is recomputed",
        file=sys.stderr,
        flush=True,
    )
    return aside


def reason(e):
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
        move_aside(path, f"not JSON, {reason(e)}")
        return None
    missing = [k for k in required if not isinstance(record, dict) or k not in record]
    if not record or missing:
        move_aside(path, "an empty record" if not record else f"no {', '.join(map(repr, missing))} in the record")
        return None
    return record


def jsonable(x):
    """Convert numpy/torch scalars and arrays (and NaN) to plain JSON values."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


#: the process's umask (read by setting it and setting it back): temporary files get its mode.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_writable(folder):
    """Raise ``PermissionError`` naming ``folder`` (or its first existing parent) unless files can be
    created there: checked before a long run, not after it."""
    folder = Path(folder)
    probe = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write results to {probe}: it is not writable; fix its permissions "
            "or point CEPAPER_RESULTS at a writable folder"
        )
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


def digest(*arrays):
    """A short hex fingerprint of the values of tensors or numpy arrays (``None`` allowed): to tell
    whether a checkpoint or a cached record is for this data."""
    import torch  # here: importing this module (the `cepaper` command's parser does) loads no torch

    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        if isinstance(a, torch.Tensor):
            a = a.detach().to("cpu").numpy()
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _naming(e, path):
    """The same ``OSError`` (same errno, hence subclass), naming ``path`` instead of a temporary file."""
    return OSError(e.errno, e.strerror, str(path)) if e.errno is not None else e
