"""The analytic infinite-width ReLU NTK ``K_inf`` against closed forms and wide-net Monte Carlo."""

import math

import pytest
import torch

from cepaper import kernels, ntk
from cepaper.models.mlp import CollegialMLP

F64 = torch.float64


def unit(n, d, seed=0):
    x = torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("depth", [1, 2, 4, 7])
@pytest.mark.parametrize("n_in", [2, 5])
def test_diagonal_closed_form(depth, n_in):
    # |x| = 1: Sigma_l = q = 2/n_0 at every layer, Theta_L = L q, K_inf = q/2 + L q/2.
    q = 2.0 / n_in
    k = kernels.relu_ntk(unit(6, n_in), depth=depth)
    torch.testing.assert_close(k.diagonal(), torch.full((6,), q * (depth + 1) / 2, dtype=F64))
    torch.testing.assert_close(kernels.relu_nngp(unit(6, n_in), depth=depth).diagonal(),
                               torch.full((6,), q / 2, dtype=F64))


@pytest.mark.parametrize("depth", [1, 3])
def test_diagonal_closed_form_with_bias(depth):
    # Sigma_l = q + l, Theta_L = L q + L (L + 1) / 2, K_inf = (q + L)/2 + 1 + Theta_L / 2.
    q = 1.0
    theta = depth * q + depth * (depth + 1) / 2
    expect = (q + depth) / 2 + 1 + theta / 2
    k = kernels.relu_ntk(unit(4, 2), depth=depth, bias=True, diagonal=True)
    torch.testing.assert_close(k, torch.full((4,), expect, dtype=F64))


def test_one_layer_known_angles():
    # L = 1, n_0 = 2, unit inputs: K_inf = k1 + k0 Sigma_1 with Sigma_1 = cos t.
    x = torch.tensor([[1.0, 0.0]], dtype=F64)
    y = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [math.cos(1.0), math.sin(1.0)]], dtype=F64)
    k = kernels.relu_ntk(x, y, depth=1)[0]
    t = 1.0
    expect_t = (math.sin(t) + (math.pi - t) * math.cos(t)) / (2 * math.pi) + (math.pi - t) / (2 * math.pi) * math.cos(t)
    torch.testing.assert_close(k, torch.tensor([1 / (2 * math.pi), 0.0, expect_t], dtype=F64))


def test_symmetric_psd_homogeneous_and_shapes():
    x = torch.randn(7, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    y = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    k = kernels.relu_ntk(x, depth=3)
    torch.testing.assert_close(k, k.T)
    assert torch.linalg.eigvalsh(k).min() > -1e-12
    # Positive homogeneity of ReLU without bias: K(c x, y) = K(x, c y) = c K(x, y).
    torch.testing.assert_close(kernels.relu_ntk(2.5 * x, y, depth=3), 2.5 * kernels.relu_ntk(x, y, depth=3))
    torch.testing.assert_close(kernels.relu_ntk(x, 2.5 * y, depth=3), 2.5 * kernels.relu_ntk(x, y, depth=3))
    assert kernels.relu_ntk(x, y, depth=2).shape == (7, 4)
    torch.testing.assert_close(kernels.relu_ntk(x[:4], y, depth=2, diagonal=True),
                               kernels.relu_ntk(x[:4], y, depth=2).diagonal())
    assert kernels.relu_ntk(torch.zeros(2, 3), depth=2).abs().max() == 0


@pytest.mark.parametrize("bias", [False, True])
def test_matches_wide_net_monte_carlo(bias):
    """K_inf equals the Monte Carlo mean NTK of wide nets within 3 standard errors, every entry."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
    mo = ntk.mc_moments(ntk.mlp_ntk_sampler(x, widths=256, depth=3, bias=bias), 384, chunk=64, seed=1)
    kinf = kernels.relu_ntk(x, depth=3, bias=bias)
    z = (mo.mean - kinf) / mo.mean_se
    assert z.abs().max() < 3, z
    assert (mo.mean_se / kinf.abs().max()).max() < 0.03     # the test has power: 3 SE < 10% of K


def test_nngp_matches_monte_carlo_of_outputs():
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(5))
    model = CollegialMLP(2, 256, depth=2, m=3000, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        f = model.members(x)                                   # (m, N)
    mo = ntk.moments(f[:, :, None] * f[:, None, :])
    z = (mo.mean - kernels.relu_nngp(x, depth=2)) / mo.mean_se
    assert z.abs().max() < 3, z


@pytest.mark.parametrize("call,match", [
    (lambda: kernels.relu_ntk(torch.randn(3, 2), depth=0), "depth must be an integer >= 1, got 0"),
    (lambda: kernels.relu_ntk(torch.randn(3), depth=1), r"x1 must be a tensor of shape \(N1, n_in\)"),
    (lambda: kernels.relu_ntk(torch.randn(3, 2), torch.randn(3, 4)), r"x2 must be a tensor of shape \(N2, 2\)"),
    (lambda: kernels.relu_ntk(torch.randn(3, 2), torch.randn(2, 2), diagonal=True), "equal N"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
