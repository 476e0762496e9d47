"""Checks of the paper's claims: a run records them (``Run.check``, saved atomically as ``checks.json``),
a check that does not hold ends nothing, and the page says at its top whether they hold."""

import json
import os

import nbformat
import numpy as np
import pandas as pd
import pytest

from cepaper.book import pages, render, results


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    return results.Run("lemma1", "quick", params={"level": 0.01}, seed=0)


def saved(run):
    return json.loads((run.dir / "checks.json").read_text())


def test_a_check_is_saved_with_its_verdict_and_provenance(run):
    assert run.check("slope interval contains -1", np.bool_(False), "[-1.052, -1.050]") is None
    run.check("NMK within 5 SE", True, "largest |z| 2.7")
    record = saved(run)
    assert record["data"] == {
        "checks": [
            {"name": "slope interval contains -1", "holds": False, "detail": "[-1.052, -1.050]"},
            {"name": "NMK within 5 SE", "holds": True, "detail": "largest |z| 2.7"},
        ]
    }
    prov = record["provenance"]
    assert prov["name"] == "checks" and prov["section"] == "lemma1" and prov["params"] == {"level": 0.01}
    assert run.load("checks") == record["data"] == results.load("lemma1", "quick", "checks")["data"]


def test_a_check_made_again_replaces_the_first_in_place(run):
    run.check("a", False)
    run.check("b", True)
    run.check("a", True, "again")
    assert [(c["name"], c["holds"], c["detail"]) for c in saved(run)["data"]["checks"]] == [
        ("a", True, "again"),
        ("b", True, ""),
    ]


@pytest.mark.parametrize("holds", [1, None, "yes", np.array([True, False])])
def test_a_check_holds_or_not_nothing_else(run, holds):
    with pytest.raises(TypeError, match="holds must be True or False"):
        run.check("x", holds)
    assert not (run.dir / "checks.json").exists()


def test_a_check_needs_a_name(run):
    with pytest.raises(ValueError, match="non-empty string"):
        run.check(" ", True)


def test_checks_are_written_atomically(run, monkeypatch):
    """A write cut short (here: the rename that puts the file in place fails) leaves the checks saved
    before it whole, and no temporary file beside them."""
    run.check("first", True, "kept")
    before = (run.dir / "checks.json").read_text()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        run.check("second", False)
    monkeypatch.undo()
    assert (run.dir / "checks.json").read_text() == before
    assert sorted(p.name for p in run.dir.iterdir()) == ["checks.json"]


def test_the_checks_table_reads_as_a_page_table():
    checks = [
        {"name": "K_e < 5 SE & more", "holds": False, "detail": "z = 7"},
        {"name": "b", "holds": True, "detail": ""},
    ]
    html = pages.checks({"checks": checks}).to_html()
    assert "✗" in pages.checks(checks).to_html()
    assert "check of the paper" in html and "what this run measured" in html
    assert "K_e &lt; 5 SE &amp; more" in html and "✗" in html and "✓" in html


# ------------------------------------------------------------------------------ the banner at the top


def record(*checks):
    return {"data": {"checks": [{"name": n, "holds": h, "detail": d} for n, h, d in checks]}}


def test_the_banner_says_all_checks_hold():
    line = render.checks_banner(record(("a", True, "x"), ("b", True, "")))
    assert line.startswith("✓ **All 2 checks of the paper's claims hold**")


def test_the_banner_names_the_checks_that_do_not_hold_with_what_was_measured():
    line = render.checks_banner(
        record(
            ("Var(K_e) falls as 1/m: the slope's 1% interval contains -1", False, "interval [-1.052, -1.050]"),
            ("NMK within 5 SE of K_inf", True, "largest |z| 2.7"),
            ("K_e*m", False, ""),
        )
    )
    assert line.startswith("✗ **2 of 3 checks of the paper's claims do not hold on this run:**")
    assert "contains -1 (interval \\[-1.052, -1.050\\])" in line
    assert "K\\_e\\*m." in line and "K\\_inf" not in line  # markdown punctuation escaped; passing checks not listed


def test_no_checks_no_banner():
    assert render.checks_banner(None) is None and render.checks_banner(record()) is None


def notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lemma 1\n\nIntro prose.\n\nMore prose."),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("## Checks"),
    ]
    return nb


