"""Tests of cepaper.sections.theorem1: the Fig. 9 grid, the run cache, kernel changes and the log-log slope."""

import json
import math
import os

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from cepaper import data
from cepaper.models.mlp import CollegialMLP
from cepaper.sections import theorem1

matplotlib.use("Agg")


def toy(n=12, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, generator=g)


KW = dict(depth=2, epochs=3, lr=0.3, n_probe=3)


def test_mlp_params_counts_the_model():
    for n in (3, 10):
        model = CollegialMLP(784, n, m=1, depth=4)
        assert theorem1.mlp_params(n, depth=4) == sum(p.numel() for p in model.parameters())
    assert theorem1.mlp_params(100, 4) == 784 * 100 + 3 * 100**2 + 100


def test_grid_panels():
    g = theorem1.grid([4, 16], n_c=100, depth=4)
    a, b, c = (g[g.panel == p] for p in "abc")
    assert a.n.tolist() == [16, 256] and (a.m == 1).all()
    for d in (4, 16):
        pair = b[b.d == d].set_index("role")
        assert (pair.loc["baseline", ["m", "n"]].tolist(), pair.loc["ensemble", ["m", "n"]].tolist()) == (
            [1, d * d],
            [d, d],
        )
        assert pair.loc["baseline", "mn"] == pair.loc["ensemble", "mn"]
    ens = c[c.role == "ensemble"].set_index("d")
    base = c[c.role == "baseline"].set_index("d")
    assert (ens.n == 100).all() and 4 not in ens.index and 4 in base.index  # 16 < n_c: no m >= 1 matches
    m16 = ens.loc[16, "m"]
    assert m16 == round(base.loc[16, "params"] / theorem1.mlp_params(100, 4)) == 4
    assert abs(ens.loc[16, "params"] - base.loc[16, "params"]) <= theorem1.mlp_params(100, 4) / 2
    assert theorem1.grid([2], widths_a=[5, 7]).query("panel == 'a'").n.tolist() == [5, 7]
    with pytest.raises(ValueError, match="d must be an integer >= 1, got 0"):
        theorem1.grid([0])
    with pytest.raises(ValueError, match="ds and widths_a are both empty"):
        theorem1.grid([])
    with pytest.raises(ValueError, match="n_c must be an integer >= 1, got 0"):
        theorem1.grid([2], n_c=0)


def test_run_one_is_reproducible_and_lr_zero_moves_nothing():
    x, y = toy()
    r1, r2 = (theorem1.run_one(x, y, 2, 4, seed=7, **KW) for _ in range(2))
    assert r1 == r2
    assert theorem1.run_one(x, y, 2, 4, seed=8, **KW)["ntk"] != r1["ntk"]
    assert json.loads(json.dumps(r1)) == r1  # a plain JSON record
    r0 = theorem1.run_one(x, y, 2, 4, seed=7, **{**KW, "lr": 0.0})
    assert r0["ntk"][0] == r0["ntk"][-1] == r1["ntk"][0]
    assert (theorem1.changes([r0]).abs_change == 0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(m=0), "m must be an integer >= 1, got 0"),
        (dict(n=0), "n must be an integer >= 1, got 0"),
        (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
        (dict(lr=-1.0), "lr must be a finite number >= 0, got -1.0"),
        (dict(n_probe=1), r"n_probe must be in \[2, 12\]"),
    ],
)
def test_run_one_bad_input(kwargs, message):
    x, y = toy()
    args = {"m": 2, "n": 3, **KW, **kwargs}
    with pytest.raises(ValueError, match=message):
        theorem1.run_one(x, y, args.pop("m"), args.pop("n"), 0, **args)


def test_run_grid_caches_and_resumes(tmp_path, monkeypatch):
    x, y = toy()
    configs = pd.DataFrame({"m": [1, 2, 1], "n": [3, 2, 3]})  # (1, 3) twice: trained once per seed
    first = theorem1.train_grid(x, y, configs, [0, 1], cache=tmp_path, **KW)
    assert [(r["m"], r["n"], r["seed"]) for r in first] == [(1, 3, 0), (1, 3, 1), (2, 2, 0), (2, 2, 1)]
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 4 and not list(tmp_path.glob("*.pt"))
    calls = []
    real = theorem1.run_one
    monkeypatch.setattr(theorem1, "run_one", lambda *a, **k: calls.append(a[2:5]) or real(*a, **k))
    os.remove(files[0])  # an interrupted grid: one run missing
    again = theorem1.train_grid(x, y, configs, [0, 1], cache=tmp_path, **KW)
    assert again == first and len(calls) == 1
    theorem1.train_grid(x, y, configs, [0, 1], cache=tmp_path, **{**KW, "lr": 0.2})  # other settings
    assert len(calls) == 5
    theorem1.train_grid(x, y + 1, configs, [0], cache=tmp_path, **KW)  # other data
    assert len(calls) == 7
    with pytest.raises(ValueError, match="seeds must name at least one seed"):
        theorem1.train_grid(x, y, configs, [], **KW)


