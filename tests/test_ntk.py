"""Empirical NTK paths against naive autograd; ensemble NTK (Eq. 4); Monte Carlo moments."""

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from cepaper import montecarlo, ntk, stats
from cepaper.models.mlp import CollegialMLP
from cepaper.sections import lemma1

F64 = torch.float64


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def inputs(n, d, seed, dtype=F64):
    return torch.randn(n, d, generator=gen(seed), dtype=dtype)


class ConvNet(nn.Module):
    """A small scalar-output conv net with grouped convolutions, biases and a BatchNorm (eval)."""

    def __init__(self, groups=2, dtype=F64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(4, 8, 3, padding=1, groups=groups),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, groups=4, bias=False),
            nn.BatchNorm2d(8),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(8 * 2 * 2, 1),
        )
        self.to(dtype)
        self.eval()

    def forward(self, x):
        return self.body(x)  # (N, 1)


# ------------------------------------------------------------------------------ paths vs naive


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("widths", [(7,), (5, 9, 4)])
@pytest.mark.parametrize("two", [False, True])
def test_mlp_paths_match_naive_float64(bias, m, widths, two):
    model = CollegialMLP(3, widths, m=m, bias=bias, generator=gen(m + len(widths)), dtype=F64)
    x1, x2 = inputs(6, 3, 1), (inputs(4, 3, 2) if two else None)
    ref = ntk.naive_ntk(model, x1, x2)
    assert ref.shape == (6, 4 if two else 6)
    for method in ("auto", "structured", "jacobian"):
        assert rel_err(ntk.empirical_ntk(model, x1, x2, method=method), ref) <= 1e-10, method


def test_mlp_paths_match_naive_float32():
    model = CollegialMLP(2, (32, 32, 32), m=2, generator=gen(3))
    x = inputs(10, 2, 4, torch.float32)
    ref = ntk.naive_ntk(model.double(), x.double())
    model = model.float()
    for method in ("structured", "jacobian", "naive"):
        k = ntk.empirical_ntk(model, x, method=method)
        assert k.dtype == torch.float32 and rel_err(k.double(), ref) <= 1e-5, method


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_conv_net_with_groups_matches_naive(groups):
    torch.manual_seed(groups)
    model = ConvNet(groups)
    x1, x2 = torch.randn(5, 4, 5, 5, dtype=F64), torch.randn(3, 4, 5, 5, dtype=F64)
    for a, b in ((x1, None), (x1, x2)):
        ref = ntk.naive_ntk(model, a, b)
        k = ntk.empirical_ntk(model, a, b)
        assert rel_err(k, ref) <= 1e-10
    assert torch.linalg.eigvalsh(ntk.empirical_ntk(model, x1)).min() > -1e-10
    ref = ntk.naive_ntk(model, x1, x2)
    k32 = ntk.empirical_ntk(model.float(), x1.float(), x2.float())
    assert k32.dtype == torch.float32 and rel_err(k32.double(), ref) <= 1e-5


def test_frozen_parameters_do_not_count():
    torch.manual_seed(0)
    model = ConvNet(2)
    model.body[0].weight.requires_grad_(False)
    x = torch.randn(4, 4, 5, 5, dtype=F64)
    assert rel_err(ntk.empirical_ntk(model, x), ntk.naive_ntk(model, x)) <= 1e-10


def test_naive_is_the_gradient_gram():
    # Independent of every library path: K[i, j] = <grad f(x_i), grad f(x_j)> for a linear model.
    model = nn.Linear(3, 1, bias=False).double()
    x = inputs(4, 3, 5)
    torch.testing.assert_close(ntk.naive_ntk(model, x), x @ x.T)
    torch.testing.assert_close(ntk.empirical_ntk(model, x), x @ x.T)


# ---------------------------------------------------------------------------- ensemble, Eq. 4


def test_ensemble_ntk_is_mean_of_members():
    model = CollegialMLP(2, (6, 6), m=5, generator=gen(8), dtype=F64)
    x1, x2 = inputs(7, 2, 9), inputs(3, 2, 10)
    members = ntk.member_ntk(model, x1, x2)
    assert members.shape == (5, 7, 3)
    # The NTK of F_e = m^{-1/2} sum_j f_j w.r.t. all of Theta, by torch.func, is (1/m) sum_j K_n(theta_j).
    torch.testing.assert_close(ntk.jacobian_ntk(model, x1, x2), ntk.ensemble_ntk(members), rtol=1e-10, atol=0)
    for j in range(5):
        one = CollegialMLP(2, (6, 6), m=1, dtype=F64)
        with torch.no_grad():
            for w1, w in zip(one.weights, model.weights):
                w1.copy_(w[j : j + 1])
        torch.testing.assert_close(ntk.naive_ntk(one, x1, x2), members[j], rtol=1e-10, atol=0)


