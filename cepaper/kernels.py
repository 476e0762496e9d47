"""The analytic infinite-width NTK ``K_inf`` of the ReLU MLP of Eq. 3 (arc-cosine recursion).

For the NTK parameterization of :mod:`cepaper.models.mlp` (weights ``N(0, 1)``; forward scales
``sqrt(2/n_0)`` on the first layer, ``sqrt(2/n_{l-1})`` on hidden layers, ``sqrt(1/n_L)`` on the
readout) the pre-activation covariances ``Sigma_l`` and the NTK ``Theta_l`` obey, as every width
``n_l -> inf`` (Jacot et al. 2018; Arora et al. 2019)::

    Sigma_1 = (2/n_0) x.x' (+ 1)                  Theta_1 = Sigma_1
    Sigma_{l+1} = 2 k1(Sigma_l) (+ 1)              Theta_{l+1} = Sigma_{l+1} + 2 k0(Sigma_l) Theta_l
    Sigma_out  =   k1(Sigma_L) (+ 1)               K_inf = Theta_out = Sigma_out + k0(Sigma_L) Theta_L

with ``(+ 1)`` only when every layer has an N(0, 1) bias, and for ``(u, v) ~ N(0, Sigma)``, ReLU ``phi``,
``rho = Sigma_12 / sqrt(Sigma_11 Sigma_22) = cos(t)``::

    k1 = E[phi(u) phi(v)]   = sqrt(Sigma_11 Sigma_22) (sin t + (pi - t) cos t) / (2 pi)
    k0 = E[phi'(u) phi'(v)] = (pi - t) / (2 pi)

A known value: for ``|x| = 1`` and no bias, ``K_inf(x, x) = (2/n_0) (L + 1) / 2``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cepaper._checks import positive_int


def arccos_moments(s11, s22, s12):
    """ReLU moments ``(k1, k0) = (E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for ``(u, v) ~ N(0, Sigma)``.

    Args:
        s11, s22, s12: the entries of ``Sigma`` (broadcastable tensors of one shape ``S``).
    Returns:
        ``(k1, k0)``, each of shape ``S``. A zero variance gives ``k1 = 0`` and ``k0 = 1/2 (1 - t/pi)``
        with ``t = pi/2`` (correlation taken as 0), the limit the recursion needs.
    """
    norm = torch.sqrt(s11 * s22)
    rho = torch.where(norm > 0, s12 / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
    t = torch.arccos(rho.clamp(-1.0, 1.0))
    k1 = norm * (torch.sin(t) + (math.pi - t) * torch.cos(t)) / (2 * math.pi)
    k0 = (math.pi - t) / (2 * math.pi)
    return k1, k0


def _recursion(s11, s22, s12, n_in, depth, bias):
    """Run the ``Sigma``/``Theta`` recursion on input dot products; returns ``(K_inf, Sigma_out)``."""
    b = 1.0 if bias else 0.0
    s11, s22, s12 = (2.0 / n_in * s + b for s in (s11, s22, s12))
    theta = s12
    for l in range(depth):
        k1, k0 = arccos_moments(s11, s22, s12)
        last = l == depth - 1
        c = 1.0 if last else 2.0  # readout scale sqrt(1/n_L), hidden scale sqrt(2/n_l)
        theta = c * k1 + b + c * k0 * theta
        s12 = c * k1 + b
        if not last:  # diagonal variances: k1(s, s, s) = s / 2
            s11, s22 = s11 + b, s22 + b  # 2 * s/2 + b
    return theta, s12


def _inputs(x1, x2, diagonal):
    """Check ``x1, x2`` and return float64 dot products ``(s11, s22, s12)`` and ``n_0``."""
    if not torch.is_tensor(x1) or x1.ndim != 2:
        raise ValueError(f"x1 must be a tensor of shape (N1, n_in), got {getattr(x1, 'shape', type(x1))}")
    x1 = x1.double()
    x2 = x1 if x2 is None else x2
    if not torch.is_tensor(x2) or x2.ndim != 2 or x2.shape[1] != x1.shape[1]:
        raise ValueError(
            f"x2 must be a tensor of shape (N2, {x1.shape[1]}) like x1, got {tuple(getattr(x2, 'shape', ()))}"
        )
    x2 = x2.to(x1)
    n1, n2 = (x1 * x1).sum(1), (x2 * x2).sum(1)
    if diagonal:
        if x1.shape[0] != x2.shape[0]:
            raise ValueError(f"diagonal=True needs x1 and x2 with equal N, got {x1.shape[0]} and {x2.shape[0]}")
        return n1, n2, (x1 * x2).sum(1), x1.shape[1]
    return n1[:, None], n2[None, :], x1 @ x2.T, x1.shape[1]


def relu_ntk(
    x1: Tensor, x2: Tensor | None = None, depth: int = 1, bias: bool = False, diagonal: bool = False
) -> Tensor:
    """Infinite-width NTK ``K_inf(x1, x2)`` of the NTK-parameterized ReLU MLP (Eq. 3), any depth.

    Computed in float64 by the arc-cosine recursion in the module docstring; it is the limit of
    :func:`cepaper.ntk.member_ntk` (and of the ensemble NTK of Eq. 4) as every width grows.

    Args:
        x1: inputs, shape ``(N1, n_0)``.
        x2: inputs, shape ``(N2, n_0)``; ``None`` means ``x1``.
        depth: number of hidden layers ``L`` (the readout is layer ``L + 1``), ``>= 1``.
        bias: every layer adds an unscaled ``N(0, 1)`` bias (``CollegialMLP(bias=True)``).
        diagonal: return only ``K_inf(x1[i], x2[i])`` (needs ``N1 == N2``).
    Returns:
        float64 tensor of shape ``(N1, N2)``, or ``(N,)`` when ``diagonal``.
    """
    depth = positive_int("depth", depth)
    s11, s22, s12, n_in = _inputs(x1, x2, diagonal)
    return _recursion(s11, s22, s12, n_in, depth, bias)[0]


def relu_nngp(
    x1: Tensor, x2: Tensor | None = None, depth: int = 1, bias: bool = False, diagonal: bool = False
) -> Tensor:
    """Infinite-width NNGP kernel ``E[f(x1) f(x2)]`` of the same network; shapes as :func:`relu_ntk`."""
    depth = positive_int("depth", depth)
    s11, s22, s12, n_in = _inputs(x1, x2, diagonal)
    return _recursion(s11, s22, s12, n_in, depth, bias)[1]
