"""The cache key of a section, tested directly (no kernel): it moves with everything that defines an
execution, and with nothing else. `test_pipeline` checks the same promise end to end."""

import hashlib
import os

import pytest

from cepaper import runs
from cepaper.book import cache, profiles


def deps_of(source):
    """What the book's cache key follows from a notebook's source: the package and its imports."""
    return runs.dependencies(("cepaper",), source, root=cache.REPO)


def key(params=None):
    return cache.cache_key(profiles.notebook_path("lemma1"), {"value": 2} if params is None else params)


def test_same_inputs_same_key_and_parameter_order_does_not_matter(repo):
    assert key() == key()
    assert key({"a": 1, "b": 2}) == key({"b": 2, "a": 1})
    assert key({"value": 2}) != key({"value": 3})
    assert key({"value": 2}) != key({"value": 2, "data_root": None})


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "notebooks" / "01_lemma1.py").write_text(
            (r / "notebooks" / "01_lemma1.py").read_text() + "# comment\n"
        ),
        lambda r: (r / "cepaper" / "fake.py").write_text("# edited\n"),
        lambda r: os.utime(r / "cepaper" / "fake.py", ns=(1, 1)),
        lambda r: os.utime(r / "notebooks" / "01_lemma1.py", ns=(1, 1)),
        lambda r: (r / "cepaper" / "__init__.py").write_text(
            (r / "cepaper" / "__init__.py").read_text() + "# edited\n"
        ),
        lambda r: (r / "requirements.txt").write_text("torch==0\n"),
    ],
    ids=["notebook", "imported module", "module touched", "notebook touched", "package init", "requirements"],
)
def test_key_moves_with_what_defines_the_execution(repo, change):
    (repo / "requirements.txt").write_text("torch==2.14.1\n")
    before = key()
    change(repo)
    assert key() != before


def test_key_ignores_modules_the_notebook_does_not_import(repo):
    before = key()
    (repo / "cepaper" / "other.py").write_text("# edited, never imported\n")
    (repo / "cepaper" / "new.py").write_text("# new\n")
    assert key() == before


@pytest.mark.parametrize(
    "statement",
    ["from cepaper import deep", "import cepaper.deep", "import cepaper.deep as d", "from cepaper.deep import x"],
)
def test_dependencies_follow_every_import_form_through_other_modules(repo, statement):
    (repo / "cepaper" / "fake.py").write_text(statement + "\n")
    (repo / "cepaper" / "deep.py").write_text("x = 1\n")
    deps = deps_of("import cepaper.fake\n")
    assert set(deps) == {"cepaper/__init__.py", "cepaper/fake.py", "cepaper/deep.py"}
    assert deps["cepaper/deep.py"] == repo / "cepaper" / "deep.py"
    before = key()
    (repo / "cepaper" / "deep.py").write_text("x = 2\n")
    assert key() != before, "a module imported through another is in the key"


def test_dependencies_include_the_packages_a_module_sits_in(repo):
    (repo / "cepaper" / "sub").mkdir()
    (repo / "cepaper" / "sub" / "__init__.py").write_text("# sub\n")
    (repo / "cepaper" / "sub" / "leaf.py").write_text("# leaf\n")
    deps = deps_of("from cepaper.sub.leaf import thing\nimport numpy\nfrom os import path\n")
    assert set(deps) == {"cepaper/__init__.py", "cepaper/sub/__init__.py", "cepaper/sub/leaf.py"}
    assert list(deps) == sorted(deps)


def test_imports_outside_cepaper_are_not_followed(tmp_path):
    found = runs.imports("import numpy\nimport cepaperish\nfrom . import x\nfrom cepaper.a import b\n", tmp_path)
    assert found == {"cepaper.a"}, "b is no module under the root: a name cepaper.a defines"
    (tmp_path / "cepaper" / "a").mkdir(parents=True)
    (tmp_path / "cepaper" / "a" / "b.py").write_text("")
    assert runs.imports("from cepaper.a import b\n", tmp_path) == {"cepaper.a.b"}


def test_results_read_are_fresh_until_they_change_or_vanish(repo):
    path = repo / "results" / "alpha.json"
    path.parent.mkdir()
    path.write_bytes(b'{"alpha": 1.6}')
    digest = cache.file_digest("results/alpha.json")
    assert digest == hashlib.sha256(b'{"alpha": 1.6}').hexdigest()
    assert cache.file_digest("results/none.json") is None
    assert cache.reads_fresh({}) and cache.reads_fresh({"reads": {}})
    assert cache.reads_fresh({"reads": {"results/alpha.json": digest}})
    assert cache.reads_fresh({"reads": {"results/none.json": None}}), "still missing is unchanged"
    assert not cache.reads_fresh({"reads": {"results/alpha.json": digest, "results/none.json": digest}})
    path.write_bytes(b'{"alpha": 1.7}')
    assert not cache.reads_fresh({"reads": {"results/alpha.json": digest}})
    path.unlink()
    assert not cache.reads_fresh({"reads": {"results/alpha.json": digest}})


def test_the_package_and_every_package_above_a_module_are_dependencies(repo):
    assert set(deps_of("import numpy\n")) == {"cepaper/__init__.py"}, "cepaper itself, always"
    (repo / "cepaper" / "a" / "b").mkdir(parents=True)
    for rel in ("a/__init__.py", "a/b/__init__.py"):
        (repo / "cepaper" / rel).write_text("# package\n")
    deps = deps_of("from cepaper.a.b import thing\n")
    assert set(deps) == {"cepaper/__init__.py", "cepaper/a/__init__.py", "cepaper/a/b/__init__.py"}


def test_a_section_whose_grid_left_runs_missing_is_never_cached(repo):
    """Issue 24: after a grid's job was killed, running the section again said `cached` and the run
    stayed missing. An execution whose published records count missing runs (failed or pending) is
    not up to date: the section executes again (its grid resumes them) until every run finished."""
    from cepaper.book import pipeline
    from tests.conftest import NOTEBOOK

    (repo / "notebooks" / "01_lemma1.py").write_text(
        NOTEBOOK
        + "from pathlib import Path\n"
        + 'lost = {"missing": "failed", "why": "killed (SIGKILL)"} if Path("killed").exists() else {"history": {}}\n'
        + 'run.save("runs", {"records": [{"seed": 0, "history": {}}, {"seed": 1, **lost}]})\n'
    )
    (repo / "killed").write_text("")
    status = lambda: [r["cached"] for r in pipeline.run(["lemma1"])]
    assert status() == [False]
    assert cache.missing_runs(repo / "results" / "quick" / "lemma1") == 1
    assert status() == [False], "a run is missing: executed again, not cached"
    (repo / "killed").unlink()
    assert status() == [False] and cache.missing_runs(repo / "results" / "quick" / "lemma1") == 0
    assert status() == [True], "every run finished: cached"


def test_missing_runs_reads_only_records_of_runs(tmp_path):
    assert cache.missing_runs(tmp_path / "none") == 0
    (tmp_path / "a.json").write_text('{"data": {"records": [{"missing": "pending"}, {"seed": 1}, 3]}}')
    (tmp_path / "b.json").write_text('{"data": {"records": {"missing": 1}, "rows": [{"missing": "x"}]}}')
    (tmp_path / "c.json").write_text("[1, 2]")
    (tmp_path / "d.json").write_text("{not json")
    assert cache.missing_runs(tmp_path) == 1
