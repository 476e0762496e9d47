"""Shared fixtures: a tiny throw-away repository layout for the notebook pipeline and a way to run
the `cepaper` command in a subprocess against it (to kill it, limit it, or run two at once); a way to
plant a one-line bug in a library function; the hypothesis settings of the property-based tests;
torch on one thread."""

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from cepaper.book import cache, pipeline, profiles, render, results
from cepaper.montecarlo import intra_op_threads

# torch on one intra-op thread (unless OMP_NUM_THREADS says otherwise), here and in every process a test
# starts (notebook kernels, torchrun ranks, the CLI, benchmarks): the models are tiny, and on a busy
# 2-core machine a second thread per process only spins against the others (a toy training epoch of
# the train benchmark: 2 s on two threads, 0.04 s on one). A test about threads sets its own count.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

NOTEBOOK = """# %% [markdown]
# A tiny section

# %% tags=["parameters"]
profile = "quick"
results_dir = ""
value = 1
fail = False
data_root = None

# %%
if False:
    import cepaper.fake  # seen by the dependency scan, never executed
from cepaper.book import results
run = results.Run("lemma1", profile, params=dict(value=value), results_dir=results_dir)
run.save("answer", {"value": value})
assert not fail, "asked to fail"
"""

SOURCE_ROOT = Path(pipeline.__file__).resolve().parents[2]  # the checkout whose cepaper is tested
BOOK_MODULES = (pipeline, profiles, cache, render, results)


def layout_paths(root):
    """The book's paths (module attributes) in the repository layout ``root``."""
    return {
        "REPO": root,
        "NOTEBOOKS": root / "notebooks",
        "PROFILES": root / "profiles",
        "BUILD": root / "_build",
        "STAGING": root / "_build" / "staging",
        "SECTIONS_DIR": root / "book" / "sections",
    }


def point_at(root, set_attr=setattr, modules=BOOK_MODULES):
    """Make the book's machinery (pipeline, profiles, cache key, render, results store) use the
    repository layout ``root`` (``set_attr``: ``monkeypatch.setattr`` in a test, plain ``setattr`` in a
    subprocess)."""
    for module in modules:
        for name, value in layout_paths(root).items():
            if hasattr(module, name):
                set_attr(module, name, value)


def lay_out(root):
    """Write a minimal repository into the folder ``root``: _toc.yml, one notebook, one profile, two
    cepaper modules; return ``root``."""
    (root / "notebooks").mkdir()
    (root / "notebooks" / "01_lemma1.py").write_text(NOTEBOOK)
    (root / "profiles").mkdir()
    (root / "profiles" / "quick.yaml").write_text("lemma1:\n  value: 2\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/sections/01_lemma1\n")
    (root / "cepaper").mkdir()
    for name in ("fake", "other"):
        (root / "cepaper" / f"{name}.py").write_text(f"# {name}\n")
    # the kernel runs in this folder: its `cepaper` package must still reach the real modules
    (root / "cepaper" / "__init__.py").write_text(
        f"__path__.append({str(SOURCE_ROOT / 'cepaper')!r})\n__version__ = 'test'\n"
    )
    return root


def use_layout(root, monkeypatch):
    """Point the book's machinery and its results store (``$CEPAPER_RESULTS``) at the layout ``root``
    until ``monkeypatch`` is undone."""
    point_at(root, monkeypatch.setattr)
    monkeypatch.setenv("CEPAPER_RESULTS", str(root / "results"))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A minimal repository (:func:`lay_out`), which the book's machinery uses for the test."""
    use_layout(lay_out(tmp_path), monkeypatch)
    return tmp_path


# `cepaper ARGS...` against the layout argv[1]; $CEPAPER_FAULT, if set, is Python run first (a test's
# fault: a kill, a file-size limit, a failing call)
DRIVER = f"""
import os, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from tests import conftest
conftest.point_at(Path(sys.argv[1]))
exec(os.environ.get("CEPAPER_FAULT", ""))
from cepaper import cli
sys.exit(cli.main(sys.argv[2:]))
"""


def cepaper(root, *args, fault="", env=None, wait=True, **kw):
    """Run `cepaper ARGS` in a subprocess against the repository layout ``root`` (see ``DRIVER``):
    the finished ``CompletedProcess`` (text), or with ``wait=False`` the running ``Popen``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(SOURCE_ROOT),
        "CEPAPER_FAULT": fault,
        "CEPAPER_RESULTS": str(root / "results"),
        **(env or {}),
    }
    cmd = [sys.executable, "-c", DRIVER, str(root), *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120, **kw)


# Property tests stay within seconds (few examples, no per-example deadline on a busy CPU); in CI
# (CI=true) they draw the same examples every run and keep no example database.
settings.register_profile("cepaper", max_examples=50, deadline=None)
settings.register_profile("ci", parent=settings.get_profile("cepaper"), derandomize=True, database=None)
settings.load_profile("ci" if os.environ.get("CI") else "cepaper")


@pytest.fixture
def plant(monkeypatch):
    """Plant a one-line bug in a scratch copy of a library function, for the duration of a test.

    ``plant(module, "name", old, new)`` compiles the source of ``module.name`` with ``old`` replaced
    by ``new`` (``old`` must occur exactly once) in the module's namespace, so that ``module.name`` is
    the planted copy until the test ends (other monkeypatches of the module still apply to it); the
    file itself is never touched. Tests use it to show that a check has power, i.e. that it fails
    with a realistic bug in the code it checks.
    """

    def planted(module, name, old, new):
        if any("__mutmut_" in key for key in vars(module)):  # mutmut's copy wraps every function
            pytest.skip("planting a bug needs the plain source; mutation testing plants its own")
        src = textwrap.dedent(inspect.getsource(getattr(module, name)))
        if src.count(old) != 1:
            raise AssertionError(f"{old!r} occurs {src.count(old)} times in {module.__name__}.{name}, not once")
        monkeypatch.setattr(module, name, getattr(module, name))  # restored when the test ends
        exec(compile(src.replace(old, new), f"<planted {module.__name__}.{name}>", "exec"), vars(module))
        return getattr(module, name)

    return planted


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (tiny models: threads only add overhead on a busy CPU)."""
    with intra_op_threads(1):
        yield
