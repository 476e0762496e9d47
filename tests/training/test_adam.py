"""Tests of cepaper.training.adam (Sec. 4.1, Fig. 4): model selection on the primal and dual curves, the
batched training of repetitions, checkpoints, and the statistics of the section."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cepaper import complexity, runs, search
from cepaper.models.mlp import CollegialMLP
from cepaper.sections import mnist as mnist_section
from cepaper.training import adam
from tests.training.test_sgd import same  # nested checkpoint states equal bit for bit

F64 = torch.float64
ALPHA = 3.0


def toy(n=40, n_test=24, d=7, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, xt = torch.randn(n, d, generator=g, dtype=F64), torch.randn(n_test, d, generator=g, dtype=F64)
    w = torch.randn(d, classes, generator=g, dtype=F64)
    return x, (x @ w).argmax(1), xt, (xt @ w).argmax(1)


KW = dict(depth=3, classes=3, epochs=3, lr=0.02, batch_size=16, seed=5, dtype=F64)


def numel(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("n, m, bias", [(4, 1, False), (7, 3, False), (5, 2, True)])
def test_parameter_counts_are_the_built_models(n, m, bias):
    mlp = mnist_section.member(inputs=20, depth=4, classes=10, bias=bias)
    model = adam.build(20, n, m, [1, 2], depth=4, classes=10, bias=bias)
    assert numel(model) == 2 * m * complexity.mlp(20, n, 4, outputs=10, bias=bias)["params"]
    assert numel(model) == 2 * mlp.cost(n, groups=m)
    assert model.members(torch.randn(6, 20)).shape == (2 * m, 6, 10)


def brute_force(curve, n, n_tilde, depth=6, inputs=784, classes=10, alpha=ALPHA):
    """m by enumeration, from the parameter counts of built torch models and Eq. 9 written out."""
    beta = numel(CollegialMLP(inputs, n, depth=depth - 1, outputs=classes))
    beta_s = numel(CollegialMLP(inputs, n_tilde, depth=depth - 1, outputs=classes))
    v = lambda w: math.exp(alpha * (depth - 1) / w) - 1
    ms = range(1, 100000)
    if curve == "primal":
        return min(ms, key=lambda m: abs(m * beta - beta_s)), beta_s, v(n) / v(n_tilde)
    return min(ms, key=lambda m: abs(m - v(n) / v(n_tilde))), beta_s, v(n) / v(n_tilde)


@pytest.mark.parametrize("curve", ["primal", "dual"])
def test_selection_is_the_brute_force_search(curve):
    ns, n_tilde = [2, 3, 5, 8, 13, 30, 50], 50
    rows = mnist_section.select(curve, ns, n_tilde, ALPHA, mnist_section.member())
    for row, n in zip(rows, ns):
        m, beta_s, ratio = brute_force(curve, n, n_tilde)
        assert (row["n"], row["m"], row["baseline_params"]) == (n, m, beta_s)
        assert row["params"] == m * numel(CollegialMLP(784, n, depth=5, outputs=10))
        assert row["var_ratio"] == pytest.approx(ratio / m, rel=1e-12)
        assert row["var"] == pytest.approx((math.exp(ALPHA * 5 / n) - 1) / m, rel=1e-12)
    assert rows[-1]["m"] == 1 and rows[-1]["var_ratio"] == pytest.approx(1.0)


def test_primal_optimum_is_the_brute_force_one():
    """The smallest Var(K_e) at the baseline's budget (continuous m): argmin var_k(n) beta(n)."""
    mlp, n_tilde = mnist_section.member(), 200
    beta = lambda n: numel(CollegialMLP(784, n, depth=5, outputs=10))
    best = min(range(1, n_tilde + 1), key=lambda n: (math.exp(ALPHA * 5 / n) - 1) * beta(n))
    assert search.optimum(search.curve(mlp, n_tilde, ALPHA))["n"] == best


