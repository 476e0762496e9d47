"""The claims page: its verdict rule, which results it reads, and the costs it states."""

import pytest

from cepaper import complexity as cxm
from cepaper.book import results
from cepaper.sections import claims, paper
from cepaper.training import recipes


@pytest.fixture(autouse=True)
def empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
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
        # one rule for every direction, at every boundary: the claimed side, the other side, both
        (None, 0.0, 0.9, +1, "inconclusive"),
        (None, -0.9, 0.0, +1, "inconclusive"),
        (None, 0.1, 0.9, -1, "differs"),
        (None, -0.9, 0.0, -1, "inconclusive"),
        (None, -0.5, 0.5, 0, "inconclusive"),  # "does not improve": straddling 0 cannot tell
        (None, -0.9, -0.1, 0, "differs"),  # on the improving side
        (None, -0.9, 0.0, 0, "inconclusive"),
        (None, -0.9, -1e-9, 0, "differs"),
        (None, 0.0, 0.9, 0, "consistent"),
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
    differs = [r["claim"].split(";")[0] for r in derived if r["verdict"] == "differs"]
    assert differs == ["Table 4: resnext38 primal optimum from 1x96d"]
    (t4,) = [r for r in derived if r["verdict"] == "differs"]
    assert [x["verdict"] for x in t4["readings"]] == ["differs", "reproduced"]  # floor rounding gives 22x10d
    assert t4["summary"] == "holds under 1 of 2 readings"
    errors = [r for r in rows if r["group"] == "training"]
    assert len(errors) == sum(m["config"] is not None for m in paper.MODELS)
    assert {r["verdict"] for r in errors} == {"not run"} and all(r["cost"] for r in errors)


def fit_record(alpha, offdiag_alpha=None, widths=range(1, 257), se=0.02, khat=0.2, a=0.0):
    """A stored fit_bottleneck record whose log r is exactly ``a + alpha s`` at every width."""

    def one(al):
        term = [1.0 / n + 0.004 for n in widths]
        return {
            "alpha": al,
            "widths": list(widths),
            "term": term,
            "log_ratio": [a + al * t for t in term],
            "log_ratio_se": [se] * len(term),
            "tail_khat": [khat] * len(term),
        }

    fits = {"diag": one(alpha), "offdiag": one(offdiag_alpha or alpha)}
    return {
        "alpha": alpha,
        "alpha_ci": [alpha - 0.1, alpha + 0.1],
        "widths": list(widths),
        "trials": 2000,
        "fits": fits,
    }


def test_the_best_committed_scale_is_read_and_judged():
    results.Run("alpha", "cpu-evidence", params={}).save("fit_bottleneck", fit_record(1.9))
    (row,) = claims.alpha_rows()
    assert row["scale"] == "cpu-evidence" and row["verdict"] == "differs"
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", fit_record(1.6))
    (row,) = claims.alpha_rows()
    assert row["scale"] == "paper" and row["verdict"] == "reproduced" and row["ours"] == "1.600"
    assert row["run"].startswith("paper @ ")
    results.Run("alpha", "quick", params={}).save("fit_bottleneck", fit_record(9.0))
    assert claims.alpha_rows(scales=("quick",))[0]["verdict"] == "differs"
    assert claims.alpha_rows()[0]["scale"] == "paper", "the quick profile is not evidence by default"


def test_alpha_under_every_reading():
    """Twelve readings (width set x entry x intercept), the text's primary first; each refitted from the
    stored per-width moments; an entry with another alpha moves only its own readings."""
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", fit_record(1.9, offdiag_alpha=1.6))
    (row,) = claims.alpha_rows()
    readings = row["readings"]
    assert len(readings) == 12 and readings[0]["primary"] and sum(r["primary"] for r in readings) == 1
    assert readings[0]["reading"] == "all integers 1..256, diagonal, with intercept" and row["verdict"] == "differs"
    held = [r["reading"] for r in readings if r["verdict"] == "reproduced"]
    assert len(held) == 6 and all("K(x1, x2)" in r for r in held)
    assert row["summary"] == "holds under 6 of 12 readings"
    assert all(r["why"] for r in readings)
    # the powers of two see nine widths: a record without every integer width cannot give that reading
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", fit_record(1.6, widths=[1, 2, 4, 8]))
    (row,) = claims.alpha_rows()
    tell = {r["reading"]: r["verdict"] for r in row["readings"]}
    assert tell["all integers 1..256, diagonal, with intercept"] == "cannot tell"
    assert tell["powers of two, diagonal, with intercept"] == "cannot tell"  # 16..256 were not drawn
    assert "cannot tell" in row["summary"]