def test_entries_select_from_the_full_matrix():
    model = CollegialMLP(2, (5, 8), m=3, bias=True, generator=gen(11), dtype=F64)
    x1, x2 = inputs(6, 2, 12), inputs(6, 2, 13)
    full = ntk.member_ntk(model, x1, x2)
    rows, cols = [0, 5, 2, 2], [1, 3, 0, 2]
    torch.testing.assert_close(ntk.member_ntk(model, x1, x2, entries=(rows, cols)), full[:, rows, cols])
    torch.testing.assert_close(ntk.member_ntk(model, x1, x2, entries="diag"), full.diagonal(dim1=1, dim2=2))
    gamma, x, ent = lemma1.circle_inputs(9)
    k = ntk.member_ntk(CollegialMLP(2, 8, m=2, dtype=F64), x.double())
    assert gamma.shape == (9,) and x.shape == (10, 2) and torch.allclose(x.norm(dim=1), torch.ones(10))
    assert ent[0].tolist() == list(range(1, 10)) + [0] * 9 and ent[1].tolist() == list(range(1, 10)) * 2
    assert k[:, ent[0], ent[1]].shape == (2, 18)


def test_ensemble_variance_is_member_variance_over_m():
    """Var(K_e) = Var(K_n)/m (Eq. 11) for ensembles drawn as whole CollegialMLPs, within MC error."""
    x = inputs(2, 2, 14, torch.float32)
    m = 4

    def ensembles(t, g):
        model = CollegialMLP(2, 16, depth=2, m=m * t, generator=g)
        return ntk.member_ntk(model, x).reshape(t, m, 2, 2).mean(1)

    e = montecarlo.mc_moments(ensembles, 3000, chunk=500, seed=1)
    one = montecarlo.mc_moments(montecarlo.mlp_ntk_sampler(x, widths=16, depth=2), 3000, chunk=500, seed=2)
    z = (e.var - one.var / m) / (e.var_se**2 + (one.var_se / m) ** 2).sqrt()
    assert z.abs().max() < 4, z
    torch.testing.assert_close(e.mean, one.mean, atol=4 * (e.mean_se + one.mean_se).max().item(), rtol=0)


# ------------------------------------------------------------------------------- Monte Carlo


def test_moments_match_numpy():
    rs = np.random.default_rng(0)
    s = rs.gamma(2.0, size=(500, 3)) + 10.0
    mo = montecarlo.moments(torch.tensor(s))
    t = len(s)
    var = s.var(0, ddof=1)
    c4 = ((s - s.mean(0)) ** 4).mean(0)
    np.testing.assert_allclose(mo.mean.numpy(), s.mean(0), rtol=1e-12)
    np.testing.assert_allclose(mo.var.numpy(), var, rtol=1e-10)
    np.testing.assert_allclose(mo.second.numpy(), (s**2).mean(0), rtol=1e-12)
    np.testing.assert_allclose(mo.mean_se.numpy(), np.sqrt(var / t), rtol=1e-10)
    np.testing.assert_allclose(mo.var_se.numpy(), np.sqrt((c4 - (t - 3) / (t - 1) * var**2) / t), rtol=1e-8)
    np.testing.assert_allclose(mo.second_se.numpy(), (s**2).std(0, ddof=1) / np.sqrt(t), rtol=1e-8)
    assert mo.draws == 500 and set(mo.as_dict()) == set(montecarlo.Moments._fields)
    assert torch.equal(mo.cpu().var, mo.var) and mo.cpu().draws == 500


def test_standard_errors_are_calibrated():
    # Normal draws: Var(s^2) = 2 sigma^4 / (T - 1); the estimated var_se must agree.
    s = torch.randn(20000, 4, generator=gen(3), dtype=F64) * 3.0
    mo = montecarlo.moments(s)
    torch.testing.assert_close(mo.var_se, torch.full((4,), 9.0 * math.sqrt(2 / 19999), dtype=F64), rtol=0.05, atol=0)
    assert ((mo.var - 9.0).abs() < 4 * mo.var_se).all()