def fake_record(m, n, seed, k0, kt, epochs=(0, 5)):
    return {
        "m": m,
        "n": n,
        "seed": seed,
        "epoch": list(epochs),
        "loss": [1.0, 0.5],
        "ntk": [np.asarray(k0).tolist(), np.asarray(kt).tolist()],
    }


def test_changes_and_trajectories():
    k0 = np.array([[4.0, 2.0, -1.0], [2.0, 5.0, 1.0], [-1.0, 1.0, 3.0]])
    kt = k0 + np.array([[0.4, -0.5, 0.3], [-0.5, 1.0, 0.1], [0.3, 0.1, -0.6]])
    c = theorem1.changes([fake_record(2, 3, 0, k0, kt)]).set_index("entry")
    assert c.loc["offdiag", "abs_change"] == pytest.approx(0.5)
    assert c.loc["offdiag", "rel_change"] == pytest.approx(0.25)
    assert c.loc["diag", "abs_change"] == pytest.approx(0.4) and c.loc["diag", "k0"] == 4.0
    assert c.loc["offdiag_mean", "abs_change"] == pytest.approx((0.5 + 0.3 + 0.1) / 3)
    assert c.loc["offdiag_mean", "rel_change"] == pytest.approx(0.3 / (4 / 3))
    assert c.loc["diag_mean", "abs_change"] == pytest.approx((0.4 + 1.0 + 0.6) / 3)
    assert (c.mn == 6).all() and (c.lossT < c.loss0).all()
    t = theorem1.trajectories([fake_record(2, 3, 0, k0, kt)])
    assert t[t.entry == "offdiag"].abs_change.tolist() == pytest.approx([0.0, 0.5])
    assert t[t.entry == "offdiag"].epoch.tolist() == [0, 5]


@pytest.mark.parametrize(
    "p, dof, expected",
    [
        (0.975, 1, 12.7062),
        (0.975, 2, 4.3027),
        (0.975, 10, 2.2281),
        (0.95, 5, 2.0150),
        (0.975, 1000, 1.9623),
    ],
)
def test_t_quantile(p, dof, expected):
    assert theorem1.t_quantile(p, dof) == pytest.approx(expected, abs=2e-4)


def test_loglog_slope_exact_and_coverage():
    x = np.array([1.0, 2, 4, 8, 16])
    s = theorem1.loglog_slope(x, 3 * x**-1.0)
    assert s["slope"] == pytest.approx(-1) and s["hi"] - s["lo"] < 1e-6
    assert np.exp(s["intercept"]) == pytest.approx(3)
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        y = 2 * x**-0.7 * np.exp(rng.normal(0, 0.3, len(x)))
        f = theorem1.loglog_slope(x, y)
        covered += f["lo"] <= -0.7 <= f["hi"]
    assert 0.92 <= covered / 400 <= 0.98  # a 95% interval covers the truth about 95% of the time


@pytest.mark.parametrize(
    "x, y, message",
    [
        ([1, 2], [1, 2], "equal length >= 3"),
        ([1, 2, 3], [1, 2], "equal length >= 3"),
        ([1, 2, 0], [1, 2, 3], "must be > 0"),
        ([1, 2, 3], [1, -2, 3], "must be > 0"),
        ([2, 2, 2], [1, 2, 3], "two distinct values"),
    ],
)
def test_loglog_slope_bad_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        theorem1.loglog_slope(x, y)


