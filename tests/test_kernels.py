"""The analytic infinite-width ReLU NTK ``K_inf`` against closed forms and wide-net Monte Carlo."""

import math

import pytest
import torch

from cepaper import kernels, montecarlo
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
    torch.testing.assert_close(
        kernels.relu_nngp(unit(6, n_in), depth=depth).diagonal(), torch.full((6,), q / 2, dtype=F64)
    )


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


def test_nngp_one_layer_known_angles_and_options():
    # L = 1, n_0 = 2, unit inputs at angle t: NNGP = k1(Sigma_1) = (sin t + (pi - t) cos t) / (2 pi).
    x = torch.tensor([[1.0, 0.0]], dtype=F64)
    ts = torch.tensor([0.5, math.pi / 2, 2.0, math.pi], dtype=F64)
    y = torch.stack([ts.cos(), ts.sin()], 1)
    expect = (ts.sin() + (math.pi - ts) * ts.cos()) / (2 * math.pi)
    torch.testing.assert_close(kernels.relu_nngp(x, y)[0], expect)  # default depth is 1
    torch.testing.assert_close(kernels.relu_nngp(x.expand(4, 2), y, diagonal=True), expect)
    # With bias and |x| = 1: Sigma_L = q + L on the diagonal, NNGP = (q + L) / 2 + 1 (q = 2/n_0 = 1).
    for depth in (1, 3):
        torch.testing.assert_close(
            kernels.relu_nngp(unit(4, 2), depth=depth, bias=True, diagonal=True),
            torch.full((4,), (1 + depth) / 2 + 1, dtype=F64),
        )


def test_default_depth_is_one():
    x, y = unit(3, 2, seed=7), unit(5, 2, seed=8)
    torch.testing.assert_close(kernels.relu_ntk(x, y), kernels.relu_ntk(x, y, depth=1))
    torch.testing.assert_close(kernels.relu_ntk(x).diagonal(), torch.full((3,), 1.0, dtype=F64))


def test_antipodal_inputs_rounding_past_minus_one():
    # y = -c x has correlation -1; in float64 the computed rho falls just below -1 for many x
    # (the clamp must catch it). At t = pi, k1 = k0 = 0, so for L = 1 both kernels vanish (up to
    # ~1e-8: arccos near -1 turns a rounding of 1e-16 into an angle of 1e-8; unclamped it is NaN).
    x = torch.randn(200, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    for c in (0.3, 7.0):
        for f in (kernels.relu_ntk, kernels.relu_nngp):
            k = f(x, -c * x, depth=1, diagonal=True)
            torch.testing.assert_close(k, torch.zeros(200, dtype=F64), atol=1e-6, rtol=0)


def test_arccos_moments_zero_variance():
    # A zero variance: correlation taken as 0, so t = pi/2, k1 = 0, k0 = 1/4; the safe division
    # leaves the gradient in s12 finite (no 0/0 on the branch torch.where discards).
    s12 = torch.tensor([0.0, 0.0], dtype=F64, requires_grad=True)
    s11, s22 = torch.tensor([0.0, 0.0], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)
    k1, k0 = kernels.arccos_moments(s11, s22, s12)
    torch.testing.assert_close(k1, torch.zeros(2, dtype=F64))
    torch.testing.assert_close(k0, torch.full((2,), 0.25, dtype=F64))
    (g,) = torch.autograd.grad((k1 + k0).sum(), s12)
    assert torch.isfinite(g).all(), g


def test_float32_inputs_computed_in_float64():
    x, y = unit(4, 3, seed=9).float(), unit(2, 3, seed=10).float()
    for f in (kernels.relu_ntk, kernels.relu_nngp):
        k = f(x, y, depth=2)
        assert k.dtype == F64
        torch.testing.assert_close(k, f(x.double(), y.double(), depth=2))


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
    torch.testing.assert_close(
        kernels.relu_ntk(x[:4], y, depth=2, diagonal=True), kernels.relu_ntk(x[:4], y, depth=2).diagonal()
    )
    assert kernels.relu_ntk(torch.zeros(2, 3), depth=2).abs().max() == 0


@pytest.mark.parametrize("bias", [False, True])
def test_matches_wide_net_monte_carlo(bias):
    """K_inf equals the Monte Carlo mean NTK of wide nets within 3 standard errors, every entry."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
    mo = montecarlo.mc_moments(montecarlo.mlp_ntk_sampler(x, widths=256, depth=3, bias=bias), 384, chunk=64, seed=1)
    kinf = kernels.relu_ntk(x, depth=3, bias=bias)
    z = (mo.mean - kinf) / mo.mean_se
    assert z.abs().max() < 3, z
    assert (mo.mean_se / kinf.abs().max()).max() < 0.03  # the test has power: 3 SE < 10% of K


def test_nngp_matches_monte_carlo_of_outputs():
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(5))
    model = CollegialMLP(2, 256, depth=2, m=3000, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        f = model.members(x)  # (m, N)
    mo = montecarlo.moments(f[:, :, None] * f[:, None, :])
    z = (mo.mean - kernels.relu_nngp(x, depth=2)) / mo.mean_se
    assert z.abs().max() < 3, z


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: kernels.relu_ntk(torch.randn(3, 2), depth=0), "depth must be an integer >= 1, got 0"),
        (lambda: kernels.relu_nngp(torch.randn(3, 2), depth=0), "depth must be an integer >= 1, got 0"),
        (
            lambda: kernels.relu_ntk(torch.randn(3), depth=1),
            r"x1 must be a tensor of shape \(N1, n_in\), got torch.Size\(\[3\]\)",
        ),
        (lambda: kernels.relu_ntk([[1.0, 2.0]]), r"x1 must be a tensor of shape \(N1, n_in\), got <class 'list'>"),
        (
            lambda: kernels.relu_ntk(torch.randn(3, 2), torch.randn(3, 4)),
            r"x2 must be a tensor of shape \(N2, 2\) like x1, got \(3, 4\)",
        ),
        (lambda: kernels.relu_ntk(torch.randn(3, 2), torch.randn(3)), r"x2 must .*, got \(3,\)"),
        (lambda: kernels.relu_ntk(torch.randn(3, 2), [[1.0, 2.0]]), r"x2 must .*, got \(\)"),
        (lambda: kernels.relu_ntk(torch.randn(3, 2), torch.randn(4, 2), diagonal=True), "equal N, got 3 and 4"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