def test_float32_samples_accumulate_in_float64():
    # A large offset and a tiny spread: naive float32 sums would lose the variance entirely.
    s = (1000.0 + 1e-3 * torch.randn(4096, 2, generator=gen(4))).float()
    exact = s.double().var(0)

    def sample(t, g, state={"i": 0}):  # noqa: B006 (a counter kept across calls, on purpose)
        out = s[state["i"] : state["i"] + t]
        state["i"] += t
        return out

    mo = montecarlo.mc_moments(sample, 4096, chunk=512)
    torch.testing.assert_close(mo.var, exact, rtol=1e-6, atol=0)
    assert mo.mean.dtype == F64


def test_mc_is_seeded_chunked_and_consistent():
    x = inputs(3, 2, 5, torch.float32)
    sampler = montecarlo.mlp_ntk_sampler(x, widths=8, depth=2, entries="diag")
    a = montecarlo.mc_samples(sampler, 100, chunk=32, seed=7)
    assert a.shape == (100, 3) and a.dtype == torch.float32
    assert torch.equal(a, montecarlo.mc_samples(sampler, 100, chunk=32, seed=7))
    assert not torch.equal(a, montecarlo.mc_samples(sampler, 100, chunk=32, seed=8))
    mo, ref = montecarlo.mc_moments(sampler, 100, chunk=32, seed=7), montecarlo.moments(a)
    for f in ("mean", "var", "second", "mean_se", "var_se", "second_se"):
        torch.testing.assert_close(getattr(mo, f), getattr(ref, f), rtol=1e-9, atol=1e-12)
    # The sampler's draws are the weights of a CollegialMLP drawn from the same generator state.
    g = gen(7)
    first = ntk.member_ntk(CollegialMLP(2, 8, depth=2, m=32, generator=g, streams=2), x, entries="diag")
    assert torch.equal(a[:32], first)
    # about 2^23 weights per chunk, at most 4096 draws: 2 * 8 + 8 * 8 + 8 * 1 = 88 weights per draw
    assert sampler.default_chunk == 4096
    assert montecarlo.mlp_ntk_sampler(inputs(2, 300, 1), widths=1000, depth=4).default_chunk == 2**23 // (
        300_000 + 3 * 10**6 + 1000
    )
    assert montecarlo.mlp_ntk_sampler(inputs(2, 3000, 1), widths=3000, depth=2).default_chunk == 1


def test_module_sampler_loop_matches_batched_sampler():
    x = inputs(3, 2, 6, torch.float32)
    loop = montecarlo.module_ntk_sampler(lambda g: CollegialMLP(2, 8, depth=2, generator=g), x, entries="diag")
    batched = montecarlo.mlp_ntk_sampler(x, widths=8, depth=2, entries="diag")
    # m = 1 draws one member at a time: the loop and a batch of one agree draw for draw.
    torch.testing.assert_close(
        montecarlo.mc_samples(loop, 5, chunk=5, seed=3), montecarlo.mc_samples(batched, 5, chunk=1, seed=3)
    )


@pytest.mark.parametrize(
    "widths, width_draws, z_max, message",
    [
        ([8, 16, 8], [64, 64, 64], 5.0, r"widths must be distinct, got 8 more than once in \[8, 16, 8\]"),
        ([8, 64], [64, 64], 5.0, r"widths must not hold n = 64"),
        ([], [], 5.0, r"widths must be a non-empty list"),
        ([8, 0], [64, 64], 5.0, r"widths\[1\] must be an integer >= 1, got 0"),
        ([8, 16], [64], 5.0, r"width_draws must hold one number of draws per width \(2: \[8, 16\]\), got \[64\]"),
        ([8, 16], [64, 64, 64], 5.0, r"width_draws must hold one number of draws per width"),
        ([8, 16], [64, 1], 5.0, r"width_draws must be >= 2 \(a standard error needs two draws\), got 1 at width 16"),
        ([8, 16], [64, 64], -1.0, r"z_max must be a finite number > 0, got -1.0"),
        ([8, 16], [64, 64], float("nan"), r"z_max must be a finite number > 0"),
    ],
)
def test_lemma1_parameters_are_checked(widths, width_draws, z_max, message):
    """Issue: duplicate widths, width_draws of another length (zip cut it short) and a negative z_max
    ran on; each is a ValueError naming the parameter."""
    with pytest.raises(ValueError, match=message):
        lemma1.check_params(64, widths, width_draws, z_max)
    assert lemma1.check_params(64, [8, 256], (16, 2), 3) == ([8, 256], [16, 2], 3.0)


