"""Tests of cepaper.book.pages: tables without index columns or NaN cells, sources without machine paths."""

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