def test_slopes_recover_an_exact_power_law():
    configs = theorem1.grid([2, 3, 4], n_c=5)
    pairs = configs[["m", "n"]].drop_duplicates()
    records = []
    for m, n in zip(pairs.m, pairs.n):
        for seed in (0, 1):
            k0 = np.array([[2.0, 1.0], [1.0, 2.0]])
            delta = 0.8 * (1 + 0.1 * seed) / (m * n)  # |Delta K| = C / (mn): Theorem 1 exactly
            records.append(fake_record(m, n, seed, k0, k0 + delta))
    fits = theorem1.slopes(theorem1.changes(records), configs)
    assert set(fits.fit) == {"all", "single", "ensemble_b", "width_c"}
    assert np.allclose(fits.slope, -1) and (fits.lo < -1).all() and (fits.hi > -1).all()
    # 8 distinct (m, n) x 2 seeds; 3 single models; 3 ensembles m = n = d; m = 2, 3 at n_c = 5 (d = 2:
    # d^2 = 4 < n_c, no integer m >= 1 matches, so no unmatched m = 1 point enters the width_c slope)
    assert fits.groupby("fit").points.first().to_dict() == {"all": 16, "single": 6, "ensemble_b": 6, "width_c": 4}
    points = theorem1.panel_table(configs, theorem1.changes(records), "offdiag")
    assert len(points) == len(configs) and (points.seeds == 2).all()
    row = points[(points.m == 1) & (points.n == 4)].iloc[0]
    assert row["mean"] == pytest.approx(0.8 * 1.05 / 4) and row["sem"] == pytest.approx(0.8 * 0.05 / 4)
    # the figures draw the runs' numbers: the mean over both seeds of |Delta K| is 0.8 * 1.05 / (mn), and
    # the fitted line through both seeds' points is their geometric mean 0.8 * sqrt(1.1) / (mn)
    mean_of = lambda mn: 0.8 * 1.05 / np.asarray(mn, dtype=float)
    (a,), (b_base, b_ens), (c_base, c_ens) = (
        [c.lines[0] for c in ax.containers] for ax in theorem1.plot_fig9(points).axes
    )
    assert list(a.get_xdata()) == [4, 9, 16] and a.get_ydata() == pytest.approx(mean_of([4, 9, 16]))
    assert list(b_ens.get_xdata()) == [2, 3, 4] and b_ens.get_ydata() == pytest.approx(mean_of([4, 9, 16]))
    assert list(c_base.get_xdata()) == [2, 3, 4] and c_base.get_ydata() == pytest.approx(mean_of([4, 9, 16]))
    assert list(c_ens.get_xdata()) == [3, 4] and c_ens.get_ydata() == pytest.approx(mean_of([2 * 5, 3 * 5]))
    runs = sorted((r["m"] * r["n"], 0.8 * (1 + 0.1 * r["seed"]) / (r["m"] * r["n"])) for r in records)
    for ax in theorem1.plot_slopes(theorem1.changes(records), fits).axes:
        drawn = sorted(map(tuple, np.concatenate([c.get_offsets() for c in ax.collections])))
        assert np.allclose(drawn, runs)
        line = ax.lines[0]
        assert line.get_ydata() == pytest.approx(0.8 * math.sqrt(1.1) / line.get_xdata())
        assert (line.get_xdata().min(), line.get_xdata().max()) == pytest.approx((4, 16))
    traj = theorem1.trajectories(records)
    lines = theorem1.plot_trajectories(traj, configs, "offdiag_mean").axes[0].lines[:6]
    assert [list(l.get_xdata()) for l in lines] == [[5]] * 6  # epoch 0 (no change) left out
    assert [l.get_ydata()[0] for l in lines] == pytest.approx(mean_of([4, 4, 9, 9, 16, 16]))


def test_run_on_real_mnist():
    root = os.environ.get("CEPAPER_DATA")
    if not root or not os.path.isfile(os.path.join(root, "mnist.npz")):
        pytest.skip("CEPAPER_DATA is unset or has no mnist.npz")
    mnist = data.load("mnist", n=64)
    x, y = data.inputs(mnist), data.scalar_targets(mnist.y)
    rec = theorem1.run_one(x, y, 2, 8, 0, depth=4, epochs=5, lr=0.5, n_probe=2)
    c = theorem1.changes([rec])
    assert rec["loss"][-1] < rec["loss"][0] and (c.abs_change > 0).all() and (c.k0 > 0).all()


def test_the_scale_sentence_is_the_sections_and_names_what_is_not_evidence():
    """The sentence under the header depends on the profile; the section computes it, not the notebook."""
    assert theorem1.scale_sentence("paper", 100, 10, None) is None
    assert "CPU-evidence scale" in theorem1.scale_sentence("cpu-evidence", 20, 4, None).data
    quick = theorem1.scale_sentence("quick", 50, 4, 256).data
    assert "256 MNIST images, 50 epochs, 4 seeds" in quick and "not evidence" in quick
