"""Tests of cepaper.sections.lemma1's page: the width study's table and sentence, read from a saved ``nmk``."""

import pytest

from cepaper.sections import lemma1

#: A saved ``nmk`` of G = 2 angles at widths 8 and 64: entries are the 2 diagonal, then the 2 off-diagonal.
NMK = dict(
    gamma=[-1.0, 1.0],
    widths=[8, 64],
    draws=[100, 50],
    n=8,
    kinf=[2.0, 2.0, 1.0, 0.5],
    mean=[[2.1, 1.8, 1.2, 0.5], [2.0, 2.0, 1.0, 0.45]],
    mean_se=[[0.1, 0.1, 0.1, 0.05], [0.2, 0.2, 0.2, 0.1]],
    c=[0.0, 0.0, 0.4, -0.9],
    c_se=[0.1, 0.1, 0.1, 0.2],
)


def test_nmk_rows_are_the_largest_z_and_deviations_per_width():
    first, wide = lemma1.nmk_rows(NMK)
    assert (first["n"], first["draws"], wide["n"]) == (8, 100, 64)
    assert first["max_z_diag"] == pytest.approx(2.0) and first["max_z_off"] == pytest.approx(2.0)
    assert first["max_dev_off"] == pytest.approx(0.1) and first["se_off"] == pytest.approx(0.05)
    assert wide["max_z_diag"] == pytest.approx(0.0) and wide["max_z_off"] == pytest.approx(0.5)


def test_width_sentence_names_the_largest_off_diagonal_coefficient():
    text = lemma1.width_sentence(NMK).data
    assert text.startswith("Largest off-diagonal coefficient: c = -0.900 ± 0.200 (at γ = 1.00)")
    assert "a correction of 11.250% of K∞(x, x) at n = 8 and 0.090% at the paper's n = 1000." in text
