"""Tests of cepaper.sections.theorem1_flow and of the analytic activations of CollegialMLP."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from cepaper import ntk
from cepaper.models.mlp import ACTIVATIONS, CollegialMLP
from cepaper.sections import theorem1_flow as flow


@pytest.mark.parametrize("activation", ["gelu", "softplus", "tanh"])
def test_analytic_activation_is_eq3_with_another_phi(activation):
    g = torch.Generator().manual_seed(0)
    model = CollegialMLP(5, (4, 3), m=2, activation=activation, generator=g, dtype=torch.float64)
    x = torch.randn(6, 5, dtype=torch.float64, generator=g)
    phi = {"gelu": F.gelu, "softplus": F.softplus, "tanh": torch.tanh}[activation]
    w = [p.detach() for p in model.weights]
    out = []
    for j in range(2):  # member by member, Eq. 3 written out
        h = phi(math.sqrt(2 / 5) * x @ w[0][j].T)
        h = phi(math.sqrt(2 / 4) * h @ w[1][j].T)
        out.append(math.sqrt(1 / 3) * h @ w[2][j].T)
    torch.testing.assert_close(model(x), torch.stack(out).sum(0).squeeze(-1) / math.sqrt(2))
    # the structured path is ReLU's alone: auto takes the jacobian path, which matches autograd
    torch.testing.assert_close(ntk.empirical_ntk(model, x), ntk.naive_ntk(model, x), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="structured path is the ReLU network"):
        ntk.member_ntk(model, x)
    relu = CollegialMLP(5, (4, 3), m=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert not torch.allclose(ntk.empirical_ntk(relu, x), ntk.empirical_ntk(model, x))


def test_unknown_activation_lists_the_declared_ones():
    with pytest.raises(ValueError, match="activation must be one of relu, gelu, softplus, tanh, got 'swish'"):
        CollegialMLP(3, 4, activation="swish")
    assert set(ACTIVATIONS) == {"relu", "gelu", "softplus", "tanh"}


def test_readings_declared_and_checked():
    assert flow.PRIMARY in flow.READINGS and all(r.why for r in flow.READINGS.values())
    assert flow.check_readings(["gd-gelu"]) == ["gd-gelu"]
    for bad in (["adam-relu"], []):
        with pytest.raises(ValueError, match="readings must be a non-empty list among gd-relu, sgd-relu, gd-gelu"):
            flow.check_readings(bad)


def test_schedule_keeps_the_training_time():
    assert flow.schedule("gd-relu", 400, 0.1, 256, 32) == (400, None)
    assert flow.schedule("sgd-relu", 400, 0.1, 256, 32) == (50, 32)  # 8 steps an epoch, 400 steps
    assert flow.schedule("sgd-relu", 40, 0.1, 100, 32) == (10, 32)  # 4 steps an epoch, the last one short
    with pytest.raises(ValueError, match=r"steps \(30\) must be a multiple of the 8 SGD steps"):
        flow.schedule("sgd-relu", 30, 0.1, 256, 32)


def test_grid_checks_its_values():
    g = flow.grid([8, 16, 32], [1, 2, 4], 8)
    assert g[g.fit == "n"][["m", "n"]].values.tolist() == [[1, 8], [1, 16], [1, 32]]
    assert g[g.fit == "m"][["m", "n"]].values.tolist() == [[1, 8], [2, 8], [4, 8]]
    with pytest.raises(ValueError, match="widths must hold at least 3 distinct values"):
        flow.grid([8, 8, 16], [1, 2, 4], 8)
    with pytest.raises(ValueError, match="ms must hold at least 3 distinct values"):
        flow.grid([8, 16, 32], [1, 2], 8)


def synthetic(exp_n, exp_m, rel=None, seeds=3, noise=0.02):
    """A change table with |K_T - K_0| = c n^exp_n (m = 1) and c' m^exp_m (n = 8), small noise."""
    rng = np.random.default_rng(0)
    configs = flow.grid([8, 16, 32, 64], [1, 2, 4, 8], 8)
    rows = []
    for m, n in {(int(a), int(b)) for a, b in zip(configs.m, configs.n)}:
        base = 0.5 * n**exp_n * m**exp_m
        for s in range(seeds):
            for entry in flow.ENTRIES:
                v = base * math.exp(noise * rng.standard_normal())
                r = (rel or {}).get((m, n), v)
                rows.append(dict(m=m, n=n, seed=s, entry=entry, abs_change=v, rel_change=r, reading="gd-relu"))
    return pd.DataFrame(rows), configs