def test_running_ensemble_and_grouped_variance():
    s = torch.randn(120, 3, generator=gen(9), dtype=F64)
    r = lemma1.running_ensemble(s)
    torch.testing.assert_close(r[9], s[:10].mean(0))
    ev = lemma1.ensemble_variance(s, [1, 4, 10])
    torch.testing.assert_close(ev["var"][1], s.reshape(30, 4, 3).mean(1).var(0))
    assert ev["groups"].tolist() == [120, 30, 12]


def test_variance_slope_detects_the_one_over_m_law():
    iid = torch.randn(4096, 8, generator=gen(10), dtype=F64) * 2 + 5
    fit = lemma1.variance_slope(iid, [1, 2, 4, 8, 16, 32], blocks=16)
    assert fit["lo"] <= -1 <= fit["hi"] and abs(fit["slope"] + 1) < 0.1 and fit["se"] < 0.05
    assert fit["m"] == [1, 2, 4, 8, 16, 32] and len(fit["var_se"]) == 6
    # Correlated "members" (each value repeated 8 times): no 1/m decay up to m = 8.
    rep = iid[:512].repeat_interleave(8, 0)
    bad = lemma1.variance_slope(rep, [1, 2, 4, 8], blocks=16)
    assert not bad["lo"] <= -1 <= bad["hi"] and bad["slope"] > -0.2


def np_variance_slope(s, ms, blocks):
    """Eq. 11's slope written out in numpy for each row of ``s (R, T)``: weighted least squares of
    ``log Var`` of the means of consecutive groups of ``m`` on ``log m``, weights ``groups - 1``."""
    block = s.shape[1] // blocks // math.lcm(*ms) * math.lcm(*ms)
    x, logv, w = np.log(ms), [], []
    for m in ms:
        groups = blocks * block // m
        logv.append(np.log(s[:, : groups * m].reshape(len(s), groups, m).mean(-1).var(-1, ddof=1)))
        w.append(groups - 1.0)
    return np.polyfit(x, np.stack(logv), 1, w=np.sqrt(w))[0]


@functools.cache
def slope_sd(t, ms, blocks):
    """The sd of the slope over 20000 data sets of ``t`` i.i.d. normal members."""
    return np.concatenate(
        [np_variance_slope(np.random.default_rng([5, i]).standard_normal((5000, t)), ms, blocks) for i in range(4)]
    ).std(ddof=1)


def jackknife_calibration(reps=200, t=1024, ms=(1, 2, 4, 8), blocks=16):
    """Mean jackknife ``se`` of :func:`lemma1.variance_slope` over the slope's sd (:func:`slope_sd`), from
    ``reps`` data sets; and the interval's half-width over ``se``."""
    sd = slope_sd(t, ms, blocks)
    data = np.random.default_rng(6).standard_normal((reps, t))
    fits = [lemma1.variance_slope(torch.from_numpy(s), list(ms), blocks) for s in data]
    np.testing.assert_allclose([f["slope"] for f in fits], np_variance_slope(data, ms, blocks), rtol=1e-10)
    return np.mean([f["se"] for f in fits]) / sd, np.mean([(f["hi"] - f["lo"]) / 2 / f["se"] for f in fits])


def test_jackknife_se_is_calibrated():
    """The jackknife se of the slope matches the slope's sd over data sets (measured 0.98; 200
    replicates know the ratio to about 2%), and the interval is slope +- t_15(0.975) se = 2.131 se."""
    se_ratio, half_width = jackknife_calibration()
    assert 0.9 < se_ratio < 1.1, se_ratio
    assert half_width == pytest.approx(2.1314, abs=1e-3)


def test_jackknife_calibration_detects_a_missing_factor(plant):
    """Without the (blocks - 1) factor of the jackknife variance, se is sqrt(15) = 3.9 times too small."""
    plant(lemma1, "variance_slope", "((blocks - 1) / blocks * ", "(1 / blocks * ")
    assert jackknife_calibration(reps=50)[0] < 0.5


