"""Tests of cepaper.book.pages: tables without index columns or NaN cells, sources without machine paths."""

import numpy as np
import pandas as pd
import pytest

from cepaper import catalog
from cepaper.book import pages
from cepaper.sections import imagenet


def test_cells_read_as_on_a_page():
    assert [pages.cell(v) for v in (None, float("nan"), np.nan, np.float64("nan"))] == ["—"] * 4
    assert pages.cell(3) == "3" and pages.cell(np.int64(16074)) == "16074" and pages.cell(True) == "✓"
    assert pages.cell(83.984375, 2) == "83.98" and pages.cell(4.20, 3) == "4.2" and pages.cell(1.0) == "1"
    assert pages.cell(-0.00001, 3) == "0" and pages.cell(float("inf")) == "∞" and pages.cell("not run") == "not run"


def test_reals_read_to_three_significant_figures_and_booleans_as_marks():
    assert [pages.cell(v) for v in (0.123456, 12.3456, 4503.9, 25028904.0, 0.000012345, 99.96)] == [
        "0.123",
        "12.3",
        "4504",
        "25028904",
        "1.23e-05",
        "100",
    ]
    assert [pages.cell(v) for v in (False, np.True_, np.False_)] == ["✗", "✓", "✗"]
    assert pages.cell(0.123456, 4) == "0.1235", "an explicit number of decimals still wins"


def test_headers_read_in_words():
    df = pd.DataFrame({"config_paper_alpha": ["37x10d"], "wall_s": [4503.9], "ok": [True]})
    html = pages.show(df, headers={"wall_s": "time (s)"}).to_html()
    assert ">time (s)<" in html and ">config_paper_alpha<" not in html and ">wall_s<" not in html
    assert ">4504<" in html and ">✓<" in html and ">True<" not in html


def test_long_names_can_wrap_in_a_cell():
    link = '<a href="03_alpha_scale.html#fig-8-the-bottleneck-block">alpha_page_at_scale</a>'
    html = pages.show([{"factory": "cepaper.sections.design:mixer_channel_block", "page": link}]).to_html()
    assert "design:<wbr>mixer_<wbr>channel_<wbr>block" in html and link in html, "a link in a cell stays a link"


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


def _shown(monkeypatch):
    """What ``pages.figure`` displays, collected instead of shown."""
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    monkeypatch.setattr(pages, "_number", __import__("itertools").count(1))
    return shown


def test_a_figure_is_shown_once_numbered_captioned_and_closed(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = _shown(monkeypatch)

    class Run:  # the two attributes of a results.Run a caption reads
        profile = "quick"

        def where(self):
            return "results/quick/lemma1/"

    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    assert pages.figure(fig, "K against m", paper="2(a)", run=Run()) is None
    _, axes = plt.subplots(1, 2)
    pages.figure(axes, "second, from an array of axes.")
    assert plt.get_fignums() == [], "the inline backend must have nothing left to show again"
    first, second = (s.data for s in shown)
    caption = "Figure 1. Fig. 2(a) of the paper: K against m. At the quick profile"
    assert first.count("<img ") == 1 and f'alt="{caption}' in first and "data:image/png;base64," in first
    assert "<figcaption><strong>Figure 1.</strong> Fig. 2(a) of the paper: K against m. At the quick" in first
    assert "from the run in results/quick/lemma1/." in first
    assert 'alt="Figure 2. second, from an array of axes."' in second


def test_overlapping_tick_labels_are_thinned():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_xscale("log")
    ax.set_xlim(10, 3000)
    ax.set_xticks([16, 36, 128, 200, 400, 576, 1300], ["16", "36", "128", "200", "400", "576", "1300"])
    assert pages.thin_tick_labels(fig) >= 1
    shown = [t.label1.get_text() for t in ax.xaxis.get_major_ticks() if t.label1.get_visible()]
    assert "16" in shown and not {"400", "576"} <= set(shown)
    plt.close(fig)


def test_a_committed_notebook_shows_each_figure_once_with_a_caption():
    import base64

    import nbformat

    from cepaper.book import render

    png = base64.b64encode(b"\x89PNG not really").decode()
    fig = {"image/png": png, "text/plain": "<Figure size 100x100 with 1 Axes>"}
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\n## Fig. 8: the *bottleneck* block"),
        nbformat.v4.new_code_cell(
            "plot()",
            outputs=[
                nbformat.v4.new_output("execute_result", data=fig, execution_count=1),
                nbformat.v4.new_output("display_data", data=fig),
                nbformat.v4.new_output("execute_result", data={"text/plain": "<Axes: title={'center': 'x'}>"}),
            ],
        ),
    ]
    out = render.caption_figures(nb, "paper", "results/paper/alpha/").cells[1].outputs
    assert len(out) == 1 and out[0].output_type == "display_data"
    html = out[0].data["text/html"]
    assert 'alt="Figure 1. Fig. 8: the bottleneck block. At the paper' in html
    assert "from the run in results/paper/alpha/." in html and html.count("<img ") == 1


def test_durations_read_in_their_unit_on_the_runs_page():
    from cepaper.book import render

    assert [pages.duration(s) for s in (4.47, 1575.9, 4503.9, None)] == ["4.5 s", "26.3 min", "1.25 h", "—"]
    record = dict(
        section="mnist", notebook="notebooks/05_mnist.py", profile="cpu-evidence", device="cpu", wall_s=4503.9
    )
    record.update(date="2026-12-01", git_commit="b0bee1d6c4d3aa", params={})
    page = render.runs_page([record])
    assert (
        "| `05_mnist.py` |" in page
        and "| 1.25\xa0h | 2026-12-01 |" in page
        and "Total execution time: 1.25 h." in page
        and "4503.9" not in page
    )


def test_committed_tables_read_as_tables_do_now():
    import nbformat

    from cepaper.book import render

    old = (
        '<table><thead><tr><th class="col_heading level0 col0" >config_paper_alpha</th><th class="x" >match</th>'
        '</tr></thead><tbody><tr><td class="data" >cepaper.sections.design:mixer_channel_block</td>'
        '<td class="data" >True</td></tr></tbody></table>'
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("t", outputs=[nbformat.v4.new_output("display_data", {"text/html": old})])]
    html = render.readable_tables(nb).cells[0].outputs[0].data["text/html"]
    assert ">optimum at the paper's α</th>" in html and ">✓</td>" in html and "design:<wbr>mixer_<wbr>channel" in html


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