def test_an_interval_the_draws_cannot_calibrate_is_no_evidence_of_a_difference():
    """A reading whose widths include heavy-tailed draws (its interval too narrow there) cannot read
    "differs": it is "inconclusive"; with no such width it stands."""
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", fit_record(1.9, khat=0.9))
    (row,) = claims.alpha_rows()
    assert row["verdict"] == "inconclusive"
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", fit_record(1.9, khat=0.5))
    assert claims.alpha_rows()[0]["verdict"] == "differs"


def save_flow(fits):
    results.Run("theorem1_flow", "cpu-evidence", params={}).save("exponents", {"fits": fits, "primary": "gd-relu"})


def flow_fit(reading, fit, entry, slope, half, used=(1, 2, 3)):
    return dict(
        reading=reading,
        fit=fit,
        entry=entry,
        slope=slope,
        lo=slope - half,
        hi=slope + half,
        points=9,
        used=list(used),
        excluded=[],
        note="",
    )


def test_theorem1_exponents_apart_under_every_reading():
    """The exponents of n and of m from a stored theorem1_flow record: the primary (gradient flow,
    ReLU, probe mean) decides each row, against -1 and footnote 1's -0.5 (n); the rest are readings."""
    rows = []
    for reading, n_slope in (("gd-relu", -0.55), ("sgd-relu", -0.9), ("gd-gelu", -1.05)):
        for entry, half in (("offdiag_mean", 0.1), ("offdiag", 0.6)):
            rows += [flow_fit(reading, "n", entry, n_slope, half), flow_fit(reading, "m", entry, -1.02, half)]
    fits = {k: [r[k] for r in rows] for k in rows[0]}
    save_flow(fits)
    n1, n_half, m1 = claims.theorem1_rows()[:3]
    assert n1["claim"].startswith("Theorem 1: exponent of n") and n1["verdict"] == "differs"  # -0.55 +- 0.1
    assert n1["ours"] == "-0.55" and n1["interval"] == "[-0.65, -0.45]" and n1["paper"] == "-1"
    assert n1["readings"][0]["primary"] and n1["readings"][0]["reading"] == "gd-relu, mean over probe pairs"
    assert n1["summary"] == "holds under 5 of 6 readings"  # all but the primary
    assert n_half["paper"] == "-0.5" and n_half["verdict"] == "reproduced"
    assert m1["verdict"] == "reproduced" and m1["summary"] == "holds under 6 of 6 readings"
    # a reading the run could not fit says so, and is not counted
    fits["slope"][0], fits["note"][0] = float("nan"), "only 2 values of n below a relative change of 0.2"
    save_flow(fits)
    n1 = claims.theorem1_rows()[0]
    assert n1["verdict"] == "cannot tell" and "cannot tell" in n1["summary"]


def test_fig4_under_every_statistic():
    """Spearman decides, Pearson on raw and log values are readings; the dual's "does not improve"
    is inconclusive when its interval straddles 0 and differs on the improving side."""

    def corr(curve, against, measure, value, lo, hi):
        return dict(curve=curve, against=against, measure=measure, value=value, lo=lo, hi=hi, models=9, reps=4)

    results.Run("mnist", "cpu-evidence", params={}).save(
        "correlations",
        {
            "rows": [
                corr("primal", "var", "spearman", 0.8, 0.5, 0.95),
                corr("primal", "var", "pearson", 0.3, -0.1, 0.6),
                corr("primal", "var", "pearson_log", 0.7, 0.2, 0.9),
                corr("dual", "params", "spearman", -0.6, -0.8, 0.05),
                corr("dual", "params", "pearson", -0.7, -0.9, -0.04),
                corr("dual", "params", "pearson_log", 0.1, 0.0, 0.3),
            ]
        },
    )
    primal, dual = claims.mnist_rows()
    assert primal["verdict"] == "consistent" and primal["readings"][0]["reading"] == "spearman"
    assert [r["verdict"] for r in primal["readings"]] == ["consistent", "inconclusive", "consistent"]
    assert dual["verdict"] == "inconclusive" and dual["interval"] == "[-0.80, 0.05]"
    assert [r["verdict"] for r in dual["readings"]] == ["inconclusive", "differs", "consistent"]


