"""Tests of cepaper.book.pages: tables without index columns or NaN cells, sources without machine paths."""

import pytest

import numpy as np
import pandas as pd

from cepaper import catalog
from cepaper.sections import imagenet
from cepaper.book import pages


def test_cells_read_as_on_a_page():
    assert [pages.cell(v) for v in (None, float("nan"), np.nan, np.float64("nan"))] == ["—"] * 4
    assert pages.cell(3) == "3" and pages.cell(np.int64(16074)) == "16074" and pages.cell(True) == "True"
    assert pages.cell(83.984375, 2) == "83.98" and pages.cell(4.20, 3) == "4.2" and pages.cell(1.0) == "1"
    assert pages.cell(-0.00001, 3) == "0" and pages.cell(float("inf")) == "∞" and pages.cell("not run") == "not run"


def test_show_hides_the_index_and_undefined_values():
    df = pd.DataFrame({"model": ["1x128d", "3x64d"], "top1_sem": [np.nan, 0.123456], "rho": [None, 3.27]}, index=[7, 8])
    html = pages.show(df, {"top1_sem": 2}).to_html()
    assert "nan" not in html.lower() and "None" not in html and html.count("—") == 2
    assert ">0.12<" in html and ">3.27<" in html and ">7<" not in html and ">8<" not in html


def test_sources_are_named_relative_to_the_data_root(tmp_path):
    assert (
        catalog.relative_source(f"{tmp_path}/cifar10_jpeg.npz (JPEG quality 75)", tmp_path)
        == "cifar10_jpeg.npz (JPEG quality 75)"
    )
    assert (
        catalog.relative_source(f"imagenet32 not found in {tmp_path}; download", tmp_path)
        == "imagenet32 not found in the data root; download"
    )
    status = imagenet.dataset_status(tmp_path)
    assert not status["source or reason"].str.contains(str(tmp_path)).any()
    assert status["source or reason"].str.contains("not found in the data root").all()


def test_anchors_are_the_ids_sphinx_gives_headings():
    assert pages.anchor("Var(Kₑ) against m") == "var-ke-against-m"
    assert pages.anchor("The law bends: the fit depends on the widths it sees") == (
        "the-law-bends-the-fit-depends-on-the-widths-it-sees"
    )
    assert pages.link("a < b", "x.html#y") == '<a href="x.html#y">a &lt; b</a>'
    assert pages.run_anchor("cpu-evidence", "theorem1_flow") == "run-cpu-evidence-theorem1-flow"


def test_page_href_prefers_the_page_at_scale(tmp_path, monkeypatch):
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    assert pages.page_href("lemma1", "Var(Kₑ) against m") == "01_lemma1.html#var-ke-against-m"
    (tmp_path / "cpu-evidence" / "lemma1").mkdir(parents=True)
    (tmp_path / "cpu-evidence" / "lemma1" / "notebook.ipynb").write_text("{}")
    assert pages.at_scale("lemma1") == "cpu-evidence"
    assert pages.page_href("lemma1") == "01_lemma1_scale.html"
    assert pages.page_href("lemma1", scale=False) == "01_lemma1.html"


def test_a_section_page_links_back_to_its_claims():
    from cepaper.book import render

    record = {
        "data": {
            "keys": ["lemma-1-var", "alpha-row"],
            "rows": [
                {"claim": "Lemma 1: Var ∝ 1/m; diagonal", "verdict": "reproduced", "evidence": ["lemma1", "h"]},
                {"claim": "α & co", "verdict": "differs", "evidence": ["alpha", None]},
            ],
        }
    }
    line = render.claims_banner("alpha", record)
    assert '<a href="00_claims.html#alpha-row">α &amp; co</a> (differs)' in line and "lemma" not in line
    assert "Lemma 1: Var ∝ 1/m</a> (reproduced)" in render.claims_banner("lemma1", record)
    assert render.claims_banner("cifar", record) is None and render.claims_banner("alpha", None) is None


def test_a_page_from_older_code_names_what_changed():
    from cepaper.book import render
    from cepaper.book.results import git_commit

    head = git_commit()
    if head is None:
        pytest.skip("not a git checkout")
    assert render.changed_since(head.split("+")[0], "lemma1") is not None
    changed = render.changed_since("HEAD~1", "lemma1")
    assert changed is not None and all(c.startswith(("cepaper/", "notebooks/01_lemma1", "profiles/")) for c in changed)
    assert render.changed_since("not-a-commit", "lemma1") is None
