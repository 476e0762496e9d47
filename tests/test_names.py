"""Every dotted ``cepaper.…`` name that a reader meets resolves: in README.md, in the notebooks, and in
the docstrings' cross-references (``:func:`cepaper.…```, ``:class:``, ``:mod:``, ``:data:``, ``:meth:``)."""

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAME = re.compile(r"(?<![\w/.])~?(cepaper(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def resolves(dotted):
    """Import the longest module prefix of ``dotted`` and follow the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def names_in(path):
    return {m.rstrip(".") for m in NAME.findall(path.read_text())} - {"cepaper.__main__"}


def sources():
    yield REPO / "README.md"
    yield from sorted((REPO / "notebooks").glob("*.py"))
    yield from sorted((REPO / "cepaper").rglob("*.py"))
    yield from sorted((REPO / "book").glob("*.md"))
    yield from sorted((REPO / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(REPO)))
def test_every_dotted_name_resolves(path):
    missing = sorted(n for n in names_in(path) if not resolves(n))
    assert missing == [], f"{path.relative_to(REPO)} names what does not exist: {missing}"


def test_the_check_sees_a_wrong_name(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Use `cepaper.search.desing` or :func:`~cepaper.alpha.fit.fit_alpha`.\n")
    assert names_in(page) == {"cepaper.search.desing", "cepaper.alpha.fit.fit_alpha"}
    assert not resolves("cepaper.search.desing") and resolves("cepaper.alpha.fit.fit_alpha")


ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc):`~?([A-Za-z_][\w.]*)`")
OUTSIDE = ("torch.", "np.", "numpy.", "scipy.", "pandas.", "pd.", "matplotlib.", "submitit.", "papermill.")


def module_of(path):
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = sorted(p for p in (REPO / "cepaper").rglob("*.py") if p.name != "__main__.py")  # importing it runs the CLI


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_docstring_reference_resolves(path):
    """A cross-reference resolves in its module, as a ``cepaper.`` name, or names another library."""
    module = module_of(path)
    missing = []
    for target in set(ROLE.findall(path.read_text())):
        if target.startswith(OUTSIDE) or target in ("float", "int", "str", "list", "dict", "tuple", "bool"):
            continue
        if not (resolves(f"{module}.{target}") or resolves(target) or resolves(f"cepaper.{target}")):
            missing.append(target)
    assert sorted(missing) == [], f"{module} refers to what does not exist: {sorted(missing)}"


def test_the_api_page_documents_the_public_api():
    """book/api.md has an autodoc entry for every name cepaper exports (a module: its main function)."""
    import cepaper

    page = (REPO / "book" / "api.md").read_text()
    documented = set(re.findall(r"\.\. auto(?:function|class):: ([\w.]+)", page))
    assert all(resolves(name) for name in documented)
    short = {name.rsplit(".", 1)[1] for name in documented}
    assert set(cepaper.__all__) <= short, sorted(set(cepaper.__all__) - short)