def test_blocks_are_the_separately_drawn_ensembles():
    model = adam.build(5, 4, 3, [11, 12], depth=3, classes=2, bias=True, dtype=F64)
    for r, s in enumerate([11, 12]):
        one = CollegialMLP(
            5, 4, m=3, depth=2, bias=True, outputs=2, dtype=F64, generator=torch.Generator().manual_seed(s)
        )
        for p, q in zip(model.parameters(), one.parameters()):
            assert torch.equal(p[3 * r : 3 * (r + 1)], q)
    x = torch.randn(6, 5, dtype=F64)
    logits = adam.ensemble_logits(model, x, 3)
    assert logits.shape == (2, 6, 2)
    torch.testing.assert_close(
        logits[1],
        CollegialMLP(5, 4, m=3, depth=2, bias=True, outputs=2, dtype=F64, generator=torch.Generator().manual_seed(12))(
            x
        ),
    )


def test_batched_repetitions_are_independent_runs():
    x, y, xt, yt = toy()
    batched = adam.train_reps(x, y, xt, yt, 2, 5, [0, 1, 2], **KW)
    for i, r in enumerate([0, 1, 2]):
        alone = adam.train_reps(x, y, xt, yt, 2, 5, [r], **KW)
        assert alone["test_error"][0] == batched["test_error"][i]
        np.testing.assert_allclose(alone["train_loss"][0], batched["train_loss"][i], rtol=1e-10)
    assert (
        batched["test_error"][0] != batched["test_error"][1] or batched["train_loss"][0] != batched["train_loss"][1]
    ), "other seeds, other runs"
    assert all(l[-1] < l[0] for l in batched["train_loss"]), "every repetition lowers its training loss"


def strip(rec):
    return {k: v for k, v in rec.items() if k != "wall_s"}


def resume_mismatches(tmp_path, monkeypatch, every=1, epochs=3, saved=1):
    """Train uninterrupted and interrupted (the second save fails, so the checkpoint holds epoch
    ``saved``) then resumed; return what differs: the record, or the final model or Adam state."""
    x, y, xt, yt = toy()
    kw = {**KW, "epochs": epochs}
    straight = adam.train_reps(x, y, xt, yt, 2, 4, [0, 1], checkpoint=tmp_path / "straight.pt", **kw)
    saves, real = [], runs.save_checkpoint

    def interrupting(path, state):
        saves.append(state["epoch"])
        if len(saves) == 2:
            raise KeyboardInterrupt
        real(path, state)

    path = tmp_path / "model.pt"
    monkeypatch.setattr(runs, "save_checkpoint", interrupting)
    with pytest.raises(KeyboardInterrupt):
        adam.train_reps(x, y, xt, yt, 2, 4, [0, 1], checkpoint=path, checkpoint_every=every, **kw)
    monkeypatch.setattr(runs, "save_checkpoint", real)
    assert torch.load(path)["epoch"] == saved and saves == [saved, 2 * saved]
    resumed = adam.train_reps(x, y, xt, yt, 2, 4, [0, 1], checkpoint=path, **kw)
    a, b = torch.load(tmp_path / "straight.pt"), torch.load(path)
    assert a["epoch"] == b["epoch"] == epochs
    return [k for k in ("test_error", "train_loss") if resumed[k] != straight[k]] + [
        k for k in ("model", "optimizer", "history") if not same(a[k], b[k])
    ]


@pytest.mark.parametrize("every, epochs, saved", [(1, 3, 1), (2, 5, 2)])
def test_resume_after_interruption_gives_the_uninterrupted_run(tmp_path, monkeypatch, one_thread, every, epochs, saved):
    assert resume_mismatches(tmp_path, monkeypatch, every, epochs, saved) == []


