"""Shared fixtures: a tiny throw-away repository layout for the notebook pipeline, and a way to
run the `cepaper` command in a subprocess against it (to kill it, limit it, or run two at once)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cepaper import pipeline, results

NOTEBOOK = '''# %% [markdown]
# A tiny section

# %% tags=["parameters"]
profile = "quick"
value = 1
fail = False
data_root = None

# %%
if False:
    import cepaper.fake  # seen by the dependency scan, never executed
from cepaper import results
run = results.Run("lemma1", profile, params=dict(value=value))
run.save("answer", {"value": value})
assert not fail, "asked to fail"
'''

SOURCE_ROOT = Path(pipeline.__file__).resolve().parent.parent  # the checkout whose cepaper is tested


def point_at(root, set_attr=setattr):
    """Make the pipeline and the results store use the repository layout ``root`` (``set_attr``:
    ``monkeypatch.setattr`` in a test, plain ``setattr`` in a subprocess)."""
    for module in (pipeline, results):
        set_attr(module, "REPO", root)
    for name, value in (("NOTEBOOKS", root / "notebooks"), ("PROFILES", root / "profiles"),
                        ("BUILD", root / "_build")):
        set_attr(pipeline, name, value)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A minimal repository: _toc.yml, one notebook, one profile, two cepaper modules."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_lemma1.py").write_text(NOTEBOOK)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "quick.yaml").write_text("lemma1:\n  value: 2\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                       "  - file: book/sections/01_lemma1\n")
    (tmp_path / "cepaper").mkdir()
    for name in ("fake", "other"):
        (tmp_path / "cepaper" / f"{name}.py").write_text(f"# {name}\n")
    # the kernel runs in this folder: its `cepaper` package must still reach the real modules
    (tmp_path / "cepaper" / "__init__.py").write_text(
        f"__path__.append({str(Path(pipeline.__file__).parent)!r})\n__version__ = 'test'\n")
    point_at(tmp_path, monkeypatch.setattr)
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path / "results"))
    return tmp_path


# `cepaper ARGS...` against the layout argv[1]; $CEPAPER_FAULT, if set, is Python run first (a test's
# fault: a kill, a file-size limit, a failing call)
DRIVER = f'''
import os, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
import conftest
conftest.point_at(Path(sys.argv[1]))
exec(os.environ.get("CEPAPER_FAULT", ""))
from cepaper import cli
sys.exit(cli.main(sys.argv[2:]))
'''


def cepaper(root, *args, fault="", env=None, wait=True, **kw):
    """Run `cepaper ARGS` in a subprocess against the repository layout ``root`` (see ``DRIVER``):
    the finished ``CompletedProcess`` (text), or with ``wait=False`` the running ``Popen``."""
    env = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT), "CEPAPER_FAULT": fault,
           "CEPAPER_RESULTS": str(root / "results"), **(env or {})}
    cmd = [sys.executable, "-c", DRIVER, str(root), *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120, **kw)
