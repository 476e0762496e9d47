"""Algorithm 1: alpha recovered from synthetic data, Monte Carlo moments against a closed form,
fan-in sums as the design uses them, reproducibility, resumable sweeps, and bad input."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cepaper import fit, search
from cepaper.models import blocks as B


def test_log_grid():
    assert fit.log_grid() == (1, 2, 3, 4, 5, 6, 9, 13, 19, 28, 40, 58, 84, 122, 177, 256)
    g = fit.log_grid(2, 100, 7)
    assert len(set(g)) == 7 and g[0] == 2 and g[-1] == 100 and list(g) == sorted(g)
    with pytest.raises(ValueError, match="distinct widths"):
        fit.log_grid(1, 5, 6)


@pytest.mark.parametrize("intercept, a", [(True, 0.08), (False, 0.0)])
def test_alpha_recovered_from_synthetic_data(intercept, a):
    terms = [fit.bottleneck_term(n) for n in fit.log_grid(4, 256, 10)]
    samples = fit.synthetic_samples(1.6, terms, 4000, intercept=a, seed=3)
    f = fit.fit_alpha(terms, samples, intercept=intercept, n_boot=400, seed=1)
    lo, hi = f["alpha_ci"]
    assert lo < 1.6 < hi and hi - lo < 0.5
    assert f["alpha"] == pytest.approx(1.6, abs=0.15)
    assert f["intercept"] == pytest.approx(a, abs=0.03)
    assert not lo < 1.2 < hi                                   # the interval excludes a wrong alpha
    assert len(f["log_ratio"]) == len(f["log_ratio_lo"]) == len(terms)
    assert all(l <= y <= h for l, y, h in zip(f["log_ratio_lo"], f["log_ratio"], f["log_ratio_hi"]))
    curve = fit.fitted_curve(f)
    assert curve["ratio"][-1] == pytest.approx(math.exp(f["intercept"] + f["alpha"] * max(terms)))


def test_bootstrap_interval_covers_the_true_alpha():
    terms = [fit.bottleneck_term(n) for n in fit.log_grid(8, 256, 8)]
    hits = 0
    for seed in range(20):
        f = fit.fit_alpha(terms, fit.synthetic_samples(1.6, terms, 2000, seed=100 + seed), n_boot=200, seed=seed)
        hits += f["alpha_ci"][0] < 1.6 < f["alpha_ci"][1]
    assert hits >= 15                                          # P(hits <= 14) < 1e-3 at 95% coverage


def test_weighted_fit_and_C():
    terms = [fit.mlp_term(n) for n in (40, 64, 96, 128, 192, 256)]
    samples = fit.synthetic_samples(3.0, terms, 3000, mean=2.0, seed=5)
    f = fit.fit_alpha(terms, samples, weighted=True, intercept=False, n_boot=300)
    assert f["alpha_ci"][0] < 3.0 < f["alpha_ci"][1]
    # Var(K) = E[K]^2 (exp(alpha s) - 1) for these log-normals: C = E[K]^2 = 4
    assert f["C_ci"][0] < 4.0 < f["C_ci"][1]
    assert f["log_ratio_se"][0] > f["log_ratio_se"][-1] > 0


def test_second_moment_of_one_hidden_layer_matches_closed_form():
    """L = 2 weight layers: K(x, x) = (1/n) sum_i xi_i, i.i.d. xi with E xi = q, E xi^2 = 4 q^2, q = 2|x|^2/n_0,
    so E[K] = q and E[K^2] = q^2 (1 + 3/n) exactly; the Monte Carlo must agree within its error."""
    sw = fit.module_sweep("mlp", widths=(1, 3, 10), trials=20000, seed=4, depth=2, n_in=16)
    x = fit.mlp_inputs(16, 2, 0.5, 0, dtype=torch.float64)
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
        assert fit.bottleneck_term(n) == pytest.approx(search.Bottleneck().sum_inv_fan_in(n))
        assert fit.mlp_term(n, depth=6) == pytest.approx(search.MLP(784, 6).sum_inv_fan_in(n))
    assert fit.sum_inv_fan_in((256, 9, 1), "hidden") == pytest.approx(1 / 9 + 1)
    with pytest.raises(ValueError, match="no layer enters"):
        fit.sum_inv_fan_in((10,), "hidden")


def small_bottleneck(seed, **kw):
    return fit.measure_alpha("bottleneck", widths=(1, 2, 4, 8), trials=24, seed=seed, n_in=16, spatial=3,
                             n_boot=50, **kw)


def test_same_seed_same_alpha():
    a, b, c = small_bottleneck(3), small_bottleneck(3), small_bottleneck(4)
    assert a["alpha"] == b["alpha"] and a["alpha_ci"] == b["alpha_ci"] and a["C"] == b["C"]
    assert a["alpha"] != c["alpha"]
    assert set(a["fits"]) == {"diag", "offdiag"} and a["widths"] == [1, 2, 4, 8] and a["trials"] == 24
    json.dumps(a)                                             # JSON-able, ready for the results store


def test_sweep_resumes_from_checkpoint(tmp_path):
    opts = dict(n_in=16, spatial=3)
    full = fit.module_sweep("bottleneck", (1, 3, 5), 10, seed=2, **opts)
    calls = []

    def sampler(n):
        calls.append(n)
        if n == 5 and len(calls) == 3:
            raise KeyboardInterrupt                          # interrupted at the third width
        return fit._bottleneck_setup(fit.module_options("bottleneck", **opts))[0](n)

    chunk = lambda n: 256
    settings = {"module": "bottleneck", **fit.module_options("bottleneck", **opts)}
    with pytest.raises(KeyboardInterrupt):
        fit.ntk_sweep(sampler, (1, 3, 5), 10, 2, chunk, checkpoint=tmp_path, settings=settings)
    files = sorted(p.name for p in tmp_path.glob("*/*.json"))
    assert files == ["n0001.json", "n0003.json"]
    resumed = fit.ntk_sweep(sampler, (1, 3, 5), 10, 2, chunk, checkpoint=tmp_path, settings=settings)
    assert calls == [1, 3, 5, 5]                              # widths 1 and 3 were not recomputed
    for n in (1, 3, 5):
        np.testing.assert_array_equal(resumed[n], full["samples"][n])


def test_custom_module_sweep_reads_fan_ins():
    v = B.readout_vector("mean", 8, 3)
    x = B.block_inputs(8, 3, 2)

    def make(n, generator):
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        return B.Bottleneck(n, v, n_in=8, seed=seed)

    sw = fit.custom_sweep(make, x, (1, 2, 4), trials=6, seed=1)
    assert sw["terms"] == pytest.approx([fit.bottleneck_term(n, n_in=8) for n in (1, 2, 4)])
    sample = B.bottleneck_ntk_sampler(2, x, v, n_in=8)
    assert sw["samples"][2].shape == (6, 2, 2)
    f = fit.fit_sweep(sw, n_boot=20)
    assert np.isfinite(f["alpha"])
    # the generic path and the batched fast path agree draw by draw when they draw the same seeds
    g = torch.Generator().manual_seed(fit.width_seed(1, 2))
    seeds = [int(torch.randint(0, 2 ** 62, (1,), generator=g)) for _ in range(6)]
    fast = B.bottleneck_ntk(B.BottleneckDraws(2, seeds, v, n_in=8), x).numpy()
    np.testing.assert_allclose(sw["samples"][2], fit._round32(fast), rtol=1e-5)
    assert callable(sample)


def test_alpha_interval():
    step = lambda a: 10 if 1.3 <= a < 1.9 else 9
    lo, hi = fit.alpha_interval(step, 1.6, 0.5, 5.0, tol=1e-4)
    assert lo == pytest.approx(1.3, rel=1e-3) and hi == pytest.approx(1.9, rel=1e-3)
    assert fit.alpha_interval(lambda a: 0, 1.0, 0.5, 2.0) == (0.5, 2.0)


def test_cli_fit_alpha_writes_the_store(tmp_path, monkeypatch, capsys):
    from cepaper import cli, results
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    assert cli.main(["fit-alpha", "--module", "bottleneck", "--trials", "6", "--widths", "4", "1", "2",
                     "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"alpha", "alpha_ci", "C", "widths", "trials", "seconds"} <= set(out)
    assert out["widths"] == [1, 2, 4] and out["trials"] == 6
    record = results.load("alpha", "cli", "fit_bottleneck")
    assert record["data"]["alpha"] == out["alpha"] and len(record["data"]["alpha_ci"]) == 2
    assert record["provenance"]["seed"] == 3
    for bad in (["--widths", "0", "2"], ["--trials", "1"], ["--widths", "2", "x"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["fit-alpha", "--module", "mlp"] + bad)
        assert e.value.code == 2
    assert "width must be an integer >= 1, got 0" in capsys.readouterr().err


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
        fit.check_widths((4, 4))
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="no weight layers"):
        fit.custom_sweep(lambda n, g: nn.Sequential(nn.ReLU()), x, (1, 2), trials=3)
    with pytest.raises(ValueError, match="one scalar per input"):
        fit.custom_sweep(lambda n, g: nn.Linear(4, n), x, (2, 3), trials=3)
    with pytest.raises(ValueError, match="E\\[K\\] != 0"):
        fit.fit_alpha([1.0, 0.5], [np.zeros(5), np.zeros(5)])
    with pytest.raises(ValueError, match="trials >= 2"):
        fit.fit_alpha([1.0, 0.5], [np.ones(1), np.ones(5)])
