"""The Fig. 5 bottleneck as a scalar function: its batched NTK against independent computations."""

import math

import pytest
import torch
from torch import nn

from cepaper import ntk
from cepaper.alpha import sweeps
from cepaper.models import bottleneck as B
from cepaper.models.mlp import CollegialMLP
from cepaper.montecarlo import intra_op_threads
from cepaper.search import equations

F64 = torch.float64


def small(n=3, draws=4, post_relu=False, readout="random", spatial=4, n_in=8, count=3):
    v = ntk.readout_vector(readout, (n_in, spatial, spatial), seed=1, dtype=F64)
    x = B.block_inputs(n_in, spatial, count, corr=0.3, seed=2, dtype=F64)
    return B.BottleneckDraws(n, range(10, 10 + draws), v, n_in=n_in, post_relu=post_relu, dtype=F64), x


@pytest.mark.parametrize(
    "post_relu, readout, n",
    [
        (False, "mean", 1),
        (False, "center", 4),
        (False, "random", 3),
        (True, "mean", 4),
        (True, "center", 1),
        (True, "random", 3),
    ],
)
def test_structured_ntk_matches_autograd_and_empirical_ntk(post_relu, readout, n):
    block, x = small(n, post_relu=post_relu, readout=readout)
    ref = B.bottleneck_ntk(block, x, method="autograd")
    for conv2 in ("gram", "gradients", "auto"):
        k = B.bottleneck_ntk(block, x, conv2=conv2)
        assert k.shape == (4, 3, 3) and k.dtype == F64
        torch.testing.assert_close(k, ref, rtol=1e-10, atol=1e-10)
    for t in (0, 3):  # independent: per-input autograd of the standalone draw
        torch.testing.assert_close(ntk.empirical_ntk(block.draw(t), x, method="naive"), ref[t], rtol=1e-10, atol=1e-10)
    assert torch.all(ref.diagonal(dim1=1, dim2=2) >= 0)


def test_draws_are_the_seeded_single_blocks():
    block, x = small(n=2, draws=3)
    out = block(x)
    assert out.shape == (3, 3)
    for t, seed in enumerate(range(10, 13)):
        single = B.Bottleneck(2, block.readout, n_in=8, seed=seed, dtype=F64)
        for conv, w in zip((single.conv1, single.conv2, single.conv3), (block.w1, block.w2, block.w3)):
            assert torch.equal(conv.weight.reshape(w[t].shape), w[t])
        torch.testing.assert_close(single(x), out[t])
    torch.manual_seed(11)  # seed=None draws the same stream from the global RNG
    glob = B.Bottleneck(2, block.readout, n_in=8, dtype=F64)
    assert torch.equal(glob.conv2.weight, block.w2[1])
    assert torch.equal(ntk.jacobian_ntk(glob, x), B.bottleneck_ntk(block, x)[1]) or torch.allclose(
        ntk.jacobian_ntk(glob, x), B.bottleneck_ntk(block, x)[1], rtol=1e-10
    )


def test_draws_do_not_depend_on_the_threads_they_are_spread_over():
    """Over 2**20 weights, the draws are spread over torch's threads (each draw its own generator): the
    same weights on two threads as on one, draw t that of ``Bottleneck(n, seed=seeds[t])``."""
    v = ntk.readout_vector("mean", (256, 1, 1), seed=1)
    make = lambda: B.BottleneckDraws(160, [5, 6, 7, 8], v)  # 1.25 M weights in all
    with intra_op_threads(2):
        spread = make()
    with intra_op_threads(1):
        one = make()
    assert sum(w.numel() for w in (spread.w1, spread.w2, spread.w3)) > 2**20
    for a, b in zip((spread.w1, spread.w2, spread.w3), (one.w1, one.w2, one.w3)):
        assert torch.equal(a, b)
    assert torch.equal(B.Bottleneck(160, v, seed=8).conv2.weight.reshape(spread.w2[3].shape), spread.w2[3])


def test_shortcut_shifts_output_but_not_the_ntk():
    block, x = small(n=3)
    y = block.maps(x)[2].view(3, 4, 8, 4, 4)
    branch = (y * block.readout).sum((2, 3, 4)).T
    shift = (x * block.readout).sum((1, 2, 3))
    torch.testing.assert_close(block(x), branch + shift)


