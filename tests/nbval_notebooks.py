"""Copies of the executed notebooks for nbval (`make test-notebooks`): ``python tests/nbval_notebooks.py SRC DEST``.

An executed notebook's injected parameters name the folder `cepaper run` published it to
(``results_dir = "results/quick/<section>"``), so nbval, re-executing it as it is, would save over the
book's published results, whose digest is the book's cache entry: the next `make book` would then execute
every section again. The copies in ``DEST`` have that ``results_dir`` cleared, so each saves to
``$CEPAPER_RESULTS`` (the Makefile's scratch store), and are otherwise the notebooks themselves.
"""

import re
import sys
from pathlib import Path

import nbformat

INJECTED = "injected-parameters"
RESULTS_DIR = re.compile(r'^results_dir = ".*"$', re.M)


def for_nbval(nb):
    """``nb`` with ``results_dir = ""`` in its injected-parameters cell (which must set it, once)."""
    (cell,) = [c for c in nb.cells if INJECTED in c.metadata.get("tags", [])]
    cell.source, n = RESULTS_DIR.subn('results_dir = ""', cell.source)
    if n != 1:
        raise ValueError(f"the injected parameters set results_dir {n} times, not once:\n{cell.source}")
    return nb


def main(src, dest):
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(src).glob("*.ipynb")):
        nbformat.write(for_nbval(nbformat.read(path, as_version=4)), dest / path.name)


if __name__ == "__main__":
    main(*sys.argv[1:])
