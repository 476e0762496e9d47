"""The cache key of a section, tested directly (no kernel): it moves with everything that defines an
execution, and with nothing else. `test_pipeline` checks the same promise end to end."""

import hashlib
import os

import pytest

from cepaper.book import cache


def key(params=None):
    return cache.cache_key("lemma1", {"value": 2} if params is None else params)


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
    deps = cache.dependencies("import cepaper.fake\n")
    assert set(deps) == {"cepaper/__init__.py", "cepaper/fake.py", "cepaper/deep.py"}
    assert deps["cepaper/deep.py"] == repo / "cepaper" / "deep.py"
    before = key()
    (repo / "cepaper" / "deep.py").write_text("x = 2\n")
    assert key() != before, "a module imported through another is in the key"


def test_dependencies_include_the_packages_a_module_sits_in(repo):
    (repo / "cepaper" / "sub").mkdir()
    (repo / "cepaper" / "sub" / "__init__.py").write_text("# sub\n")
    (repo / "cepaper" / "sub" / "leaf.py").write_text("# leaf\n")
    deps = cache.dependencies("from cepaper.sub.leaf import thing\nimport numpy\nfrom os import path\n")
    assert set(deps) == {"cepaper/__init__.py", "cepaper/sub/__init__.py", "cepaper/sub/leaf.py"}
    assert list(deps) == sorted(deps)


def test_imports_outside_cepaper_are_not_followed():
    found = cache._cepaper_imports("import numpy\nimport cepaperish\nfrom . import x\nfrom cepaper.a import b\n")
    assert found == {"cepaper.a", "cepaper.a.b"}


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
    assert set(cache.dependencies("import numpy\n")) == {"cepaper/__init__.py"}, "cepaper itself, always"
    (repo / "cepaper" / "a" / "b").mkdir(parents=True)
    for rel in ("a/__init__.py", "a/b/__init__.py"):
        (repo / "cepaper" / rel).write_text("# package\n")
    deps = cache.dependencies("from cepaper.a.b import thing\n")
    assert set(deps) == {"cepaper/__init__.py", "cepaper/a/__init__.py", "cepaper/a/b/__init__.py"}
