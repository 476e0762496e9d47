"""The notebooks keep the book's conventions, and their stored results carry full provenance."""

import ast
import json

import jupytext
import pytest

from cepaper.book import pipeline, profiles, results

SECTIONS = results.book_sections()
PROVENANCE = {"section", "name", "profile", "params", "seed", "cepaper", "git_commit", "device", "wall_s", "date"}


def test_book_sections_are_known_result_sections():
    assert SECTIONS and set(SECTIONS) <= set(results.SECTIONS)


@pytest.mark.parametrize("section", SECTIONS)
def test_parameters_cell_is_the_quick_profile(section):
    defaults = profiles.notebook_parameters(profiles.notebook_path(section))
    assert ({"profile"} if section in profiles.SUMMARIES else {"profile", "seed", "device"}) <= set(defaults)
    assert defaults["profile"] == "quick"
    quick = profiles.load_profile("quick").get(section, {})
    assert {k: v for k, v in quick.items() if defaults[k] == v} == {}, "profiles/quick.yaml holds only what differs"
    assert profiles.resolve_parameters(section, "quick") == defaults, "the quick profile is the parameters cell"
    profiles.resolve_parameters(section, "paper")  # names and types of the paper profile are valid


@pytest.mark.parametrize("section", SECTIONS)
def test_a_list_parameter_with_no_elements_declares_their_type(section):
    """Issue: `theorem1 widths_a` and `cifar models` (default []) took any elements; a list whose
    default is empty declares its element type (``list[int]``), and elements are checked against it."""
    path = profiles.notebook_path(section)
    defaults, elements = profiles.notebook_parameters(path), profiles.notebook_element_types(path)
    empty = [name for name, v in defaults.items() if v == [] and name not in elements]
    assert not empty, f"{section}: declare the element type of {empty} (name: list[int] = [])"
    for name, kind in elements.items():
        wrong = 1 if kind is str else "x"
        with pytest.raises(ValueError, match=rf"parameter '{name}' of section {section} must be a list of .*element 0"):
            profiles.resolve_parameters(section, "quick", [(name, [wrong])])


@pytest.mark.parametrize("section, name, value", [("theorem1", "widths_a", ["8"]), ("cifar", "models", [37])])
def test_the_empty_lists_of_the_issue_check_their_elements(section, name, value):
    with pytest.raises(ValueError, match=rf"parameter '{name}' of section {section} must be a list of"):
        profiles.resolve_parameters(section, "quick", [(name, value)])


@pytest.mark.parametrize("section", SECTIONS)
def test_notebook_is_thin(section):
    nb = jupytext.read(profiles.notebook_path(section))
    assert nb.cells[0].cell_type == "markdown", "a notebook opens with its title and what it reproduces"
    for cell in nb.cells:
        if cell.cell_type == "code":
            defs = [
                n
                for n in ast.walk(ast.parse(cell.source))
                if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))
            ]
            assert not defs, f"{section}: define functions in cepaper, not in the notebook"


def quick_results():
    folder = results.REPO / "results" / "quick"
    return sorted(folder.glob("*/*.json")) if folder.exists() else []