@pytest.mark.parametrize(
    "old, new, shows",
    [
        ("model=model, optimizer=opt,", "model=model,", "optimizer"),
        ("order_seed(seed, r), epoch)", "order_seed(seed, r), epoch - start)", "train_loss"),
    ],
)
def test_resume_check_catches_a_lost_piece_of_state(tmp_path, monkeypatch, plant, one_thread, old, new, shows):
    plant(adam, "train_reps", old, new)
    assert shows in resume_mismatches(tmp_path, monkeypatch)


def refused(tmp_path):
    """Which changes a checkpoint refuses to resume: ``{name: True if refused}``."""
    x, y, xt, yt = toy()
    path = tmp_path / "model.pt"
    adam.train_reps(x, y, xt, yt, 2, 4, [0, 1], checkpoint=path, **KW)
    x2, yt2 = x.clone(), yt.clone()
    x2[3, 2] += 1e-9
    yt2[0] = (yt2[0] + 1) % 3
    runs = {
        "train data": ((x2, y, xt, yt), {}),
        "test data": ((x, y, xt, yt2), {}),
        "seed": ((x, y, xt, yt), {"seed": 6}),
        "lr": ((x, y, xt, yt), {"lr": 0.05}),
        "batch_size": ((x, y, xt, yt), {"batch_size": 8}),
        "epochs": ((x, y, xt, yt), {"epochs": 4}),
    }
    out = {}
    for name, (data, change) in runs.items():
        try:
            adam.train_reps(*data, 2, 4, [0, 1], checkpoint=path, **{**KW, **change})
            out[name] = False
        except ValueError as e:
            out[name] = "other settings" in str(e)
    return out


def test_resume_refuses_other_data_recipe_or_seed(tmp_path, one_thread):
    r = refused(tmp_path)
    assert all(r.values()), r


def test_refusal_check_catches_a_dropped_data_digest(tmp_path, plant, one_thread):
    plant(adam, "train_reps", "data=files.digest(x, y, x_test, y_test),", "")
    assert refused(tmp_path)["train data"] is False


def test_run_models_caches_finished_models(tmp_path, monkeypatch):
    x, y, xt, yt = toy()
    configs = pd.DataFrame({"curve": ["primal", "primal", "dual"], "n": [3, 6, 6], "m": [4, 1, 1]})
    first = adam.train_reps_grid(x, y, xt, yt, configs, [0, 1], cache=tmp_path, **KW)
    assert [(r["m"], r["n"]) for r in first] == [(1, 6), (4, 3)], "each distinct model once"
    assert len(list(tmp_path.glob("*.json"))) == 2 and not list(tmp_path.glob("*.pt"))
    monkeypatch.setattr(adam, "train_reps", lambda *a, **k: pytest.fail("a finished model was retrained"))
    again = adam.train_reps_grid(x, y, xt, yt, configs, [0, 1], cache=tmp_path, **KW)
    assert again == json.loads(json.dumps(first))


def runs_of(errors, curve, var=None, params=None):
    """A runs table: ``errors`` {n: [error of each repetition]}."""
    rows = []
    for n, errs in errors.items():
        for r, e in enumerate(errs):
            rows.append(
                dict(
                    curve=curve,
                    n=n,
                    m=1 if n == max(errors) else 2,
                    params=(params or {}).get(n, 100),
                    var=(var or {}).get(n, 1.0),
                    rep=r,
                    error=e,
                    error_init=0.9,
                    train_loss=0.1,
                )
            )
    return pd.DataFrame(rows)


