"""The three layers, read from the import graph of the tree: the library (``cepaper``), the paper's
sections (``cepaper.sections``) and the book's machinery (``cepaper.book``)."""

import ast
import graphlib
from pathlib import Path

import pytest
import yaml

import cepaper
from cepaper import runs

PACKAGE = Path(cepaper.__file__).parent
REPO = PACKAGE.parent


def layer(module):
    """``library``, ``sections``, ``book`` or ``cli`` of a dotted cepaper module name."""
    parts = module.split(".")
    if parts[1:2] in (["sections"], ["book"]):
        return parts[1]
    return "cli" if parts[1:2] in (["cli"], ["__main__"]) else "library"


def modules():
    """``{dotted name: path}`` of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def edges():
    """``(module, module it imports)`` over the package (:func:`cepaper.runs.imports`)."""
    return {(name, dep) for name, path in modules().items() for dep in runs.imports(path.read_text()) if dep != name}


@pytest.mark.parametrize("low, high", [("library", "sections"), ("library", "book"), ("book", "sections")])
def test_no_layer_imports_a_layer_above_it(low, high):
    """The library imports neither the sections nor the book's machinery, and the machinery (store,
    pipeline, pages) knows no section: sections read the store and the notebooks use all three; the
    CLI is the one module that imports from every layer."""
    bad = sorted((a, b) for a, b in edges() if layer(a) == low and layer(b) == high)
    assert bad == [], bad


def test_the_check_sees_a_leak(tmp_path, monkeypatch):
    """The graph has power: a library module that imports the results store is a leak it reports."""
    (tmp_path / "cepaper").mkdir()
    leak = tmp_path / "cepaper" / "leak.py"
    leak.write_text("def f():\n    from cepaper.book import results\n")
    assert runs.imports(leak.read_text()) == {"cepaper.book.results"} and layer("cepaper.leak") == "library"


def circle(pairs):
    """A circle of imports among ``pairs`` (``(importer, imported)``) as a list of names, or ``None``."""
    graph = {}
    for a, b in pairs:
        graph.setdefault(a, set()).add(b)
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def unit(module):
    """What a floor of the house holds: a library package (``cepaper.alpha``, ``cepaper.search``, ...) as
    one unit, any other module as itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if layer(module) == "library" and len(parts) > 2 else module


def test_no_circle_of_imports():
    """No two modules import each other, directly or around a circle (function-local imports count), and
    no two library packages do either: Algorithm 2 (``search``) may use Algorithm 1 (``alpha``) or the
    other way round, never both, so that each can be read with only what lies below it."""
    assert circle(edges()) is None
    units = {(unit(a), unit(b)) for a, b in edges() if unit(a) != unit(b) and "cepaper" not in (a, b)}
    assert circle(units) is None
    assert circle([("cepaper.a", "cepaper.b"), ("cepaper.b", "cepaper.c"), ("cepaper.c", "cepaper.a")])


def test_the_library_needs_no_training_code():
    """Seeds, checkpoints and the run cache are the library's own (:mod:`cepaper.runs`): no library
    module outside ``cepaper.training`` imports it (the loops and launchers), so Algorithm 1's sweeps
    need neither torchrun nor submitit."""
    training = lambda m: m == "cepaper.training" or m.startswith("cepaper.training.")
    bad = sorted((a, b) for a, b in edges() if layer(a) == "library" and not training(a) and training(b))
    assert bad == [], bad


def test_dependencies_are_the_imports_followed_to_the_end():
    """The one walk (:func:`cepaper.runs.dependencies`) that the book's cache key, the run cache's stale
    check and this layout test use: a grid's runs depend on the loaders and ranks it imports through
    the loop, and on the packages above them."""
    deps = runs.dependencies(("cepaper.training.grids",))
    assert {
        "cepaper/__init__.py",
        "cepaper/training/__init__.py",
        "cepaper/training/grids.py",
        "cepaper/training/sgd.py",
        "cepaper/training/loaders.py",
        "cepaper/training/distributed.py",
        "cepaper/models/resnext.py",
        "cepaper/runs.py",
    } <= set(deps)
    assert "cepaper/book/cache.py" not in deps and "cepaper/sections/cifar.py" not in deps