def test_lemma1_rows_from_a_stored_run():
    fit = lambda slope, se: {"slope": slope, "se": se}
    results.Run("lemma1", "paper", params={}).save(
        "variance", {"fit_diag": fit(-1.03, 0.02), "fit_off": fit(-0.8, 0.05)}
    )
    (var,) = claims.lemma1_rows()
    assert var["verdict"] == "reproduced" and var["interval"] == "[-1.069, -0.991]"
    assert [r["verdict"] for r in var["readings"]] == ["reproduced", "differs"]


def test_every_differs_has_a_cause_and_every_link_a_target():
    results.Run("alpha", "paper", params={}).save("fit_bottleneck", fit_record(1.9))
    rows = claims.table()
    causes = claims.causes(rows)
    assert {i for i, r in enumerate(rows) if r["verdict"] in ("differs", "inconclusive")} == set(causes)
    ids = claims.keys(rows)
    assert len(set(ids)) == len(ids)
    table = claims.page_table(rows, "method", causes)
    alpha_row = next(r for r in table if "α of the bottleneck" in r["claim"])
    assert f'href="#why-{ids[[i for i, r in enumerate(rows) if "α of the" in r["claim"]][0]]}"' in alpha_row["verdict"]
    assert 'href="03_alpha.html#the-law-bends' in alpha_row["evidence"]  # no committed alpha page here: quick page


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


def test_the_page_reads_the_saved_claims():
    """The summary sentence counts the verdicts; each cause is under its row's anchor; with no interval the
    figure is a sentence; a level outside (0, 1) is refused before anything is read."""
    rows = [
        {"claim": "Lemma 1; Var falls", "verdict": "reproduced", "readings": [], "estimate": None},
        {"claim": "Fig. 3 (optimum)", "verdict": "differs", "readings": [], "estimate": None},
    ]
    saved = {"rows": rows, "keys": claims.keys(rows), "counts": claims.counts(rows), "causes": {"1": "Rounding."}}
    assert claims.counts_sentence(saved).data == (
        "**reproduced**: 1 · **consistent**: 0 · **inconclusive**: 0 · **differs**: 1 · **cannot tell**: 0 · "
        "**not run**: 0 (of 2 claims)."
    )
    assert claims.saved_causes(saved) == {1: "Rounding."}
    (why,) = claims.causes_page(saved)
    assert why.data == f'<span id="why-{saved["keys"][1]}"></span>\n\n**Fig. 3 (optimum)** (differs). Rounding.'
    assert claims.plot_page(rows).data.startswith("No committed run has an interval yet")
    assert claims.readings_page(rows) == []
    assert claims.check_level(0.9) == 0.9
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match=f"level must be in \\(0, 1\\), got {bad}"):
            claims.check_level(bad)


def test_a_damaged_result_file_marks_its_claims_and_the_page_stands():
    """A damaged results file marks the claims that read it ``result file damaged: <path>`` with how to
    restore it; the other claims, and a lower scale's result for the same claim, still stand."""
    fit = lambda slope, se: {"slope": slope, "se": se}
    results.Run("lemma1", "paper", params={}).save(
        "variance", {"fit_diag": fit(-1.03, 0.02), "fit_off": fit(-0.8, 0.05)}
    )
    damaged = results.section_dir("lemma1", "paper") / "variance.json"
    damaged.write_text('{"data": {"fit_diag": ')  # cut short, as by a full disk
    rows = claims.table()
    var = next(r for r in rows if r["claim"].startswith("Lemma 1: Var"))
    assert var["verdict"] == "result file damaged" and str(damaged) in var["ours"] and "delete it" in var["ours"]
    assert claims.counts(rows)["result file damaged"] == 2  # both Lemma 1 claims, nothing else
    results.Run("lemma1", "cpu-evidence", params={}).save("variance", {"fit_diag": fit(-1.0, 0.02)})
    var = claims.marked_damaged(claims.lemma1_rows)[0]
    assert var["verdict"] == "reproduced" and var["scale"] == "cpu-evidence" and str(damaged) in var["run"]


def test_a_damaged_committed_file_is_restored_from_git_not_deleted():
    committed = results.REPO / "results" / "paper" / "lemma1" / "variance.json"
    assert committed.is_file()
    text = str(results.DamagedResult(committed, "not JSON"))
    assert "git checkout -- results/paper/lemma1/variance.json" in text and "delete" not in text