def test_the_banner_goes_right_under_the_title(run):
    run.check("slope interval contains -1", False, "[-1.052, -1.050]")
    page = render.with_checks(notebook(), "lemma1", "quick")
    sources = [c.source for c in page.cells]
    assert sources[0] == "# Lemma 1"
    assert sources[1].startswith("✗ **1 of 1 checks of the paper's claims do not hold on this run:**")
    assert sources[2] == "Intro prose.\n\nMore prose." and sources[3:] == ["x = 1", "## Checks"]
    nbformat.validate(page)
    # later banners (at scale, back-links) sit below the title's cell; the checks banner, added last, stays on top
    scale = render._with_banner(nbformat.from_dict(notebook()), "**At the paper's scale**", "at scale (paper)")
    page = render.with_checks(scale, "lemma1", "quick")
    assert [c.source.split("\n")[0] for c in page.cells[:4]] == [
        "# Lemma 1 — at scale (paper)",
        page.cells[1].source.split("\n")[0],
        "Intro prose.",
        "**At the paper's scale**",
    ]
    assert page.cells[1].source.startswith("✗")


@pytest.mark.parametrize("minor", [4, 5])
def test_a_page_with_banners_is_valid_with_an_id_per_cell(run, minor):
    """A run stored as nbformat 4.4 (no cell ids) or 4.5: the page with its banners is 4.5, each cell
    with an id of its own, and writing it leaves nbformat nothing to repair or warn about."""
    import warnings

    run.check("slope interval contains -1", False, "[-1.052, -1.050]")
    stored = notebook()
    stored.nbformat_minor = minor
    if minor == 4:
        for cell in stored.cells:
            del cell["id"]
        nbformat.validate(stored)
    else:
        stored.cells[1]["id"] = stored.cells[0]["id"]  # a repeated id is given a new one too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = render.with_checks(render._with_banner(stored, "**At scale**", "at scale (paper)"), "lemma1", "quick")
        nbformat.validate(page)
        nbformat.writes(page)
    ids = [c["id"] for c in page.cells]
    assert page.nbformat_minor == 5 and len(set(ids)) == len(ids) == 6, ids


def test_a_run_without_checks_gets_no_banner(tmp_path, monkeypatch):
    """A committed run made before runs stored their checks: the page is left as it is."""
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    nb = notebook()
    assert render.with_checks(nb, "lemma1", "paper") is nb


# ------------------------------------------------------------------------------ the sections' checks


def test_lemma1_checks_report_an_interval_that_excludes_minus_one():
    from cepaper.sections import lemma1

    g, widths = 3, [8, 64]
    fit = lambda lo, hi: {"slope": (lo + hi) / 2, "lo": lo, "hi": hi, "level": 0.01}
    nmk = {
        "widths": widths,
        "n": 64,
        "n_wide": 64,
        "draws": [100, 100],
        "mean": np.ones((2, 2 * g)),
        "mean_se": np.full((2, 2 * g), 0.1),
        "std": np.ones((2, 2 * g)),
        "kinf": np.ones(2 * g),
    }
    ens = {"gamma": np.zeros(g), "m": [1, 2, 3, 4], "diag": np.ones((4, g)), "off": np.ones((4, g))}
    out = lemma1.checks({"fit_diag": fit(-1.052, -1.050), "fit_off": fit(-1.1, -0.9)}, nmk, ens, 5.0)
    assert [holds for _, holds, _ in out] == [False, True, True, True, True]
    name, _, detail = out[0]
    assert "1% interval contains -1" in name and "[-1.052, -1.050]" in detail
    assert all(isinstance(h, bool) for _, h, _ in out)
    nmk["mean"] = nmk["mean"] + 0.6 * np.eye(2, 2 * g)  # 6 SE off at one entry of the narrow width
    assert [holds for _, holds, _ in lemma1.checks({"fit_diag": fit(-2, 0), "fit_off": fit(-2, 0)}, nmk, ens, 5.0)][
        2:4
    ] == [False, True]


def test_theorem1_checks_the_sign_of_the_slope_not_its_value():
    from cepaper.sections import theorem1

    fits = pd.DataFrame(
        [
            dict(fit="all", entry="offdiag_mean", value="abs_change", slope=-0.5, lo=-0.7, hi=-0.3, points=12),
            dict(fit="all", entry="diag_mean", value="abs_change", slope=-0.1, lo=-0.4, hi=0.2, points=12),
        ]
    )
    assert [h for _, h, _ in theorem1.checks(fits)] == [True, False]


