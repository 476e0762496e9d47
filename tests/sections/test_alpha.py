"""Tests of cepaper.sections.alpha: the readings of Algorithm 1 and the local slope of log r."""

import numpy as np
import pytest

from cepaper.sections import alpha


def stored(log_ratio_of, widths=range(1, 257)):
    term = [1.0 / n + 1.0 / (9 * n) for n in widths]
    return {
        "widths": list(widths),
        "term": term,
        "log_ratio": [log_ratio_of(t) for t in term],
        "log_ratio_se": [0.03] * len(term),
        "tail_khat": [0.1] * len(term),
    }


def test_local_slope_is_the_slope_of_each_window():
    line = stored(lambda t: 0.1 + 1.6 * t)
    ns, slopes = alpha.local_slopes(line)
    assert ns[0] == 1 and ns[-1] == 128 and np.allclose(slopes, 1.6)
    curved = stored(lambda t: 2.0 * t - 0.5 * t * t)  # slope 2 - t: steeper where t is small (wide nets)
    ns, slopes = alpha.local_slopes(curved)
    x = np.array(curved["term"][3:8])  # n = 4..8
    assert slopes[3] == pytest.approx(np.polyfit(x, 2.0 * x - 0.5 * x * x, 1)[0])
    assert slopes[0] < slopes[-1] < 2.0


def test_readings_are_declared_with_the_text_primary():
    keys = alpha.readings()
    assert keys[0] == alpha.PRIMARY == ("all integers 1..256", "diag", True) and len(set(keys)) == len(keys) == 12
    rows = alpha.reading_rows({"fits": {"diag": stored(lambda t: 1.6 * t)}}, design_window=(1.3, 1.9))
    assert rows[0]["primary"] and rows[0]["verdict"] == "reproduced" and rows[0]["designs_unchanged"]
    assert rows[0]["alpha"] == pytest.approx(1.6)
    off = [r for r in rows if "K(x1, x2)" in r["reading"]]
    assert all(r["verdict"] == "cannot tell" and "no offdiag fit" in r["note"] for r in off)
    assert all(r["designs_unchanged"] is None for r in off)
    table = alpha.reading_table({"fits": {"diag": stored(lambda t: 2.5 * t)}}, (1.3, 1.9))
    assert table[0]["reading"].startswith("primary: ") and table[0]["same derived models"] == "✗"
    assert table[0]["vs the paper's 1.60"] == "differs" and table[0]["α [95% interval]"].startswith("2.500 [")
    assert alpha.design_window([{"alpha_min": 1.2, "alpha_max": 2.0}, {"alpha_min": 1.3, "alpha_max": 1.9}]) == (
        1.3,
        1.9,
    )
