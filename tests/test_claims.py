"""The claims page: its verdict rule, which results it reads, and the costs it states."""

import pytest

from cepaper.sections import claims
from cepaper.training import recipes
from cepaper.sections import paper
from cepaper.book import results
from cepaper import complexity as cxm


@pytest.fixture(autouse=True)
def empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    monkeypatch.delenv("CEPAPER_STAGING", raising=False)
    monkeypatch.delenv("CEPAPER_READS_LOG", raising=False)


@pytest.mark.parametrize(
    "value, lo, hi, direction, expected",
    [
        (1.6, 1.5, 1.7, None, "reproduced"),
        (1.6, 1.61, 1.7, None, "differs"),
        (-1, -1.2, -0.9, None, "reproduced"),
        (None, 0.1, 0.9, +1, "consistent"),
        (None, -0.2, 0.9, +1, "inconclusive"),
        (None, -0.9, -0.1, +1, "differs"),
        (None, -0.9, -0.1, -1, "consistent"),
        (None, -0.5, 0.5, 0, "consistent"),
        (None, -0.9, -0.1, 0, "differs"),
        (None, 0.1, 0.9, 0, "consistent"),
    ],
)
def test_verdict_rule(value, lo, hi, direction, expected):
    assert claims.verdict(value, lo, hi, direction) == expected


def by_claim(rows, start):
    return [r for r in rows if r["claim"].startswith(start)]


def test_nothing_committed_reads_not_run_and_exact_rows_are_computed():
    rows = claims.table()
    assert {r["verdict"] for r in by_claim(rows, "Lemma 1")} == {"not run"}
    assert {r["verdict"] for r in by_claim(rows, "Theorem 1")} == {"not run"}
    assert {r["verdict"] for r in by_claim(rows, "Fig. 4")} == {"not run"}
    (fig3,) = by_claim(rows, "Fig. 3")
    assert fig3["verdict"] == "reproduced" and fig3["ours"].startswith("n = 48, m = 30")
    # every derived ResNeXt row of Tables 1-5 is an exact computation; the one the paper rounds
    # differently (Table 4, 1x96d: 22x10d printed, 23x10d at nearest rounding) differs
    derived = [r for r in rows if r["scale"] == "exact" and r["claim"].startswith("Table")]
    differs = [r["claim"] for r in derived if r["verdict"] == "differs"]
    assert differs == ["Table 4: resnext38 primal optimum from 1x96d"]
    errors = [r for r in rows if r["group"] == "training"]
    assert len(errors) == sum(m["config"] is not None for m in paper.MODELS)
    assert {r["verdict"] for r in errors} == {"not run"} and all(r["cost"] for r in errors)


def test_the_best_committed_scale_is_read_and_judged():
    fit = lambda a, lo, hi: {"alpha": a, "alpha_ci": [lo, hi], "widths": list(range(1, 257)), "trials": 2000}
    results.Run("alpha", "cpu-evidence", params={}).save("fit_bottleneck", fit(1.9, 1.8, 2.0))
    (row,) = claims.alpha_rows()
    assert row["scale"] == "cpu-evidence" and row["verdict"] == "differs"
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", fit(1.55, 1.5, 1.65))
    (row,) = claims.alpha_rows()
    assert row["scale"] == "paper" and row["verdict"] == "reproduced" and row["ours"] == "1.550"
    assert row["run"].startswith("paper @ ")
    results.Run("alpha", "quick", params={}).save("fit_bottleneck", fit(9.0, 8.0, 10.0))
    assert claims.alpha_rows(scales=("quick",))[0]["verdict"] == "differs"
    assert claims.alpha_rows()[0]["scale"] == "paper", "the quick profile is not evidence by default"


def test_an_interval_the_draws_cannot_calibrate_is_no_evidence_of_a_difference():
    """A fit that flags heavy-tailed widths (its interval too narrow there) cannot make the verdict
    "differs": it is "inconclusive", and the claim says why; with no flagged width it stands."""
    record = {
        "alpha": 1.9,
        "alpha_ci": [1.8, 2.0],
        "widths": [1, 2, 4],
        "trials": 2000,
        "entry": "diag",
        "fits": {"diag": {"heavy_tail_widths": [1, 2]}},
    }
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", record)
    (row,) = claims.alpha_rows()
    assert row["verdict"] == "inconclusive" and "heavy-tailed draws at n = 1, 2" in row["claim"]
    record["fits"]["diag"]["heavy_tail_widths"] = []
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", record)
    assert claims.alpha_rows()[0]["verdict"] == "differs"


def test_a_committed_training_run_stands_beside_its_own_row():
    row = lambda recipe, top1, sem: {
        "dataset": "cifar10",
        "arch": "resnext29",
        "config": "10x10d",
        "recipe": recipe,
        "params": 1,
        "top1": top1,
        "top1_sem": sem,
        "top5": 0.0,
        "runs": 10,
    }
    results.Run("cifar", "paper", params={}).save(
        "summary", {"rows": [row("cifar", 4.2, 0.05), row("cifar_1gpu", 5.5, 0.05)], "scaled": False}
    )
    rows = claims.error_rows()
    (single,) = [r for r in rows if r["claim"].startswith("Table 1b: 10x10d §")]
    (multi,) = [r for r in rows if r["claim"] == "Table 1b: 10x10d (cifar10 top-1 error, %)"]
    assert multi["verdict"] == "reproduced" and multi["ours"] == "4.20 (10 runs)"  # 4.21 inside 4.2 ± 0.098
    assert single["verdict"] == "differs" and single["ours"].startswith("5.50")  # 4.70 outside 5.5 ± 0.098
    assert {r["verdict"] for r in rows if "10x10d" not in r["claim"] or "Table 1b" not in r["claim"]} == {"not run"}


def test_cost_from_a_measured_speed_and_by_flops():
    m37 = next(m for m in paper.MODELS if m["table"] == "1a" and m["config"] == "37x10d")
    base = next(m for m in paper.MODELS if m["table"] == "1a" and m["config"] == "1x128d")
    speed = [{"table": "1a", "arch": "resnext29", "config": "37x10d", "resolution": 32, "images_per_s": 2.0}]
    hours = 10 * recipes.recipe("cifar").epochs * 50_000 / 2.0 / 3600
    assert claims.cost(m37, speed, 10).startswith(f"{hours:,.0f} CPU-hours") and "measured" in claims.cost(
        m37, speed, 10
    )
    ratio = (
        cxm.complexity("resnext29", "37x10d", classes=10)["flops"]
        / cxm.complexity("resnext29", "1x128d", classes=10)["flops"]
    )
    assert claims.cost(base, speed, 10).startswith(f"{hours / ratio:,.0f} CPU-hours")
    assert "no training speed measured" in claims.cost(base, [], 10)