def test_mnist_checks_the_spread_of_the_primal_variances():
    from cepaper.sections import mnist

    models = pd.DataFrame({"curve": ["primal", "primal", "dual"], "var": [1.0, 1.5, 10.0]})
    [(name, holds, detail)] = mnist.checks(models)
    assert not holds and "1.5×" in detail


def test_the_paper_numbers_of_primal_dual_hold_at_the_paper_alpha():
    from cepaper.sections import primal_dual, primal_dual_checks

    out = primal_dual_checks.printed_numbers(primal_dual.printed_rows())
    assert [h for _, h, _ in out] == [True, True, True], out
    block = primal_dual.block_curves_data()
    out = primal_dual_checks.resnext_block(
        block, primal_dual.block_convention_rows(), primal_dual.flops_convention_rows()
    )
    assert all(h for _, h, _ in out), [c for c in out if not c[1]]
    other = primal_dual.block_curves_data(alpha=3.0)
    assert not primal_dual_checks.resnext_block(
        other, primal_dual.block_convention_rows(3.0), primal_dual.flops_convention_rows(3.0)
    )[0][1]


def test_the_book_says_at_the_top_of_both_pages_whether_the_checks_hold(repo, monkeypatch):
    """`render.book` (without executing or building): the quick page says under its title that a check
    does not hold; the page at scale says nothing while its committed run stored no checks, then says
    they hold once it has."""
    from cepaper.book import pipeline

    record = {
        "section": "lemma1",
        "profile": "quick",
        "notebook": "notebooks/01_lemma1.py",
        "params": {"level": 0.01},
        "wall_s": 1.0,
        "device": "cpu",
        "date": "2024-01-01T00:00:00+00:00",
        "git_commit": None,
        "cached": True,
    }
    page = lambda: nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# A tiny section\n\nProse."), nbformat.v4.new_code_cell("x = 1")]
    )
    executed = pipeline.executed_path("lemma1", "quick")
    executed.parent.mkdir(parents=True)
    nbformat.write(page(), executed)
    committed = page()
    committed.metadata["cepaper"] = {**record, "profile": "paper"}
    results.section_dir("lemma1", "paper").mkdir(parents=True)
    nbformat.write(committed, results.section_dir("lemma1", "paper") / "notebook.ipynb")
    results.Run("lemma1", "quick").check("slope interval contains -1", False, "[-1.052, -1.050]")
    monkeypatch.setattr(render, "run", lambda *a, **k: [record])
    monkeypatch.setattr(render, "vendor_mathjax", lambda: None)
    monkeypatch.setattr(render, "run_child", lambda *a, **k: 0)
    read = lambda name: [c.source for c in nbformat.read(render.SECTIONS_DIR / name, as_version=4).cells]

    render.book("quick")
    quick, scale = read("01_lemma1.ipynb"), read("01_lemma1_scale.ipynb")
    assert quick[0] == "# A tiny section"
    assert quick[1].startswith("✗ **1 of 1 checks of the paper's claims do not hold on this run:** slope interval")
    assert quick[2] == "Prose." and quick[3].startswith("**Results at scale:**")
    assert not [s for s in scale if "checks of the paper's claims" in s]

    results.Run("lemma1", "paper").check("slope interval contains -1", True, "[-1.01, -0.99]")
    render.book("quick")
    scale = read("01_lemma1_scale.ipynb")
    assert scale[0] == "# A tiny section — at scale (paper)"
    assert scale[1].startswith("✓ **All 1 checks of the paper's claims hold**")
    assert scale[2] == "Prose." and scale[3].startswith("**At the paper's scale**")


def test_a_damaged_checks_file_is_said_on_the_page_not_a_crash(run):
    run.check("slope interval contains -1", True, "[-1.05, -0.98]")
    (run.dir / "checks.json").write_text('{"data": ')  # cut short
    page = render.with_checks(notebook(), "lemma1", "quick")
    assert page.cells[1].source.startswith("⚠ **The run's checks cannot be read**: results file ")
    assert "checks.json is damaged" in page.cells[1].source