def test_one_pixel_block_is_a_two_layer_mlp():
    """At H = W = 1 the 3x3 conv sees only its centre tap: the block is the MLP n_in -> n -> n -> 1
    (read-out weights v^T W3) with the middle layer scaled by 1/3, so K_block = K_mlp / 9 exactly."""
    n, T, n_in = 5, 6, 12
    v = ntk.readout_vector("random", (n_in, 1, 1), seed=3, dtype=F64)
    x = B.block_inputs(n_in, 1, 2, corr=0.4, seed=4, dtype=F64)
    block = B.BottleneckDraws(n, range(T), v, n_in=n_in, dtype=F64)
    mlp = CollegialMLP(n_in, (n, n), m=T, dtype=F64)
    with torch.no_grad():
        mlp.weights[0].copy_(block.w1)
        mlp.weights[1].copy_(block.w2[:, :, :, 1, 1])
        mlp.weights[2].copy_(torch.einsum("c,tck->tk", v.reshape(-1), block.w3).unsqueeze(1))
    torch.testing.assert_close(
        9 * B.bottleneck_ntk(block, x), ntk.member_ntk(mlp, x[:, :, 0, 0]), rtol=1e-10, atol=1e-12
    )


def test_sampler_draws_reproducibly():
    v = ntk.readout_vector("mean", (16, 4, 4))
    x = B.block_inputs(16, 4, 2)
    sample = B.bottleneck_ntk_sampler(3, x, v, n_in=16)
    a = sample(5, torch.Generator().manual_seed(7))
    b = sample(5, torch.Generator().manual_seed(7))
    c = sample(5, torch.Generator().manual_seed(8))
    assert a.shape == (5, 2, 2) and torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a, a.transpose(1, 2))


def test_fan_ins_are_read_from_the_layers():
    v = ntk.readout_vector("mean", (256, 2, 2))
    assert sweeps.fan_ins(B.Bottleneck(7, v)) == (256, 63, 7)  # read off nn.Conv2d layers
    assert sweeps.fan_ins(B.BottleneckDraws(7, [0], v)) == (256, 63, 7)  # its own fan_ins()
    grouped = nn.Sequential(nn.Conv2d(64, 64, 3, groups=8), nn.ReLU(), nn.Conv1d(6, 4, 5, groups=2), nn.Linear(10, 1))
    assert sweeps.fan_ins(grouped) == (72, 15, 10)
    assert sweeps.fan_ins(CollegialMLP(784, 32, depth=5)) == (784, 32, 32, 32, 32, 32)
    assert equations.sum_inv_fan_in(sweeps.fan_ins(B.Bottleneck(7, v))) == pytest.approx(sweeps.bottleneck_term(7))
    with pytest.raises(ValueError, match="no weight layers"):
        sweeps.fan_ins(nn.Sequential(nn.ReLU(), nn.Flatten()))


def test_inputs_and_readouts():
    x = B.block_inputs(64, 8, 3, corr=0.5, seed=0, dtype=F64)
    assert x.shape == (3, 64, 8, 8)
    c = B.block_inputs(64, 8, 2, kind="constant")
    assert torch.equal(c[:, :, 0, 0], c[:, :, 5, 3])
    for kind in ntk.READOUTS:
        v = ntk.readout_vector(kind, (32, 4, 4), dtype=F64)
        assert v.shape == (32, 4, 4) and math.isclose(v.norm().item(), 1.0)
    g = B.block_inputs(256, 16, 2, corr=0.5, seed=1, dtype=F64).flatten(1)
    assert (g[0] @ g[1] / g[0].norm() / g[1].norm()).item() == pytest.approx(0.5, abs=0.02)


def test_bad_input_is_refused():
    v = ntk.readout_vector("mean", (16, 4, 4))
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        B.BottleneckDraws(0, [0], v, n_in=16)
    with pytest.raises(ValueError, match="scalar function"):
        B.BottleneckDraws(2, [0], torch.ones(3, 16, 4, 4), n_in=16)  # a read-out with 3 outputs
    with pytest.raises(ValueError, match="scalar function"):
        B.Bottleneck(2, torch.ones(16), n_in=16)
    with pytest.raises(ValueError, match="not all zero"):
        B.Bottleneck(2, torch.zeros(16, 4, 4), n_in=16)
    with pytest.raises(ValueError, match="at least one seed"):
        B.BottleneckDraws(2, [], v, n_in=16)
    block = B.BottleneckDraws(2, [0], v, n_in=16)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 16, 4, 4\)"):
        block(torch.ones(2, 16, 5, 5))
    with pytest.raises(ValueError, match="method must be one of structured, autograd, got 'fast'"):
        B.bottleneck_ntk(block, B.block_inputs(16, 4), method="fast")
    with pytest.raises(ValueError, match="conv2 must be one of auto, gram, gradients, got 'fft'"):
        B.bottleneck_ntk(block, B.block_inputs(16, 4), conv2="fft")
    with pytest.raises(ValueError, match="corr must be in"):
        B.block_inputs(16, 4, corr=1.5)
    with pytest.raises(ValueError, match="kind must be one of gaussian, constant, got 'uniform'"):
        B.block_inputs(16, 4, kind="uniform")
    with pytest.raises(ValueError, match="readout must be one of"):
        ntk.readout_vector("max", (16, 4, 4))
