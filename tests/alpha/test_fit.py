"""Algorithm 1: alpha recovered from synthetic data, Monte Carlo moments against a closed form,
fan-in sums as the design uses them, reproducibility, resumable sweeps, and bad input."""

import functools
import json
import math
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from cepaper import ntk, search
from cepaper.alpha import fit, sweeps
from cepaper.models import bottleneck as B
from cepaper.search import equations


def test_log_grid():
    assert sweeps.log_grid() == (1, 2, 3, 4, 5, 6, 9, 13, 19, 28, 40, 58, 84, 122, 177, 256)
    g = sweeps.log_grid(2, 100, 7)
    assert len(set(g)) == 7 and g[0] == 2 and g[-1] == 100 and list(g) == sorted(g)
    with pytest.raises(ValueError, match="distinct widths"):
        sweeps.log_grid(1, 5, 6)


@pytest.mark.parametrize("intercept, a", [(True, 0.08), (False, 0.0)])
def test_alpha_recovered_from_synthetic_data(intercept, a):
    terms = [sweeps.bottleneck_term(n) for n in sweeps.log_grid(4, 256, 10)]
    samples = fit.synthetic_samples(1.6, terms, 4000, intercept=a, seed=3)
    f = fit.fit_alpha(terms, samples, intercept=intercept, n_boot=400, seed=1)
    lo, hi = f["alpha_ci"]
    assert lo < 1.6 < hi and hi - lo < 0.5
    assert f["alpha"] == pytest.approx(1.6, abs=0.15)
    assert f["intercept"] == pytest.approx(a, abs=0.03)
    assert not lo < 1.2 < hi  # the interval excludes a wrong alpha
    a_lo, a_hi = f["intercept_ci"]
    assert (a_lo < a < a_hi) if intercept else (a_lo, a_hi) == (0.0, 0.0)
    assert len(f["log_ratio"]) == len(f["log_ratio_lo"]) == len(terms)
    assert all(l <= y <= h for l, y, h in zip(f["log_ratio_lo"], f["log_ratio"], f["log_ratio_hi"]))
    curve = fit.fitted_curve(f)
    assert curve["ratio"][-1] == pytest.approx(math.exp(f["intercept"] + f["alpha"] * max(terms)))


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_options_are_the_least_squares_they_name(intercept, weighted):
    """``intercept`` and ``weighted`` (inverse bootstrap variance of each log r) against numpy's fits."""
    terms = np.array([0.05, 0.1, 0.2, 0.4])
    ks = fit.synthetic_samples(1.0, terms, 300, intercept=0.1, seed=2)
    f = fit.fit_alpha(terms, ks, intercept=intercept, weighted=weighted, n_boot=200, seed=3)
    y = np.array([np.log((k * k).mean() / k.mean() ** 2) for k in ks])
    w = 1 / np.array(f["log_ratio_se"]) ** 2 if weighted else np.ones(len(terms))
    if intercept:
        slope, a = np.polyfit(terms, y, 1, w=np.sqrt(w))
    else:
        slope, a = (w * terms * y).sum() / (w * terms * terms).sum(), 0.0
    assert (f["alpha"], f["intercept"]) == (pytest.approx(slope, rel=1e-10), pytest.approx(a, abs=1e-10))
    assert f["options"] == {"intercept": intercept, "weighted": weighted, "seed": 3}
    assert f["fitted"] == pytest.approx(a + slope * terms, rel=1e-10)
    assert f["mean"] == pytest.approx([k.mean() for k in ks])
    assert f["second"] == pytest.approx([(k * k).mean() for k in ks])
    assert (f["term"], f["trials"], f["level"], f["n_boot"]) == (terms.tolist(), [300] * 4, 0.95, 200)


def test_weighted_fit_and_C():
    terms = [sweeps.mlp_term(n) for n in (40, 64, 96, 128, 192, 256)]
    samples = fit.synthetic_samples(3.0, terms, 3000, mean=2.0, seed=5)
    f = fit.fit_alpha(terms, samples, weighted=True, intercept=False, n_boot=300)
    assert f["alpha_ci"][0] < 3.0 < f["alpha_ci"][1]
    # Var(K) = E[K]^2 (exp(alpha s) - 1) for these log-normals: C = E[K]^2 = 4
    assert f["C_ci"][0] < 4.0 < f["C_ci"][1]
    assert f["log_ratio_se"][0] > f["log_ratio_se"][-1] > 0


