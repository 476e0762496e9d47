"""The NTK-parameterized MLP of Eq. 3 and its collegial ensemble (Eq. 4), batched over members."""

import math

import pytest
import torch

from cepaper.models.mlp import CollegialMLP, hidden_widths, ntk_scales

F64 = torch.float64


def eq3(x, weights, n_in):
    """Eq. 3 written out for one member: list of (n_out, n_in) weights, float64."""
    h, fan = x, n_in
    for w in weights[:-1]:
        h = torch.relu(math.sqrt(2.0 / fan) * h @ w.T)
        fan = w.shape[0]
    return (math.sqrt(1.0 / fan) * h @ weights[-1].T).squeeze(-1)


@pytest.mark.parametrize("widths,m", [((5,), 1), ((4, 7, 3), 3), (6, 2)])
def test_shapes(widths, m):
    model = CollegialMLP(3, widths, m=m, depth=2 if isinstance(widths, int) else None, dtype=F64)
    x = torch.randn(8, 3, dtype=F64)
    zs, out = model.layers(x)
    assert [tuple(z.shape) for z in zs] == [(m, 8, n) for n in model.widths]
    assert out.shape == (m, 8) and model.members(x).shape == (m, 8) and model(x).shape == (8,)
    assert [tuple(w.shape) for w in model.weights] == [
        (m, o, i) for i, o in zip((3,) + model.widths, model.widths + (1,))
    ]


def test_forward_is_eq3_and_eq4():
    g = torch.Generator().manual_seed(0)
    model = CollegialMLP(4, (6, 5, 7), m=3, generator=g, dtype=F64)
    x = torch.randn(9, 4, dtype=F64)
    members = torch.stack([eq3(x, [w[j] for w in model.weights], 4) for j in range(3)])
    torch.testing.assert_close(model.members(x), members, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(x), members.sum(0) / math.sqrt(3), rtol=1e-12, atol=1e-12)


def test_members_are_independent_networks():
    g = torch.Generator().manual_seed(1)
    big = CollegialMLP(2, (5, 5), m=4, generator=g, dtype=F64)
    x = torch.randn(6, 2, dtype=F64)
    for j in range(4):
        one = CollegialMLP(2, (5, 5), m=1, dtype=F64)
        with torch.no_grad():
            for w1, w in zip(one.weights, big.weights):
                w1.copy_(w[j : j + 1])
        torch.testing.assert_close(one.members(x)[0], big.members(x)[j], rtol=0, atol=0)


def test_bias_is_added_unscaled():
    model = CollegialMLP(2, (3,), m=2, bias=True, dtype=F64)
    with torch.no_grad():
        for w in model.weights:
            w.zero_()
    x = torch.randn(5, 2, dtype=F64)
    b1, b2 = model.biases
    expect = b2[:, 0, 0, None].expand(2, 5)  # zero weights: output = b_out
    torch.testing.assert_close(model.members(x), expect)
    zs, _ = model.layers(x)
    torch.testing.assert_close(zs[0], b1.expand(2, 5, 3))


def test_draws_are_standard_normal_in_documented_order():
    g = torch.Generator().manual_seed(7)
    model = CollegialMLP(3, (4, 5), m=2, generator=g, dtype=F64)
    g = torch.Generator().manual_seed(7)
    expect = [torch.randn(p.shape, generator=g, dtype=F64) for p in model.parameters()]
    for p, e in zip(model.parameters(), expect):
        assert torch.equal(p.detach(), e)
    big = CollegialMLP(200, 200, depth=1, m=5, generator=torch.Generator().manual_seed(0))
    w = big.weights[0].detach()
    assert abs(w.mean().item()) < 0.01 and abs(w.std().item() - 1) < 0.01


def test_scales_are_eq3():
    assert ntk_scales(2, (8, 32)) == [1.0, math.sqrt(2 / 8), math.sqrt(1 / 32)]
    assert CollegialMLP(3, 10, depth=3).scales == pytest.approx(
        [math.sqrt(2 / 3), math.sqrt(0.2), math.sqrt(0.2), math.sqrt(0.1)]
    )
    assert hidden_widths(4, 3) == (4, 4, 4) and hidden_widths([2, 3]) == (2, 3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_in=2, widths=4, m=0), "m must be an integer >= 1, got 0"),
        (dict(n_in=2, widths=(4, 0)), "width must be an integer >= 1, got 0"),
        (dict(n_in=0, widths=4), "n_in must be"),
        (dict(n_in=2, widths=()), "widths must name at least one hidden layer"),
        (dict(n_in=2, widths=4, depth=0), "depth must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CollegialMLP(**kwargs)


def test_bad_input_shape():
    model = CollegialMLP(3, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\), got \(5, 2\)"):
        model(torch.randn(5, 2))


def test_streams_are_reproducible_independent_and_standard_normal():
    make = lambda streams, seed=0: CollegialMLP(
        50, 40, depth=2, m=6, streams=streams, generator=torch.Generator().manual_seed(seed)
    )
    a, b = make(2), make(2)
    for wa, wb in zip(a.weights, b.weights):
        assert torch.equal(wa, wb), "same seed, same draws"
    w = torch.cat([p.flatten(1) for p in a.weights], 1)  # (m, all weights of a member)
    assert not torch.equal(w[:3], w[3:]) and not torch.equal(
        w, torch.cat([p.flatten(1) for p in make(1).weights], 1)
    ), "the second stream is a different one"
    for group in (w[:3], w[3:]):  # each stream is N(0, 1): 3 x 4,440 draws
        assert abs(group.mean().item()) < 0.05 and abs(group.std().item() - 1) < 0.05
    corr = torch.corrcoef(torch.stack([w[:3].flatten(), w[3:].flatten()]))[0, 1]
    assert abs(corr.item()) < 0.05, "the two streams are uncorrelated"


def test_multi_output_members_are_eq3_per_output():
    g = torch.Generator().manual_seed(3)
    model = CollegialMLP(4, (6, 5), m=3, outputs=2, generator=g, dtype=F64)
    assert model.weights[-1].shape == (3, 2, 5)
    x = torch.randn(7, 4, dtype=F64)
    for c in range(2):
        members = torch.stack(
            [eq3(x, [w[j] for w in model.weights[:-1]] + [model.weights[-1][j, c : c + 1]], 4) for j in range(3)]
        )
        torch.testing.assert_close(model.members(x)[..., c], members, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model(x)[:, c], members.sum(0) / math.sqrt(3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("outputs, bias", [(1, False), (3, True)])
def test_grouped_inputs_feed_each_group_its_own_batch(outputs, bias):
    g = torch.Generator().manual_seed(4)
    model = CollegialMLP(5, (4, 6), m=6, outputs=outputs, bias=bias, generator=g, dtype=F64)
    x = torch.randn(3, 8, 5, dtype=F64)  # G = 3 groups of 2 members
    zs, out = model.layers(x)
    assert [tuple(z.shape) for z in zs] == [(6, 8, 4), (6, 8, 6)]
    for k in range(3):
        _, alone = model.layers(x[k])
        torch.testing.assert_close(out[2 * k : 2 * k + 2], alone[2 * k : 2 * k + 2], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"grouped x must have shape \(G, N, 5\) with G dividing m = 6"):
        model.layers(torch.randn(4, 8, 5, dtype=F64))
    with pytest.raises(ValueError, match="the ensemble sums members that see the same inputs"):
        model(x)


def test_outputs_must_be_positive():
    with pytest.raises(ValueError, match="outputs must be an integer >= 1, got 0"):
        CollegialMLP(3, 4, outputs=0)