def test_one_section_module_per_notebook():
    """Every notebook has its section module; a section module is a notebook's, a notebook's checks of the
    paper's claims where its module would be too long (``<section>_checks``), or a part of the claims
    page's (``claims_<part>``: its rule, the method's rows, the design's and training's rows). A private
    module (``_shared``, ``_<section>_page``) is a part of the sections no notebook imports (the next test)."""
    notebooks = sorted(p.stem.split("_", 1)[1] for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    stems = [p.stem for p in (PACKAGE / "sections").glob("*.py") if not p.stem.startswith("_") and p.stem != "paper"]
    checks = [s for s in stems if s.endswith("_checks")]
    assert {s.removesuffix("_checks") for s in checks} <= set(notebooks), checks
    assert sorted(s for s in stems if not s.startswith("claims_") and s not in checks) == notebooks
    assert sorted(s for s in stems if s.startswith("claims_")) == ["claims_design", "claims_rule", "claims_theory"]


#: What a notebook may import: its own section module, the paper's numbers and the results store (issue 23).
NOTEBOOK_IMPORTS = ("cepaper.sections.paper", "cepaper.book.results", "cepaper.book.pages")


def notebook_imports(path):
    """Every module a notebook imports, as ``package.name`` for ``from package import name``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def foreign_imports(path):
    """What notebook ``path`` (``notebooks/NN_<section>.py``) imports besides :data:`NOTEBOOK_IMPORTS` and
    ``cepaper.sections.<section>``: loops, set-up and the library belong in the section module."""
    own = "cepaper.sections." + path.stem.split("_", 1)[1]
    return sorted(notebook_imports(path) - {own, *NOTEBOOK_IMPORTS})


def test_a_notebook_imports_only_its_section_paper_and_the_store():
    """Issue 23: loops, set-up and the sentences whose words depend on the results live in the section module;
    a notebook imports nothing else (no library module, no pandas, torch, numpy, IPython or warnings)."""
    fat = {p.stem: foreign_imports(p) for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))}
    assert fat and {k: v for k, v in fat.items() if v} == {}


def test_the_notebook_rule_sees_a_library_import(tmp_path):
    """The rule has teeth: a notebook that imports the library, pandas or another section is caught; its own
    section, ``paper`` and the store are not."""
    nb = tmp_path / "05_mnist.py"
    nb.write_text(
        "from cepaper.book import pages, results\nfrom cepaper.sections import mnist as section\n"
        "from cepaper.sections import paper, primal_dual\nimport pandas as pd\nfrom cepaper.training import adam\n"
    )
    assert foreign_imports(nb) == ["cepaper.sections.primal_dual", "cepaper.training.adam", "pandas"]


def test_the_section_list_is_the_table_of_contents():
    from cepaper.book import results

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    listed = [Path(f).name.split("_", 1)[1] for f in files if Path(f).name[:2].isdigit()]
    assert list(results.SECTIONS) == listed


def test_no_module_is_much_over_450_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in modules().values()}
    assert {k: v for k, v in sizes.items() if v > 470} == {}


def test_the_package_exports_its_api():
    for name in cepaper.__all__:
        assert callable(getattr(cepaper, name)) or name == "complexity", name
    assert {
        "empirical_ntk",
        "CollegialMLP",
        "relu_ntk",
        "mc_moments",
        "measure_alpha",
        "design",
        "load",
        "complexity",
    } <= set(cepaper.__all__)


def test_the_readme_layout_names_every_module():
    """README's layout table names every module of each layer, and nothing that is not in the tree."""
    import re

    text = (REPO / "README.md").read_text()
    table = text[text.index("## Layout") : text.index("## Data")]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)`[^|]*\| (.*) \|$", table, re.M)}
    for folder in (
        "cepaper/",
        "cepaper/alpha/",
        "cepaper/search/",
        "cepaper/models/",
        "cepaper/training/",
        "cepaper/sections/",
        "cepaper/book/",
        "cepaper/cli/",
    ):
        named = set(re.findall(r"`(\w+)/?`", rows[folder]))
        have = {p.stem for p in (REPO / folder).glob("*.py") if not p.stem.startswith("_")}
        # backticked words that are no module (a function such as `design`) are prose, not a claim
        named = {n for n in named if (REPO / folder / f"{n}.py").exists() or (REPO / folder / n).is_dir()}
        if folder == "cepaper/":
            have |= {"alpha", "search", "models"}
        assert named == have, (folder, sorted(named ^ have))


def test_the_public_api_has_type_hints():
    """Every argument of every exported function (and class constructor) is annotated, and so is what it returns."""
    import inspect
    import typing

    for name in cepaper.__all__:
        obj = getattr(cepaper, name)
        if inspect.ismodule(obj):
            continue
        fn = obj.__init__ if inspect.isclass(obj) else obj
        hints = typing.get_type_hints(fn)
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        unannotated = [p for p in params if p not in hints]
        assert unannotated == [], (name, unannotated)
        assert "return" in hints, name


def test_an_installed_package_knows_the_sections_without_the_table_of_contents(tmp_path, monkeypatch):
    """Outside a checkout (no _toc.yml where the results go) the sections are read from cepaper/sections/:
    the same as the book's."""
    from cepaper.book import results

    monkeypatch.setattr(results, "REPO", tmp_path)
    assert sorted(results.known_sections()) == sorted(results.SECTIONS)
    with pytest.raises(FileNotFoundError, match="need a checkout of the repository"):
        results.book_sections()


def top_level_defs(path):
    """Names of the functions and classes defined at the top level of a module."""
    tree = ast.parse(path.read_text())
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def test_one_definition_of_the_shared_helpers():
    """Issue 23 item 2: one ``curve`` (Algorithm 2's, any budget a member counts), one ``readout_vector``, one
    choice check: each defined by one module of the package."""
    homes = {}
    for name, path in modules().items():
        for d in top_level_defs(path):
            homes.setdefault(d, []).append(name)
    for helper, home in (
        ("curve", "cepaper.search.equations"),
        ("readout_vector", "cepaper.ntk"),
        ("choice", "cepaper._checks"),
        ("choices", "cepaper._checks"),
    ):
        assert homes.get(helper) == [home], (helper, homes.get(helper))
    assert "_choice" not in homes, homes.get("_choice")


def private_imports(path, name, known):
    """``(line, what)`` of each private name (``_x``, not ``__x__``) of another cepaper module that the module
    ``name`` at ``path`` uses: ``from cepaper.X import _x``, or ``X._x`` with ``X`` a cepaper module it imported;
    ``known``: the dotted names of the package's modules."""
    tree = ast.parse(path.read_text())
    private = lambda a: a.startswith("_") and not a.startswith("__")
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cepaper"):
            for a in node.names:
                if f"{node.module}.{a.name}" in known:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif private(a.name) and node.module != name:
                    found.append((node.lineno, f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names if a.name.startswith("cepaper") and a.asname}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and private(node.attr):
            module = aliases.get(node.value.id)
            if module is not None and module != name:
                found.append((node.lineno, f"{module}.{node.attr}"))
    return sorted(found)


def test_no_module_uses_another_modules_private_name(tmp_path):
    """Issue 23 item 2: a name used across modules is public; a private one (``_x``) stays in its module."""
    known = modules()
    bad = {name: private_imports(path, name, known) for name, path in known.items()}
    assert {k: v for k, v in bad.items() if v} == {}
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from cepaper.files import _planted, write_atomic\nfrom cepaper.search import factories as f\n"
        "from cepaper import _checks\n\ndef g():\n    return f._planted(), f.build, _checks.choice\n"
    )
    assert private_imports(planted, "cepaper.planted", known) == [
        (1, "cepaper.files._planted"),
        (6, "cepaper.search.factories._planted"),
    ]