def test_t_quantile_and_inverse_width_fit():
    assert stats.t_quantile(0.975, 15) == pytest.approx(2.1314, abs=1e-3)
    assert stats.t_quantile(0.95, 10) == pytest.approx(1.8125, abs=1e-3)
    assert stats.t_quantile(0.975, 1000) == pytest.approx(1.9623, abs=1e-3)
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-3)  # few jackknife blocks
    assert stats.t_quantile(0.995, 2) == pytest.approx(9.9248, abs=1e-3)
    widths = [8, 16, 64]
    c_true = torch.tensor([0.5, -1.0], dtype=F64)
    dev = c_true / torch.tensor(widths, dtype=F64)[:, None]
    se = torch.full_like(dev, 0.01)
    c, c_se = lemma1.inverse_width_fit(widths, dev, se)
    torch.testing.assert_close(c, c_true)
    torch.testing.assert_close(c_se, torch.full((2,), 0.01 / math.sqrt(8**-2 + 16**-2 + 64**-2), dtype=F64))


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: ntk.empirical_ntk(nn.Linear(3, 2), torch.randn(4, 3)), ValueError, "one scalar per input"),
        (lambda: ntk.naive_ntk(nn.Linear(3, 2), torch.randn(4, 3)), ValueError, "one scalar per input"),
        (
            lambda: ntk.empirical_ntk(nn.Linear(3, 1), torch.randn(4, 3), torch.randn(2, 5)),
            ValueError,
            r"x2 must be a tensor of shape \(N2, 3\)",
        ),
        (lambda: ntk.empirical_ntk(nn.Linear(3, 1), torch.randn(0, 3)), ValueError, "N1 >= 1"),
        (lambda: ntk.empirical_ntk(CollegialMLP(3, 4), torch.randn(4, 2)), ValueError, r"x1 must have shape \(N, 3\)"),
        (
            lambda: ntk.empirical_ntk(nn.Linear(3, 1), torch.randn(4, 3), method="fast"),
            ValueError,
            "method must be one of",
        ),
        (
            lambda: ntk.empirical_ntk(nn.Linear(3, 1), torch.randn(4, 3), method="structured"),
            ValueError,
            "CollegialMLP",
        ),
        (lambda: ntk.member_ntk(nn.Linear(3, 1), torch.randn(4, 3)), TypeError, "model must be a CollegialMLP"),
        (lambda: ntk.member_ntk(CollegialMLP(2, 4), torch.randn(4, 2), entries="rows"), ValueError, "entries must be"),
        (
            lambda: ntk.member_ntk(CollegialMLP(2, 4), torch.randn(4, 2), entries=([0, 4], [0, 1])),
            ValueError,
            r"entries must index rows in \[0, 4\)",
        ),
        (
            lambda: montecarlo.mc_moments(montecarlo.mlp_ntk_sampler(torch.randn(2, 2)), 0),
            ValueError,
            "draws must be an integer >= 1, got 0",
        ),
        (
            lambda: montecarlo.mc_samples(montecarlo.mlp_ntk_sampler(torch.randn(2, 2)), 5, chunk=0),
            ValueError,
            "chunk must be",
        ),
        (
            lambda: montecarlo.mlp_ntk_sampler(torch.randn(2, 2), widths=0),
            ValueError,
            "width must be an integer >= 1, got 0",
        ),
        (lambda: montecarlo.moments(torch.zeros(0, 3)), ValueError, "T >= 1"),
        (lambda: lemma1.ensemble_variance(torch.randn(10, 2), [6]), ValueError, "at least 2 groups"),
        (lambda: lemma1.variance_slope(torch.randn(10, 2), [1, 2], blocks=8), ValueError, "at least blocks"),
        (lambda: lemma1.circle_inputs(1), ValueError, "n_gamma must be >= 2"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_structured_path_refuses_multi_output_models():
    model = CollegialMLP(3, 4, m=2, outputs=10)
    x = torch.randn(2, 3)
    for call in (lambda: ntk.member_ntk(model, x), lambda: ntk.empirical_ntk(model, x)):
        with pytest.raises(ValueError, match="outputs=1, got outputs=10"):
            call()
    with pytest.raises(ValueError, match=r"readout must have shape \(m, 1, n_L\)"):
        ntk.mlp_member_ntk(list(model.weights), model.scales, x)
    with pytest.raises(ValueError, match="one scalar per input"):
        ntk.empirical_ntk(model, x, method="jacobian")