@pytest.mark.skipif(not quick_results(), reason="no quick-profile results: run `make book` first")
@pytest.mark.parametrize("path", quick_results(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_stored_results_carry_provenance(path):
    record = json.loads(path.read_text())
    assert set(record) == {"data", "provenance"}
    prov = record["provenance"]
    assert PROVENANCE <= set(prov)
    assert prov["section"] == path.parent.name and prov["name"] == path.stem and prov["profile"] == "quick"
    assert prov["wall_s"] >= 0 and prov["date"][:2] == "20"


def checks_claims(section):
    """Whether a section's notebook checks claims of the paper (records checks with ``run.check``, itself or
    through its section module, which a thin notebook calls)."""
    module = results.REPO / "cepaper" / "sections" / f"{section}.py"
    return any("run.check(" in p.read_text() for p in (profiles.notebook_path(section), module) if p.exists())


def test_sections_that_check_claims_show_their_checks():
    checking = [s for s in SECTIONS if checks_claims(s)]
    assert {"lemma1", "theorem1", "alpha", "primal_dual"} <= set(checking)
    for section in checking:
        source = profiles.notebook_path(section).read_text()
        assert 'pages.checks(run.load("checks"))' in source, f"{section}: show the checks (pages.checks)"
        assert "# ## Checks" in source, f"{section}: the banner's link points at a heading `## Checks`"


@pytest.mark.parametrize("section", SECTIONS)
def test_the_quick_run_bears_out_every_check_of_the_paper(section):
    """The quick profile's checks of the paper's claims (``results/quick/<section>/checks.json``, written by
    ``run.check``) all hold: a run whose check does not hold publishes and says so on its page, and this
    test is where CI fails when the quick run stops reproducing the paper."""
    import nbformat

    folder = results.section_dir(section, "quick")
    if not (folder / pipeline.STORED).exists():
        pytest.skip(f"no quick run of {section}: run `make book` (or `cepaper run {section}`) first")
    path = folder / "checks.json"
    if not checks_claims(section):
        assert not path.exists() or not json.loads(path.read_text())["data"]["checks"]
        return
    params = nbformat.read(folder / pipeline.STORED, as_version=4).metadata["cepaper"]["params"]
    quick = profiles.resolve_parameters(section, "quick")
    other = {k: v for k, v in params.items() if quick.get(k) != v}
    if other:
        pytest.skip(f"results/quick/{section} ran with other parameters ({other}); `cepaper run {section}` reruns it")
    assert path.exists(), f"{section} checks claims, but its quick run stored no checks: run `cepaper run {section}`"
    failing = [f"{c['name']} ({c['detail']})" for c in json.loads(path.read_text())["data"]["checks"] if not c["holds"]]
    assert not failing, f"{section}, quick profile: checks that do not hold: {'; '.join(failing)}"


def executed_notebooks():
    folder = pipeline.BUILD / "executed" / "quick"
    return sorted(folder.glob("*.ipynb")) if folder.exists() else []


@pytest.mark.skipif(not executed_notebooks(), reason="no executed notebooks: run `make book` first")
@pytest.mark.parametrize("path", executed_notebooks(), ids=lambda p: p.stem)
def test_executed_notebook_has_figures_and_no_errors(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "cepaper-figure" in o.get("data", {}).get("text/html", "")]
    assert figures, "a section shows its figures, captioned (cepaper.book.pages.figure)"
    bare = [o for o in outputs if "image/png" in o.get("data", {})]
    assert not bare, f"{len(bare)} figures shown without a caption (or twice): show them with pages.figure"
    texts = [
        o.get("data", {}).get("text/plain", "") + o.get("text", "")
        for o in outputs
        if not {"image/png", "text/html", "text/markdown"} & set(o.get("data", {}))
    ]
    leaks = [t[:80] for t in texts if "staging" in t or t.startswith(("PosixPath(", "<Figure size", "Text("))]
    assert not leaks, f"plumbing values shown on the page: {leaks}"


@pytest.mark.parametrize("profile", profiles.profile_names())
def test_mnist_models_of_every_profile_carry_fig3_alpha(profile):
    """Sec. 4.1 runs with the alpha that reproduces Fig. 3 (not an Algorithm 1 fit of the MLP), so the
    dual's smallest width carries several times the baseline's parameters, as in the paper."""
    from cepaper.sections import mnist as mnist_section
    from cepaper.sections import primal_dual

    p = profiles.resolve_parameters("mnist", profile)
    assert p["alpha"] is None, f"profile {profile} must leave mnist's alpha to Fig. 3's"
    alpha, source = primal_dual.fig3_alpha()
    assert 3.616 <= alpha <= 3.653 and "Fig. 3" in source
    configs = mnist_section.models(
        p["primal_ns"],
        p["dual_ns"],
        p["n_tilde"],
        alpha,
        mnist_section.member(inputs=784, depth=p["depth"], classes=10, bias=p["bias"]),
    )
    dual = configs[configs.curve == "dual"].sort_values("n")
    assert dual.params_ratio.iloc[0] > 3, dual[["n", "m", "params_ratio"]]