def test_a_width_without_signal_is_dropped():
    """A width whose draws are all zero (E[K] = 0) is left out: the fit is that of the other widths."""
    terms = np.array([0.05, 0.1, 0.2, 0.4])
    ks = fit.synthetic_samples(1.0, terms, 300, intercept=0.1, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and quietly
        f = fit.fit_alpha(terms, ks[:1] + [np.zeros(300)] + ks[2:], n_boot=50, seed=3)
    g = fit.fit_alpha(terms[[0, 2, 3]], ks[:1] + ks[2:], n_boot=50, seed=3)
    assert f["dropped"] == [1] and f["log_ratio"][1] is None and f["bad_resamples"] == 0
    for key in ("alpha", "intercept", "C"):
        assert f[key] == pytest.approx(g[key], rel=1e-12), key


def test_resamples_without_signal_are_counted_and_left_out():
    """Two widths of T = 10 draws, one of them non-zero: a resample misses it with probability
    p = 0.9^10, so a fraction 1 - (1 - p)^2 of the resamples has E[K] = 0 at some width; those are
    counted in ``bad_resamples`` and left out of the intervals (which stay finite)."""
    terms, sparse = [0.05, 0.1, 0.2], np.r_[np.zeros(9), 1.0]
    ks = [sparse, sparse] + fit.synthetic_samples(1.0, [0.2], 10, seed=1)
    n_boot, p = 4000, 1 - (1 - 0.9**10) ** 2
    f = fit.fit_alpha(terms, ks, n_boot=n_boot, seed=0)
    assert abs(f["bad_resamples"] / n_boot - p) < 4 * math.sqrt(p * (1 - p) / n_boot), f["bad_resamples"]
    assert all(math.isfinite(v) for v in f["alpha_ci"] + f["intercept_ci"] + [f["alpha_se"]])


def test_interval_levels_are_the_bootstrap_quantiles_they_name():
    """K in {0, 1}, half of T = 900 draws 1: a resample with c ones has log r = -log(c / T), so the
    per-width interval of log r at level L is -log of the binomial(T, 1/2) quantiles (1 -+ L) / 2 of c
    (within one count), e.g. c in [421, 479] at 95%: a 96.7% interval labelled 95% fails."""
    t = 900
    k = np.r_[np.ones(t // 2), np.zeros(t // 2)]
    other = fit.synthetic_samples(1.0, [0.2], t, seed=1)[0]
    for level in (0.95, 0.9):
        f = fit.fit_alpha([0.1, 0.2], [k, other], n_boot=10000, level=level, seed=0)
        c = t * np.exp(-np.array([f["log_ratio_hi"][0], f["log_ratio_lo"][0]]))
        expected = stats.binom.ppf([(1 - level) / 2, (1 + level) / 2], t, 0.5)
        assert np.abs(c - expected).max() <= 1, (level, c, expected)


def test_fit_accepts_the_smallest_inputs_and_refuses_less():
    """Two draws per width, two distinct widths with an intercept, one width without (then alpha s = log r
    and C = E[K]^2 exactly); a level of 0 or 1, or two equal terms with an intercept, are refused."""
    two = [np.array([1.0, 2.0]), np.array([1.0, 3.0])]
    assert math.isfinite(fit.fit_alpha([0.5, 1.0], two, n_boot=10)["alpha"])
    f = fit.fit_alpha([0.5, 1.0], two)  # the documented defaults
    assert (f["n_boot"], f["level"], f["options"]) == (1000, 0.95, {"intercept": True, "weighted": False, "seed": 0})
    k = fit.synthetic_samples(1.0, [0.3], 50, seed=4)[0]
    f = fit.fit_alpha([0.3], [k], intercept=False, n_boot=20)
    assert f["alpha"] == pytest.approx(math.log((k * k).mean() / k.mean() ** 2) / 0.3, rel=1e-12)
    assert f["C"] == pytest.approx(k.mean() ** 2, rel=1e-12)
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match="level must be in"):
            fit.fit_alpha([0.5, 1.0], two, level=level)
    with pytest.raises(ValueError, match="two distinct widths"):
        fit.fit_alpha([0.5, 0.5], two)


def test_C_of_a_negative_alpha_is_not_a_number():
    """alpha-hat < 0 (log r falls with s): exp(alpha s) - 1 < 0 and C of Eq. 2 is undefined: None, not a number."""
    terms = np.array([0.05, 0.1, 0.2, 0.4])
    f = fit.fit_alpha(terms, fit.synthetic_samples(-1.0, terms, 300, intercept=0.5, seed=2), n_boot=50)
    assert f["alpha"] < 0 and f["C"] is None and f["C_ci"] == [None, None]


# ------------------------------------------------------------------------------- calibration

#: Synthetic laws of K: ``(kind, terms s, alpha, a, draws T)`` with ``E[K^2]/E[K]^2 = exp(a + alpha s)``.
#: NEAR_NORMAL: log-normal, ``a + alpha s`` in [0.02, 0.055], K nearly normal. BLOCK_LIKE: the bottleneck's
#: terms at widths 1, 2, 4, 16, 256 with the paper's alpha = 1.6 and T = 2000, K = 0 with probability 1/2
#: at n = 1 (as the block's dead ReLUs are) and Gamma-distributed otherwise: an exponential tail, Pareto
#: k-hat of K^2 about 0.3-0.5 as the paper sweep's draws have. HEAVY: the same terms log-normal with T = 1000,
#: ``Var log K = 1.78`` at n = 1 (k-hat about 0.9): a tail the draws never reach.
NEAR_NORMAL = ("lognormal", (0.05, 0.1, 0.2, 0.3, 0.4), 0.1, 0.015, 200)
BLOCK_TERMS = tuple(sweeps.bottleneck_term(n) for n in (1, 2, 4, 16, 256))
BLOCK_LIKE = ("gamma", BLOCK_TERMS, 1.6, 0.0, 2000)
HEAVY = ("lognormal", BLOCK_TERMS, 1.6, 0.0, 1000)


def synthetic_draws(law, rng, reps):
    """``(reps, J, T)`` draws of K of ``law`` (written out, not :func:`fit.synthetic_samples`)."""
    kind, terms, alpha, a, t = law
    r = np.exp(a + alpha * np.array(terms))[:, None]
    if kind == "lognormal":
        z = rng.standard_normal((reps, len(terms), t))
        return np.exp(np.sqrt(np.log(r)) * z - np.log(r) / 2)
    alive = np.where(np.array(terms)[:, None] > 1, 0.5, 1.0)  # P(K != 0): 1/2 at n = 1
    shape = 1 / (r * alive - 1)  # (1 + 1/shape) / alive = r
    return rng.gamma(shape, size=(reps, len(terms), t)) * (rng.random((reps, len(terms), t)) < alive)


def ols_alpha(terms, k):
    """The point estimate of Algorithm 1 by numpy: slope of ``log(mean K^2 / mean(K)^2)`` on ``s``."""
    y = np.log((k * k).mean(-1)) - 2 * np.log(k.mean(-1))  # (reps, J)
    return np.polyfit(terms, y.T, 1)[0]


@functools.cache
def alpha_hats(law, sets=20000):
    """alpha-hat of ``sets`` synthetic data sets: its sampling distribution."""
    chunk = 2000 if law[4] <= 200 else 250
    return np.concatenate(
        [ols_alpha(law[1], synthetic_draws(law, np.random.default_rng([7, i]), chunk)) for i in range(sets // chunk)]
    )


def without_tail_index():
    """Within it, :func:`fit.fit_alpha` computes no tail index (``nan``): a generalized Pareto fit per
    width, most of the work of a calibration's hundreds of fits, and no part of the intervals they check
    (the tail tests below check it)."""
    return mock.patch.object(fit, "tail_index", lambda x: math.nan)


def alpha_calibration(law=NEAR_NORMAL, reps=200, n_boot=400, level=0.95, sets=20000):
    """Reported spread of the alpha fit over its sampling distribution, from ``reps`` synthetic data
    sets against the sampling distribution of :func:`alpha_hats`.

    Returns ``(se_ratio, width_ratio, bias_in_sd)``: mean ``alpha_se`` over the sd of alpha-hat, mean
    interval width over the width of the central ``level`` range of alpha-hat, and the mean offset
    of alpha-hat from the truth in units of its sd."""
    truth = alpha_hats(law, sets)
    sd, (q_lo, q_hi) = truth.std(ddof=1), np.quantile(truth, [(1 - level) / 2, (1 + level) / 2])
    ks = synthetic_draws(law, np.random.default_rng(8), reps)
    with without_tail_index():  # no tail flagged, so no warning of HEAVY's
        fits = [fit.fit_alpha(law[1], list(k), n_boot=n_boot, level=level, seed=i) for i, k in enumerate(ks)]
    np.testing.assert_allclose([f["alpha"] for f in fits], ols_alpha(law[1], ks), rtol=1e-9, atol=1e-12)
    se = np.mean([f["alpha_se"] for f in fits])
    width = np.mean([f["alpha_ci"][1] - f["alpha_ci"][0] for f in fits])
    return se / sd, width / (q_hi - q_lo), (truth.mean() - law[2]) / sd


def test_alpha_interval_is_calibrated():
    """The bootstrap's sd and interval width match alpha-hat's sampling distribution (200 replicates:
    the sd ratio is known to about 2%, the bootstrap's own small-sample bias is about 3%), so a
    standard error off by a factor, or a 90% interval labelled 95% (width ratio 0.84), fails."""
    se_ratio, width_ratio, bias = alpha_calibration()
    assert 0.9 < se_ratio < 1.1, se_ratio
    assert 0.9 < width_ratio < 1.1, width_ratio
    assert abs(bias) < 0.2, bias  # centred: width and centre give coverage


def test_alpha_interval_is_calibrated_at_the_papers_widths():
    """Block-like draws (BLOCK_LIKE: n = 1 included, half its draws zero, T = 2000): sd and width within
    15% of alpha-hat's sampling distribution (100 replicates know the sd ratio to about 7%)."""
    se_ratio, width_ratio, bias = alpha_calibration(BLOCK_LIKE, reps=100, n_boot=200, sets=5000)
    assert 0.85 < se_ratio < 1.15 and 0.85 < width_ratio < 1.15, (se_ratio, width_ratio, bias)
    assert abs(bias) < 0.2, bias


def ols_fit(terms, k):
    """``(alpha, a, log C)`` of every data set of ``k (reps, J, T)`` by numpy (Eq. 9 by polyfit, Eq. 2's
    geometric-mean ``C`` written out): the estimates whose sampling distribution the intervals describe."""
    terms = np.asarray(terms)
    y = np.log((k * k).mean(-1)) - 2 * np.log(k.mean(-1))
    alpha, a = np.polyfit(terms, y.T, 1)
    log_c = (np.log((k * k).mean(-1) - k.mean(-1) ** 2) - np.log(np.expm1(alpha[:, None] * terms))).mean(-1)
    return np.stack([alpha, a, log_c], -1)


def test_intercept_and_C_intervals_are_calibrated():
    """``intercept_ci`` and ``C_ci`` (on log C) have the width of the central 95% of the intercept's and
    log C's sampling distributions (NEAR_NORMAL, 60 replicates against 20000 data sets) and are centred
    on the estimate, so a bootstrap that refits the intercept or C wrongly fails."""
    law = NEAR_NORMAL
    truth = np.concatenate(
        [ols_fit(law[1], synthetic_draws(law, np.random.default_rng([9, i]), 2000)) for i in range(10)]
    )
    (q_lo, q_hi), sd = np.quantile(truth, [0.025, 0.975], axis=0), truth.std(0, ddof=1)
    ks = synthetic_draws(law, np.random.default_rng(10), 60)
    with without_tail_index():
        fits = [fit.fit_alpha(law[1], list(k), n_boot=400, seed=i) for i, k in enumerate(ks)]
    est = ols_fit(law[1], ks)
    np.testing.assert_allclose([f["intercept"] for f in fits], est[:, 1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.log([f["C"] for f in fits]), est[:, 2], rtol=1e-9, atol=1e-12)
    for j, ci in ((1, np.array([f["intercept_ci"] for f in fits])), (2, np.log([f["C_ci"] for f in fits]))):
        width = (ci[:, 1] - ci[:, 0]).mean() / (q_hi[j] - q_lo[j])
        offset = (ci.mean(1) - est[:, j]).mean() / sd[j]
        assert 0.88 < width < 1.12 and abs(offset) < 0.2, (j, width, offset)


def test_a_tail_the_draws_cannot_see_is_flagged():
    """Where no resampling of the draws can be calibrated (HEAVY: measured sd ratio 0.55, width ratio
    0.52, about 55% coverage), the fit says so: the n = 1 width is listed in ``heavy_tail``, with a warning;
    block-like draws are not flagged."""
    heavy, light = (synthetic_draws(law, np.random.default_rng(3), 1)[0] for law in (HEAVY, BLOCK_LIKE))
    with pytest.warns(UserWarning, match=r"width index \[0\] have a heavy tail"):
        f = fit.fit_alpha(BLOCK_TERMS, list(heavy), n_boot=20)
    assert f["heavy_tail"][:1] == [0] and f["tail_khat"][0] > fit.KHAT_MAX
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit.fit_alpha(BLOCK_TERMS, list(light), n_boot=20)["heavy_tail"] == []
    assert alpha_calibration(HEAVY, reps=60, n_boot=100, sets=2000)[0] < 0.75  # why the flag exists


def heavy_sweep():
    """A :func:`sweeps.module_sweep`-shaped sweep of HEAVY's draws (its n = 1 width flagged) on both entries."""
    heavy = synthetic_draws(HEAVY, np.random.default_rng(3), 1)[0]
    widths = [1, 2, 4, 16, 256]
    samples = {n: np.broadcast_to(k[:, None, None], (len(k), 2, 2)) for n, k in zip(widths, heavy)}
    return {
        "module": "bottleneck",
        "options": {},
        "widths": widths,
        "terms": list(BLOCK_TERMS),
        "samples": samples,
        "trials": heavy.shape[1],
        "seed": 0,
        "seconds": 0.0,
        "device": "cpu",
    }


def test_a_heavy_tail_is_named_by_its_widths_and_entry():
    """fit_sweep's warning names the widths n and the entry (fit_alpha's, which knows no widths, their
    indices), in its text and as attributes, which the `cepaper` command words in its own flags."""
    from cepaper.cli import common as cli_common

    with pytest.warns(fit.HeavyTailWarning) as caught:
        f = fit.fit_sweep(heavy_sweep(), "diag", n_boot=20)
    (w,) = [c.message for c in caught]  # one: fit_alpha's, by index, is said again by width
    assert w.widths == f["heavy_tail_widths"] and w.widths[0] == 1 and w.entry == "diag"
    assert w.trials == [1000] * len(w.widths) and len(w.khat) == len(w.widths) and min(w.khat) > fit.KHAT_MAX
    assert str(w).startswith("the draws at width index [0") and "(widths n = [1" in str(w) and "diag entry" in str(w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="the draws at width index")  # the filter of notebooks 03 and 08
        fit.fit_sweep(heavy_sweep(), "diag", n_boot=20)
    text = cli_common.warning_text(w)
    assert text.startswith("the draws of the diag entry at widths 1") and "1000 draws do not estimate" in text
    assert "pass more --trials, or --widths without these widths" in text and "n_min" not in text


def test_cli_warnings_speak_its_flags_without_file_or_line(tmp_path, monkeypatch, capsys):
    """`cepaper fit-alpha` on heavy-tailed draws: each warning one line, ``cepaper fit-alpha: warning:``,
    naming --trials and --widths; no path of the code that warned, no line of its source."""
    from cepaper import cli

    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    monkeypatch.setattr(sweeps, "module_sweep", lambda *a, **k: heavy_sweep())
    assert cli.main(["fit-alpha", "--module", "bottleneck", "--trials", "1000"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith("cepaper fit-alpha: warning: the draws of the ") for line in err), err
    assert all("--trials" in line and ".py" not in line and "fit_alpha(" not in line for line in err), err
    assert warnings.showwarning.__module__ == "warnings", "restored after the command"


def test_tail_index_recovers_a_pareto_shape():
    """Generalized-Pareto draws of shape xi: k-hat within 0.15 of xi (M = 134 tail draws of T = 2000);
    an exponential tail gives about 0; no spread gives nan."""
    rng = np.random.default_rng(0)
    for xi in (0.2, 0.5, 0.9):
        k = [fit.tail_index(stats.genpareto.rvs(xi, size=2000, random_state=rng)) for _ in range(20)]
        assert abs(np.median(k) - xi) < 0.15, (xi, k)
    assert abs(fit.tail_index(rng.exponential(size=2000))) < 0.15
    assert math.isnan(fit.tail_index(np.ones(100)))


def test_tail_index_reads_the_psis_tail():
    """k-hat is a function of the largest M + 1 draws only, M = min(T/5, 3 sqrt T) (PSIS's tail size):
    moving the draw below them changes nothing, moving the (M + 1)-th or the M-th largest changes k-hat.
    It is scale free, and needs M >= 5 tail draws (T = 24: nan)."""
    rng = np.random.default_rng(1)
    for t in (25, 100, 2000):
        m = int(min(t / 5, 3 * math.sqrt(t)))
        x = stats.genpareto.rvs(0.5, size=t, random_state=rng)
        order, k = np.argsort(x), fit.tail_index(x)
        assert math.isfinite(k)
        below = x.copy()
        below[order[-m - 2]] = x[order[0]]
        assert fit.tail_index(below) == k, t
        for i in (-m - 1, -m):
            moved = x.copy()
            moved[order[i]] = (x[order[i]] + x[order[i - 1]]) / 2  # order kept
            assert fit.tail_index(moved) != pytest.approx(k, rel=1e-6, abs=1e-9), (t, i)
        if t == 2000:  # (5 or 20 draws: a rough optimum)
            assert fit.tail_index(1e-3 * x) == pytest.approx(k, abs=0.02)
    assert math.isnan(fit.tail_index(stats.genpareto.rvs(0.5, size=24, random_state=rng)))


def test_alpha_calibration_detects_a_narrow_interval(plant, monkeypatch):
    """The check above has power: a 90% interval reported as 95% (width ratio 0.84: 40 replicates know
    the mean width to about 2%), or an sd a factor 3.9 too small (ratio 0.26: 10 replicates tell), fails it."""
    plant(fit, "fit_alpha", "q = [(1 - level) / 2, (1 + level) / 2]", "q = [1 - level, level]")
    assert alpha_calibration(reps=40)[1] < 0.9
    monkeypatch.undo()
    plant(fit, "_fit_rest", "float(np.nanstd(alpha_b, ddof=1))", "float(np.nanstd(alpha_b, ddof=1) / 3.9)")
    assert alpha_calibration(reps=10)[0] < 0.9


def test_second_moment_of_one_hidden_layer_matches_closed_form():
    """L = 2 weight layers: K(x, x) = (1/n) sum_i xi_i, i.i.d. xi with E xi = q, E xi^2 = 4 q^2, q = 2|x|^2/n_0,
    so E[K] = q and E[K^2] = q^2 (1 + 3/n) exactly; the Monte Carlo must agree within its error."""
    sw = sweeps.module_sweep("mlp", widths=(1, 3, 10), trials=20000, seed=4, depth=2, n_in=16)
    x = sweeps.mlp_inputs(16, 2, 0.5, 0, dtype=torch.float64)
    q = 2 * (x[0] @ x[0]).item() / 16
    for n in sw["widths"]:
        k = fit.entry_values(sw["samples"][n], "diag")
        m1, m2, lr = fit.second_moment_ratio(k)
        se1, se2 = k.std() / math.sqrt(len(k)), (k * k).std() / math.sqrt(len(k))
        assert abs(m1 - q) < 4 * se1
        assert abs(m2 - q * q * (1 + 3 / n)) < 4 * se2
        assert lr == pytest.approx(math.log(1 + 3 / n), abs=6 * se2 / m2 + 4 * 2 * se1 / m1)
    assert sw["terms"] == pytest.approx([1.0, 1 / 3, 0.1])


def test_terms_are_the_designs():
    for n in (1, 7, 64):
        assert sweeps.bottleneck_term(n) == pytest.approx(search.BottleneckDesign().sum_inv_fan_in(n))
        assert sweeps.mlp_term(n, depth=6) == pytest.approx(search.MLPDesign(784, 6).sum_inv_fan_in(n))
    assert sweeps.bottleneck_term(10, n_in=16) == pytest.approx(1 / 16 + 1 / 90 + 1 / 10, rel=1e-15)  # n_in passed on
    assert sweeps.mlp_term(4, depth=3, n_in=16) == pytest.approx(2 / 4, rel=1e-15)  # depth passed on; input layer out
    with pytest.raises(ValueError, match="^n must be an integer >= 1, got 0"):
        sweeps.mlp_term(0)
    with pytest.raises(ValueError, match="^depth must be >= 2"):
        sweeps.mlp_term(4, depth=1)
    assert equations.sum_inv_fan_in((256, 9, 1), "hidden") == pytest.approx(1 / 9 + 1)
    with pytest.raises(ValueError, match="no layer enters"):
        equations.sum_inv_fan_in((10,), "hidden")


def small_bottleneck(seed, **kw):
    return fit.measure_alpha(
        "bottleneck", widths=(1, 2, 4, 8), trials=24, seed=seed, n_in=16, spatial=3, n_boot=50, **kw
    )


def test_same_seed_same_alpha():
    a, b, c = small_bottleneck(3), small_bottleneck(3), small_bottleneck(4)
    assert a["alpha"] == b["alpha"] and a["alpha_ci"] == b["alpha_ci"] and a["C"] == b["C"]
    assert a["alpha"] != c["alpha"]
    assert set(a["fits"]) == {"diag", "offdiag"} and a["widths"] == [1, 2, 4, 8] and a["trials"] == 24
    json.dumps(a)  # JSON-able, ready for the results store


def test_sweep_resumes_from_checkpoint(tmp_path):
    opts = dict(n_in=16, spatial=3)
    full = sweeps.module_sweep("bottleneck", (1, 3, 5), 10, seed=2, **opts)
    calls = []

    def sampler(n):
        calls.append(n)
        if n == 5 and len(calls) == 3:
            raise KeyboardInterrupt  # interrupted at the third width
        return sweeps._bottleneck_setup(sweeps.module_options("bottleneck", **opts))[0](n)

    chunk = lambda n: 256
    settings = {"module": "bottleneck", **sweeps.module_options("bottleneck", **opts)}
    with pytest.raises(KeyboardInterrupt):
        sweeps.ntk_sweep(sampler, (1, 3, 5), 10, 2, chunk, checkpoint=tmp_path, settings=settings)
    files = sorted(p.name for p in tmp_path.glob("*/*.json"))
    assert files == ["n0001.json", "n0003.json"]
    resumed = sweeps.ntk_sweep(sampler, (1, 3, 5), 10, 2, chunk, checkpoint=tmp_path, settings=settings)
    assert calls == [1, 3, 5, 5]  # widths 1 and 3 were not recomputed
    for n in (1, 3, 5):
        np.testing.assert_array_equal(resumed[n], full["samples"][n])


def test_a_checkpoint_of_other_settings_is_not_loaded(tmp_path):
    """A checkpointed width is reused only by a sweep with the same seed, trials and settings: each
    change draws afresh (the result equals a sweep without checkpoint), and the same sweep loads it.
    Two trials are enough, the default seed is 0, and a progress bar changes nothing."""

    def sampler(scale):
        return lambda n: lambda t, g: scale * n * torch.rand(t, 2, 2, generator=g, dtype=torch.float64)

    def sweep(seed=2, trials=10, scale=1.0, checkpoint=tmp_path):
        return sweeps.ntk_sweep(
            sampler(scale),
            (1, 3),
            trials,
            seed,
            checkpoint=checkpoint,
            settings=None if checkpoint is None else {"scale": scale},
        )[3]

    first = sweep()
    for change in (dict(seed=3), dict(trials=12), dict(scale=2.0)):
        np.testing.assert_array_equal(sweep(**change), sweep(**change, checkpoint=None))
        assert not np.array_equal(sweep(**change, checkpoint=None), first), change
    np.testing.assert_array_equal(
        sweeps.ntk_sweep(sampler(1.0), (3,), 2)[3], sweep(seed=0, trials=2, checkpoint=None)[:2]
    )
    np.testing.assert_array_equal(sweeps.ntk_sweep(sampler(1.0), (1, 3), 10, 2, progress=True)[3], first)
    calls = []
    np.testing.assert_array_equal(
        sweeps.ntk_sweep(lambda n: calls.append(n), (1, 3), 10, 2, checkpoint=tmp_path, settings={"scale": 1.0})[3],
        first,
    )
    assert calls == [] and len(list(tmp_path.glob("*/n0003.json"))) == 4


def test_custom_module_sweep_reads_fan_ins():
    v = ntk.readout_vector("mean", (8, 3, 3))
    x = B.block_inputs(8, 3, 2)

    def make(n, generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return B.Bottleneck(n, v, n_in=8, seed=seed)

    sw = sweeps.custom_sweep(make, x, (1, 2, 4), trials=6, seed=1)
    assert sw["terms"] == pytest.approx([1 / 8 + 1 / (9 * n) + 1 / n for n in (1, 2, 4)])
    assert sw["samples"][2].shape == (6, 2, 2)
    f = fit.fit_sweep(sw, n_boot=20)
    y = [np.log((k * k).mean() / k.mean() ** 2) for k in (sw["samples"][n][:, 0, 0] for n in (1, 2, 4))]
    assert f["alpha"] == pytest.approx(np.polyfit(sw["terms"], y, 1)[0], rel=1e-10)
    # the generic path and the batched fast path agree draw by draw when they draw the same seeds
    g = torch.Generator().manual_seed(sweeps.width_seed(1, 2))
    seeds = [int(torch.randint(0, 2**62, (1,), generator=g)) for _ in range(6)]
    fast = B.bottleneck_ntk(B.BottleneckDraws(2, seeds, v, n_in=8), x).numpy()
    np.testing.assert_allclose(sw["samples"][2], sweeps._round32(fast), rtol=1e-5)


def readout_by_hand(kind, n_out, s, seed):
    """The read-outs of the block, from their definitions (unit norm)."""
    if kind == "mean":
        return torch.full((n_out, s, s), 1 / math.sqrt(n_out * s * s))
    if kind == "center":
        v = torch.zeros(n_out, s, s)
        v[0, s // 2, s // 2] = 1.0
        return v
    g = torch.randn(n_out, s, s, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (g / g.norm()).float()


@pytest.mark.parametrize(
    "readout, post_relu, kind",
    [
        ("mean", False, "gaussian"),
        ("center", False, "gaussian"),
        ("random", False, "gaussian"),
        ("mean", True, "constant"),
    ],
)
def test_block_sweep_options_and_both_entries_are_the_standalone_blocks(readout, post_relu, kind):
    """Every read-out (and the post ReLU, a constant input) reaches the samples: they are the naive
    autograd NTKs of standalone blocks built with the read-out and inputs written out here; each
    entry's fit is the least-squares fit of that entry (diag K(x1, x1), offdiag K(x1, x2))."""
    n_in, s, corr, widths, trials = 8, 3, 0.3, (3, 5), 3
    sw = sweeps.module_sweep(
        "bottleneck",
        widths,
        trials,
        seed=5,
        n_in=n_in,
        spatial=s,
        readout=readout,
        post_relu=post_relu,
        input=kind,
        corr=corr,
        input_seed=4,
    )
    g = torch.randn(
        (3, n_in) + ((s, s) if kind == "gaussian" else (1, 1)),
        generator=torch.Generator().manual_seed(4),
        dtype=torch.float64,
    )
    x = (math.sqrt(corr) * g[:1] + math.sqrt(1 - corr) * g[1:]).expand(2, n_in, s, s).float()
    v = readout_by_hand(readout, n_in, s, 4)
    ks = {}
    for n in widths:
        seeds = torch.randint(0, 2**62, (trials,), generator=torch.Generator().manual_seed(sweeps.width_seed(5, n)))
        ks[n] = (
            torch.stack(
                [
                    ntk.empirical_ntk(
                        B.Bottleneck(n, v, n_in=n_in, post_relu=post_relu, seed=int(t)), x, method="naive"
                    )
                    for t in seeds
                ]
            )
            .double()
            .numpy()
        )
        np.testing.assert_allclose(sw["samples"][n], ks[n], rtol=2e-5, atol=1e-7)
    res = fit.sweep_result(sw, entry="offdiag", n_boot=20)
    terms = [1 / n_in + 1 / (9 * n) + 1 / n for n in widths]
    for entry, (i, j) in (("diag", (0, 0)), ("offdiag", (0, 1))):
        k = [ks[n][:, i, j] for n in widths]
        y = [math.log((e * e).mean() / e.mean() ** 2) for e in k]
        assert res["fits"][entry]["mean"] == pytest.approx([e.mean() for e in k], rel=1e-5)
        assert res["fits"][entry]["alpha"] == pytest.approx(np.polyfit(terms, y, 1)[0], rel=1e-3, abs=1e-4)
    assert res["entry"] == "offdiag" and res["alpha"] == res["fits"]["offdiag"]["alpha"]
    assert sw["terms"] == pytest.approx(terms)


def test_alpha_interval():
    step = lambda a: 10 if 1.3 <= a < 1.9 else 9
    lo, hi = search.alpha_interval(step, 1.6, 0.5, 5.0, tol=1e-4)
    assert lo == pytest.approx(1.3, rel=1e-3) and hi == pytest.approx(1.9, rel=1e-3)
    assert search.alpha_interval(lambda a: 0, 1.0, 0.5, 2.0) == (0.5, 2.0)


def test_cli_fit_alpha_writes_the_store(tmp_path, monkeypatch, capsys):
    from cepaper import cli
    from cepaper.book import results

    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    assert (
        cli.main(
            ["fit-alpha", "--module", "bottleneck", "--trials", "6", "--widths", "4", "1", "2", "--seed", "3", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert {"alpha", "alpha_ci", "C", "widths", "trials", "seconds"} <= set(out)
    assert out["widths"] == [1, 2, 4] and out["trials"] == 6
    record = results.load("alpha", "cli", "fit_bottleneck")
    assert record["data"]["alpha"] == out["alpha"] and len(record["data"]["alpha_ci"]) == 2
    assert record["provenance"]["seed"] == 3
    for bad, message in (
        (["--widths", "0", "2"], "argument --widths: must be an integer >= 1, got '0'"),
        (["--trials", "1"], "argument --trials: must be an integer >= 2"),
        (["--widths", "2", "x"], "argument --widths: must be an integer >= 1, got 'x'"),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            cli.main(["fit-alpha", "--module", "mlp"] + bad)
        assert e.value.code == 2
        assert message in capsys.readouterr().err


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 0"):
        fit.measure_alpha("mlp", widths=(0, 4), trials=4)
    with pytest.raises(ValueError, match="trials must be >= 2"):
        fit.measure_alpha("mlp", widths=(2, 4), trials=1)
    with pytest.raises(ValueError, match="module must be one of"):
        fit.measure_alpha("resnet", widths=(2, 4), trials=4)
    with pytest.raises(ValueError, match="entry must be one of"):
        fit.measure_alpha("mlp", widths=(2, 4), trials=4, entry="trace")
    with pytest.raises(ValueError, match="unknown option"):
        fit.measure_alpha("mlp", widths=(2, 4), trials=4, spatial=8)
    with pytest.raises(ValueError, match="distinct"):
        sweeps.check_widths((4, 4))
    with pytest.raises(ValueError, match="layers must be one of all, hidden, got 'first'"):
        equations.sum_inv_fan_in((4, 8), layers="first")
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="no weight layers"):
        sweeps.custom_sweep(lambda n, g: nn.Sequential(nn.ReLU()), x, (1, 2), trials=3)
    with pytest.raises(ValueError, match="one scalar per input"):
        sweeps.custom_sweep(lambda n, g: nn.Linear(4, n), x, (2, 3), trials=3)
    with pytest.raises(ValueError, match="E\\[K\\] != 0"):
        fit.fit_alpha([1.0, 0.5], [np.zeros(5), np.zeros(5)])
    with pytest.raises(ValueError, match="trials >= 2"):
        fit.fit_alpha([1.0, 0.5], [np.ones(1), np.ones(5)])
    with pytest.raises(ValueError, match="n_boot must be an integer >= 1, got 0"):
        fit.fit_alpha([1.0, 0.5], [np.r_[1.0, 2.0], np.r_[1.0, 3.0]], n_boot=0)
    with pytest.raises(ValueError, match="one entry per width"):
        fit.fit_alpha([1.0, 0.5], [np.r_[1.0, 2.0]] * 3)
    for terms in ([0.0, 0.5], [-1.0, 0.5], [math.nan, 0.5]):
        with pytest.raises(ValueError, match="terms must be finite sums of inverse fan-ins > 0"):
            fit.fit_alpha(terms, [np.r_[1.0, 2.0], np.r_[1.0, 3.0]])


def test_refit_of_stored_moments_is_the_fit_and_its_bootstrap():
    """The refit from a fit's stored per-width log ratios gives the same alpha on every width, and its
    delta-method interval agrees with the bootstrap's; on a subset it is the fit on that subset."""
    terms = [0.3 / n + 0.01 for n in (1, 2, 3, 4, 6, 8, 12, 16)]  # light tails, as the block's draws
    samples = fit.synthetic_samples(1.7, terms, 2000, seed=3)
    full = fit.fit_alpha(terms, samples, n_boot=400)
    stored = dict(full, widths=[1, 2, 3, 4, 6, 8, 12, 16])
    r = fit.refit(stored)
    assert r["alpha"] == pytest.approx(full["alpha"], rel=1e-12)
    assert r["se"] == pytest.approx(full["alpha_se"], rel=0.2)
    assert r["lo"] == pytest.approx(full["alpha_ci"][0], abs=0.5 * r["se"])
    assert r["hi"] == pytest.approx(full["alpha_ci"][1], abs=0.5 * r["se"])
    sub = fit.refit(stored, [2, 4, 8, 16], intercept=False)
    direct = fit.fit_alpha(
        [terms[j] for j in (1, 3, 5, 7)], [samples[j] for j in (1, 3, 5, 7)], intercept=False, n_boot=50
    )
    assert sub["alpha"] == pytest.approx(direct["alpha"], rel=1e-12) and sub["intercept"] == 0.0
    assert sub["widths"] == [2, 4, 8, 16]
    with pytest.raises(ValueError, match=r"widths \[5\] are not in the fit"):
        fit.refit(stored, [2, 5])
    with pytest.raises(ValueError, match="need two widths"):
        fit.refit(stored, [2])