def test_tables_and_statistics():
    runs = runs_of(
        {2: [0.30, 0.32], 4: [0.20, 0.22], 8: [0.10, 0.12], 16: [0.15, 0.17]},
        "primal",
        var={2: 8.0, 4: 4.0, 8: 1.0, 16: 2.0},
    )
    s = mnist_section.summary(runs)
    assert s.n.tolist() == [2, 4, 8, 16] and s.error.tolist() == pytest.approx([0.31, 0.21, 0.11, 0.16])
    assert s["sem"].tolist() == pytest.approx([0.01] * 4)
    c = mnist_section.correlations(runs, "primal", "var", n_boot=200).set_index("measure")
    assert c.loc["spearman", "value"] == pytest.approx(1.0) and c.loc["spearman", "p_exact"]
    assert c.loc["spearman", "p_value"] == pytest.approx(2 / 24)
    assert c.loc["pearson", "value"] == pytest.approx(np.corrcoef([0.31, 0.21, 0.11, 0.16], [8, 4, 1, 2])[0, 1])
    assert c.loc["pearson", "lo"] <= c.loc["pearson", "value"] <= c.loc["pearson", "hi"]
    dual = runs_of({4: [0.2, 0.2, 0.2], 8: [0.1, 0.12, 0.14]}, "dual")
    ch = mnist_section.dual_changes(dual, 8).set_index("n")
    assert ch.loc[4, "change"] == pytest.approx(0.08) and ch.loc[8, "change"] == 0
    assert ch.loc[4, "change_se"] == pytest.approx(0.02 / math.sqrt(3))
    assert ch.loc[4, "lo"] == pytest.approx(0.08 - 1.959964 * 0.02 / math.sqrt(3), rel=1e-5)


def test_learning_curves_average_repetitions():
    rec = {
        "m": 2,
        "n": 3,
        "reps": [0, 1],
        "epoch": [0, 1],
        "test_error": [[0.9, 0.2], [0.8, 0.4]],
        "train_loss": [[0.5], [0.7]],
        "wall_s": 1.0,
    }
    c = mnist_section.learning_curves([rec])
    assert c.error.tolist() == pytest.approx([0.85, 0.3]) and c["sem"].tolist() == pytest.approx([0.05, 0.1])


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: mnist_section.select("middle", [4], 8, 1.0, mnist_section.member()),
            "curve must be one of primal, dual",
        ),
        (
            lambda: mnist_section.select("primal", [0], 8, 1.0, mnist_section.member()),
            "n must be an integer >= 1, got 0",
        ),
        (
            lambda: mnist_section.select("dual", [], 8, 1.0, mnist_section.member()),
            "dual_ns must name at least one width",
        ),
        (
            lambda: mnist_section.select("primal", [4], 8, -1.0, mnist_section.member()),
            "alpha must be a finite number > 0",
        ),
        (
            lambda: mnist_section.select("primal", [4], 0, 1.0, mnist_section.member()),
            "width must be an integer >= 1, got 0",
        ),
        (lambda: mnist_section.member(depth=1), "depth must be >= 2"),
        (lambda: adam.build(5, 4, 2, []), "reps must name at least one repetition"),
        (lambda: adam.build(5, 0, 2, [1]), "width must be an integer >= 1, got 0"),
        (lambda: adam.train_reps(*toy(), 1, 3, [0], **{**KW, "batch_size": 0}), "batch_size must be an integer >= 1"),
        (lambda: adam.train_reps(*toy(), 1, 3, [0], **{**KW, "lr": "fast"}), "lr must be a finite number > 0"),
        (lambda: adam.train_reps(*toy(), 1, 3, [0], **{**KW, "classes": 2}), r"labels must lie in 0..1"),
        (lambda: adam.train_reps(*toy(), 1, 3, [0], **{**KW, "epochs": 0}), "epochs must be an integer >= 1, got 0"),
        (
            lambda: adam.train_reps(*toy(), 1, 3, [0], checkpoint_every=0, **KW),
            "checkpoint_every must be an integer >= 1",
        ),
        (
            lambda: mnist_section.dual_changes(runs_of({4: [0.1], 8: [0.2]}, "dual"), 16),
            "dual_ns must contain the baseline",
        ),
        (lambda: mnist_section.correlations(runs_of({4: [0.1], 8: [0.2]}, "primal")), "needs at least 3 models"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_negative_seeds_are_named():
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        adam.init_seed(-1, 2, 4, 0)
    with pytest.raises(ValueError, match="reps must be integers >= 0, got -2"):
        adam.order_seed(0, -2)
