"""Tests of cepaper.training.gd: gradient descent on the L2 loss of a batched collegial ensemble, the NTK
it records, checkpoints and resumption, seeds, and bad input."""

import copy
import math

import numpy as np
import pytest
import torch

from cepaper import runs
from cepaper.models.mlp import CollegialMLP
from cepaper.training import gd

DT = torch.float64


def toy(n=10, d=6, seed=0):
    """Inputs ``(n, d)`` and targets ``(n,)`` of a small regression problem."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=DT), torch.randn(n, generator=g, dtype=DT)


def model_of(m=3, n=5, d=6, depth=2, seed=1):
    return CollegialMLP(d, n, m=m, depth=depth, generator=torch.Generator().manual_seed(seed), dtype=DT)


def autograd_ntk(model, x):
    """The ensemble NTK recomputed directly: ``G G^T`` with ``G[i] = d F_e(x_i) / d Theta`` by autograd."""
    params = list(model.parameters())
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(model(x[i : i + 1]).sum(), params)])
        for i in range(len(x))
    ]
    g = torch.stack(rows)
    return g @ g.T


def member_forward(ws, x):
    """One member ``f_j`` of Eq. 3 written out: ``ws`` are its ``(n_out, n_in)`` weight matrices."""
    h = x
    for w in ws[:-1]:
        h = torch.relu(math.sqrt(2.0 / w.shape[1]) * h @ w.T)
    return (math.sqrt(1.0 / ws[-1].shape[1]) * h @ ws[-1].T).squeeze(-1)


def test_l2_loss_and_full_loss():
    out, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])
    assert gd.l2_loss(out, y).item() == pytest.approx((0 + 4 + 9) / 6)
    x, y = toy(n=9)
    model = model_of()
    expected = gd.l2_loss(model(x), y).item()
    assert gd.full_loss(model, x, y, chunk=4) == pytest.approx(expected, rel=1e-12)


def test_one_step_of_the_batched_ensemble_equals_m_separate_models():
    """A step of the batched model equals stepping m separate member networks whose outputs are
    summed and scaled by 1/sqrt(m) (Eq. 4) under the same L2 loss and data (Eqs. 21-22)."""
    m, lr = 4, 0.3
    x, y = toy()
    model = model_of(m=m)
    members = [[w[j].detach().clone().requires_grad_() for w in model.weights] for j in range(m)]
    ensemble = sum(member_forward(ws, x) for ws in members) / math.sqrt(m)
    torch.testing.assert_close(model(x), ensemble)
    loss = 0.5 * ((ensemble - y) ** 2).mean()
    grads = torch.autograd.grad(loss, [w for ws in members for w in ws])
    stepped = [w - lr * g for w, g in zip([w for ws in members for w in ws], grads)]
    before = gd.gd_step(model, x, y, lr)
    assert before == pytest.approx(loss.item(), rel=1e-12)
    L = len(model.weights)
    for j in range(m):
        for l in range(L):
            torch.testing.assert_close(model.weights[l][j], stepped[j * L + l], rtol=1e-12, atol=1e-12)


def test_full_batch_epoch_is_one_step_and_minibatch_epoch_follows_the_batches():
    x, y = toy(n=8)
    a, b = model_of(), model_of()
    gd.train_gd(a, x, y, epochs=1, lr=0.1)
    gd.gd_step(b, x, y, 0.1)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    a, b = model_of(), model_of()
    gd.train_gd(a, x, y, epochs=2, lr=0.1, batch_size=3, seed=5)
    for epoch in range(2):
        for idx in gd.batches(8, 3, 5, epoch):
            gd.gd_step(b, x[idx], y[idx], 0.1)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_batches():
    assert [b.tolist() for b in gd.batches(5, None, 0, 0)] == [[0, 1, 2, 3, 4]]
    assert [b.tolist() for b in gd.batches(5, 7, 0, 0)] == [[0, 1, 2, 3, 4]]
    bs = gd.batches(10, 4, seed=3, epoch=1)
    assert [len(b) for b in bs] == [4, 4, 2]
    assert sorted(np.concatenate(bs).tolist()) == list(range(10))
    assert all((u == v).all() for u, v in zip(bs, gd.batches(10, 4, seed=3, epoch=1)))
    assert not (np.concatenate(bs) == np.concatenate(gd.batches(10, 4, seed=3, epoch=2))).all()


def test_learning_rate_zero_leaves_model_and_ntk_unchanged():
    x, y = toy()
    model = model_of()
    init = copy.deepcopy(model)
    hist = gd.train_gd(model, x, y, epochs=3, lr=0.0, probe=x[:3], record_every=1, batch_size=4)
    for p, q in zip(model.parameters(), init.parameters()):
        assert torch.equal(p, q)
    assert hist["epoch"] == [0, 1, 2, 3]
    assert hist["ntk"].shape == (4, 3, 3)
    assert torch.equal(hist["ntk"][-1] - hist["ntk"][0], torch.zeros(3, 3, dtype=torch.float64))
    assert len(set(hist["loss"])) == 1


def test_recorded_ntk_equals_direct_recomputation_of_both_kernels():
    x, y = toy(n=12)
    model = model_of(m=3, n=7, depth=3)
    init = copy.deepcopy(model)
    hist = gd.train_gd(model, x, y, epochs=5, lr=0.5, probe=x[:4])
    k0, kt = autograd_ntk(init, x[:4]), autograd_ntk(model, x[:4])
    torch.testing.assert_close(hist["ntk"][0], k0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hist["ntk"][-1], kt, rtol=1e-10, atol=1e-12)
    assert (kt - k0).abs().max() > 1e-3  # the kernel did move at this small width
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["loss"][0] == pytest.approx(gd.full_loss(init, x, y))


def test_record_every():
    x, y = toy()
    hist = gd.train_gd(model_of(), x, y, epochs=5, lr=0.1, probe=x[:2], record_every=2)
    assert hist["epoch"] == [0, 2, 4, 5] and hist["ntk"].shape == (4, 2, 2) and len(hist["loss"]) == 4
    hist = gd.train_gd(model_of(), x, y, epochs=3, lr=0.1)
    assert hist["epoch"] == [0, 3] and hist["ntk"] is None


def test_same_seed_same_numbers():
    x, y = toy(n=9)
    runs = [
        gd.train_gd(model_of(seed=s), x, y, epochs=3, lr=0.2, batch_size=4, probe=x[:2], seed=b)
        for s, b in [(1, 7), (1, 7), (2, 7), (1, 8)]
    ]
    assert runs[0]["loss"] == runs[1]["loss"] and torch.equal(runs[0]["ntk"], runs[1]["ntk"])
    assert runs[0]["loss"][-1] != runs[2]["loss"][-1]  # other initial weights
    assert runs[0]["loss"][-1] != runs[3]["loss"][-1]  # other mini-batch order


RESUME = dict(epochs=4, lr=0.2, batch_size=4, record_every=1, seed=3)


def resume_mismatches(tmp_path):
    """Train uninterrupted and interrupted (the 4th NTK record, after epoch 3, fails: the checkpoint holds
    epoch 2) then resumed; return what differs: history entries or the final weights."""
    x, y = toy(n=9)
    kw = {**RESUME, "probe": x[:2]}
    straight_model = model_of()
    straight = gd.train_gd(straight_model, x, y, **kw)
    calls = []

    def failing_ntk(model, probe):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return gd.probe_ntk(model, probe)

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        gd.train_gd(model_of(), x, y, checkpoint=path, ntk_fn=failing_ntk, **kw)
    assert torch.load(path)["epoch"] == 2
    torch.manual_seed(1234)  # the loop must not depend on torch's global RNG
    resumed_model = model_of(seed=99)  # the checkpoint's weights replace these
    resumed = gd.train_gd(resumed_model, x, y, checkpoint=path, **kw)
    bad = [k for k in ("epoch", "loss") if resumed[k] != straight[k]]
    bad += ["ntk"] * (not torch.equal(resumed["ntk"], straight["ntk"]))
    bad += ["weights"] * (
        not all(torch.equal(p, q) for p, q in zip(resumed_model.parameters(), straight_model.parameters()))
    )
    again = gd.train_gd(model_of(), x, y, checkpoint=path, **kw)  # finished: nothing left to do
    bad += ["finished run"] * (again["loss"] != straight["loss"])
    return bad


def test_checkpoint_resumes_an_interrupted_run(tmp_path):
    assert resume_mismatches(tmp_path) == []
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "module, where, old, new, shows",
    [
        (runs, "resume", 'model.load_state_dict(state["model"])', "pass", "weights"),
        (
            gd,
            "train_gd",
            "batches(len(y), batch_size, seed, epoch)",
            "batches(len(y), batch_size, seed, epoch - start)",
            "loss",
        ),
    ],
)
def test_resume_check_catches_a_lost_piece_of_state(tmp_path, plant, module, where, old, new, shows):
    plant(module, where, old, new)
    assert shows in resume_mismatches(tmp_path)


def refused(tmp_path):
    """Which changes a checkpoint refuses to resume from: ``{name: True if refused}``."""
    x, y = toy(n=9)
    path = tmp_path / "run.pt"
    kw = {**RESUME, "probe": x[:2]}
    gd.train_gd(model_of(), x, y, checkpoint=path, **kw)
    x2 = x.clone()
    x2[0, 0] += 1e-9
    runs = {
        "inputs": (x2, y, kw),
        "targets": (x, y + 1, kw),
        "probe": (x, y, {**kw, "probe": x[1:3]}),
        "lr": (x, y, {**kw, "lr": 0.3}),
        "seed": (x, y, {**kw, "seed": 4}),
        "batch_size": (x, y, {**kw, "batch_size": 3}),
        "epochs": (x, y, {**kw, "epochs": 5}),
        "record_every": (x, y, {**kw, "record_every": 2}),
    }
    out = {}
    for name, (xs, ys, change) in runs.items():
        try:
            gd.train_gd(model_of(), xs, ys, checkpoint=path, **change)
            out[name] = False
        except ValueError as e:
            out[name] = "other settings" in str(e)
    gd.train_gd(model_of(), x, y, checkpoint=path, **kw)  # the same settings resume
    return out


def test_resume_refuses_other_data_recipe_or_seed(tmp_path):
    r = refused(tmp_path)
    assert all(r.values()), r


def test_refusal_check_catches_a_dropped_data_digest(tmp_path, plant):
    plant(gd, "train_gd", "data=files.digest(x, y, probe),", "")
    assert refused(tmp_path)["inputs"] is False


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
        (dict(lr=-0.1), "lr must be a finite number >= 0, got -0.1"),
        (dict(lr=float("nan")), "lr must be a finite number >= 0, got nan"),
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (dict(record_every=0), "record_every must be an integer >= 1, got 0"),
        (dict(checkpoint_every=0), "checkpoint_every must be an integer >= 1, got 0"),
    ],
)
def test_bad_input(kwargs, message):
    x, y = toy()
    with pytest.raises(ValueError, match=message):
        gd.train_gd(model_of(), x, y, **{"epochs": 1, "lr": 0.1, **kwargs})


def test_bad_shapes():
    x, y = toy()
    with pytest.raises(ValueError, match=r"x must be \(N, D\) and y \(N,\); got \(10, 6\) and \(9,\)"):
        gd.train_gd(model_of(), x, y[:9], epochs=1, lr=0.1)


@pytest.mark.parametrize("m, n", [(0, 4), (2, 0)])
def test_bad_ensemble_size(m, n):
    with pytest.raises(ValueError, match="must be an integer >= 1, got 0"):
        CollegialMLP(6, n, m=m, depth=2)