def test_exponents_recover_planted_slopes_and_judge_both_targets():
    change, configs = synthetic(-0.5, -1.0, rel={(1, 8): 0.1})
    fits = flow.exponents(change, configs, max_rel_change=1.0)
    n = fits[(fits.fit == "n") & (fits.entry == "offdiag_mean")].iloc[0]
    m = fits[(fits.fit == "m") & (fits.entry == "offdiag_mean")].iloc[0]
    assert abs(n.slope + 0.5) < 0.02 and abs(m.slope + 1) < 0.02 and n.lo < -0.5 < n.hi
    v = flow.verdicts(fits).set_index(["fit", "entry"])
    assert v.loc[("n", "offdiag_mean"), "Theorem 1"] == "differs"
    assert v.loc[("n", "offdiag_mean"), "footnote 1"] == "reproduced"
    assert v.loc[("m", "offdiag_mean"), "Theorem 1"] == "reproduced"
    assert flow.summary(fits, "n") == "holds under 0 of 1 readings"
    assert flow.summary(fits, "n", target="footnote 1") == "holds under 1 of 1 readings"


def test_exponents_sentence_puts_each_exponent_beside_its_targets():
    """n^-0.5 and m^-1 planted: the exponent of n differs from Theorem 1's -1 and bears out footnote 1's -0.5,
    the exponent of m bears out -1; the sentence says each where it belongs."""
    change, configs = synthetic(-0.5, -1.0)
    text = flow.exponents_sentence(flow.exponents(change, configs, max_rel_change=1.0)).data
    assert text == (
        "**Exponent of n** (probe mean): against Theorem 1's −1 it holds under 0 of 1 readings; against "
        "footnote 1's −0.5 it holds under 1 of 1 readings. **Exponent of m**: against −1 it holds under 1 of 1 "
        "readings."
    )


def test_perturbative_rule_leaves_out_large_changes_and_says_when_too_few_remain():
    change, configs = synthetic(-1.0, -1.0)  # rel_change = abs_change = 0.5 n^-1 m^-1
    fits = flow.exponents(change, configs, max_rel_change=0.05)  # keeps n >= 16 (0.031), drops n = 8 (0.0625)
    n = fits[(fits.fit == "n") & (fits.entry == "offdiag")].iloc[0]
    assert n.used == [16, 32, 64] and n.excluded == [8] and n.points == 9
    m = fits[(fits.fit == "m") & (fits.entry == "offdiag")].iloc[0]  # at n = 8: 0.0625 / m < 0.05 for m >= 2
    assert m.used == [2, 4, 8] and m.excluded == [1]
    tight = flow.exponents(change, configs, max_rel_change=0.01)  # n = 64 alone: 0.0078
    n = tight[(tight.fit == "n") & (tight.entry == "offdiag_mean")].iloc[0]
    assert np.isnan(n.slope) and "too few for a slope" in n.note
    assert flow.verdicts(tight).set_index(["fit", "entry"]).loc[("n", "offdiag_mean"), "Theorem 1"] == "cannot tell"
    with pytest.raises(ValueError, match="max_rel_change must be > 0"):
        flow.exponents(change, configs, max_rel_change=0)


def test_train_runs_every_reading_at_its_schedule():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    configs = flow.grid([4, 6, 8], [1, 2, 3], 4)
    recs = flow.train(
        x,
        y,
        configs,
        [0],
        ["gd-relu", "sgd-relu", "gd-gelu"],
        steps=4,
        lr=0.1,
        batch_size=4,
        depth=2,
        n_probe=3,
        dtype=torch.float64,
    )
    assert set(recs) == {"gd-relu", "sgd-relu", "gd-gelu"}
    assert [r["epoch"][-1] for r in recs["gd-relu"]] == [4] * 5 and recs["sgd-relu"][0]["epoch"][-1] == 2
    # same weights at the start: the readings differ only in training
    assert recs["gd-relu"][0]["ntk"][0] == recs["sgd-relu"][0]["ntk"][0] != recs["gd-gelu"][0]["ntk"][0]
    fits = flow.exponents(flow.changes(recs), configs, max_rel_change=10)
    assert set(fits.reading) == set(recs) and fits.slope.notna().all()


def test_plot_draws_every_reading_with_its_fitted_line():
    import matplotlib

    matplotlib.use("Agg")
    change, configs = synthetic(-1.0, -1.0)  # relative change 0.5 / (mn): n = 8 and m = 1 left out at 0.05
    change = pd.concat([change, change.assign(reading="gd-gelu")], ignore_index=True)
    fits = flow.exponents(change, configs, max_rel_change=0.05)
    fig = flow.plot(change, fits, configs)
    left, right = fig.axes[:2]
    assert len(left.lines) == 2 * 3 and len(right.lines) == 2 * 3  # used, left out and the line, per reading
    line = left.lines[2]
    x, y = line.get_data()
    assert np.polyfit(np.log(x), np.log(y), 1)[0] == pytest.approx(fits.slope[0])
