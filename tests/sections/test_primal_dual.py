"""Tests of cepaper.sections.primal_dual's page: the sentences whose words depend on the results, and the
parameters of its alpha grids."""

import pytest

from cepaper.sections import paper
from cepaper.sections import primal_dual as section


def test_alpha_grid_is_start_stop_step_and_names_a_bad_parameter():
    assert section.alpha_grid([1.0, 1.5, 0.25]).tolist() == [1.0, 1.25]
    for bad in ([1.0, 2.0], [1.0, 2.0, 0.0], [2.0, 1.0, 0.1], [1.0, 1.1, 0.5]):
        with pytest.raises(ValueError, match=r"block_alphas must be \[start, stop, step\]"):
            section.alpha_grid(bad, "block_alphas")


def test_fig3_sentence_names_the_reproducing_alphas_or_says_there_are_none():
    found = section.fig3_sentence({"interval": [3.1, 3.3], "alpha": 3.2}, 0.005).data
    assert found.startswith("**Fig. 3's numbers are reproduced for α ∈ [3.100, 3.300]** (grid step 0.005)")
    assert "the curves below use α = 3.2000." in found and "`search.ALPHA_FIG3`" in found
    none = section.fig3_sentence({"interval": None, "alpha": 3.9}, 0.01).data
    assert none.startswith("**No α of the grid reproduces Fig. 3's numbers** (grid step 0.01)")
    assert "reproduced for" not in none and "α = 3.9000" in none


def test_sensitivity_sentence_reads_the_alphas_at_the_papers_widths():
    n_params, n_flops = paper.SEC421["n_primal"], paper.paper_width("5")
    assert (n_params, n_flops) == (10, 8)
    scan = {
        "params": {"alpha": [1.0, 1.5, 2.0, 2.5], "n": [12, 10, 10, 9]},
        "flops": {"alpha": [1.0, 1.5, 2.0, 2.5], "n": [9, 9, 8, 7]},
    }
    assert section.sensitivity_sentence(scan).data == (
        "The block's optimum is the paper's n = 10 for α ∈ [1.500, 2.000] (parameters) and "
        "n = 8 for α ∈ [2.000, 2.000] (FLOPs)."
    )
    scan["flops"]["n"] = [9, 9, 9, 7]
    assert "n = 8 for no α of the grid (FLOPs)" in section.sensitivity_sentence(scan).data


def test_rho_tables_list_only_the_printed_rho_the_counts_miss():
    row = {"table": "1a", "model": "m", "rho": 1.0, "paper rho": 1.0, "rho of printed params": 1.0}
    rows = [dict(row, model="a", **{"rho match": True}), dict(row, model="b", **{"rho match": None})]
    assert section.rho_misses(rows) == []
    (sentence,) = section.rho_tables(rows)
    assert sentence.data == "Every printed ρ is what the exact counts round to."
    rows.append(dict(row, model="c", **{"rho match": False}))
    assert [r["model"] for r in section.rho_misses(rows)] == ["c"]
    sentence, table = section.rho_tables(rows)
    assert sentence.data.startswith("Printed ρ that the exact counts do not round to") and table.data[
        "model"
    ].tolist() == ["c"]
