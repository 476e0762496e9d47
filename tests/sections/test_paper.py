"""Tests of cepaper.sections.paper: reading the numbers the paper printed."""

import pytest

from cepaper.sections import paper


def test_a_value_is_rounded_to_the_printed_digits_half_away_from_zero():
    assert [paper.printed_decimals(x) for x in (13.8, 4.22, 1, 0.125)] == [1, 2, 0, 3]
    assert paper.as_printed(0.125, 0.13) == 0.13 and paper.as_printed(-0.125, -0.13) == -0.13  # exact halves
    assert paper.as_printed(37.4, 37) == 37.0 and paper.as_printed(2.4549, 2.45) == 2.45


def test_a_match_is_a_value_that_rounds_to_the_printed_number():
    assert paper.matches_printed(2.4549, 2.45) and paper.matches_printed(2.445001, 2.45)
    assert not paper.matches_printed(2.4551, 2.45) and not paper.matches_printed(2.44, 2.45)
    assert not paper.matches_printed(2.45, None), "nothing printed: nothing to match"


def test_the_papers_widths_are_read_from_its_models():
    assert paper.paper_width("5") == 8  # Table 5's 44x8d
    with pytest.raises(ValueError, match="table 'nope' has no primal optimum"):
        paper.paper_width("nope")
