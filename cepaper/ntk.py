"""Empirical NTK of scalar-output models and the ensemble NTK (Eq. 4).

For a model ``f: R^{n_0} -> R`` with parameters ``theta`` and inputs ``x1`` (N1 of them), ``x2`` (N2),
the empirical NTK is the ``(N1, N2)`` matrix (Sec. 2)::

    K(x1, x2) = grad_theta f(x1) . grad_theta f(x2)^T

Three paths compute it, all exact:

* ``structured`` -- the NTK-parameterized ReLU MLP of Eq. 3 (:class:`~cepaper.models.mlp.CollegialMLP`):
  one batched forward and backward, never a Jacobian. With ``h_{l-1}`` the input of weight layer
  ``l``, ``s_l`` its forward scale and ``delta_l = df/dz_l``::

      K = sum_l s_l^2 (delta_l delta_l'^T) * (h_{l-1} h_{l-1}'^T)   (+ delta_l delta_l'^T with biases)

* ``jacobian`` -- any module (grouped convolutions included): per-input gradients by
  ``torch.func.vmap(jacrev)``, contracted layer by layer;
* ``naive`` -- one ``torch.autograd.grad`` per input, the reference the tests compare against.

The ensemble ``F_e = m^{-1/2} sum_j f_j`` of Eq. 4 has ``K_e = (1/m) sum_j K_n(theta_j)``; Lemma 1
(Eq. 6) says ``K_e -> K_n^inf = E_theta[K_n(theta)]`` (the NMK, Eq. 5) as ``m -> inf``; Monte Carlo
over independent draws (:mod:`cepaper.montecarlo`) estimates the NMK and ``Var(K)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from cepaper._checks import choice, positive_int
from cepaper.models.mlp import CollegialMLP

METHODS = ("auto", "structured", "jacobian", "naive")
#: The read-outs of :func:`readout_vector`.
READOUTS = ("center", "mean", "random")


# ----------------------------------------------------------------------------------------- checks


def readout_vector(kind, out_shape, seed=0, dtype=torch.float32, device=None):
    """The unit read-out ``v`` of shape ``out_shape = (C, *spatial)`` that makes ``f = <v, out>`` a scalar model.

    ``"center"``: channel 0 at the centre of every spatial axis (index ``s // 2``; for the Fig. 5 block's
    ``(n_out, H, W)`` output the centre pixel); ``"mean"``: all entries equal (global average pooling summed
    over channels); ``"random"``: a fixed Gaussian direction drawn with ``seed``. The norm of ``v`` scales
    ``K`` and cancels in ``E[K^2] / E[K]^2``.
    """
    choice("readout", kind, READOUTS)
    shape = tuple(positive_int("output shape entry", s) for s in out_shape) or (1,)
    if kind == "mean":
        v = torch.ones(shape, dtype=torch.float64)
    elif kind == "center":
        v = torch.zeros(shape, dtype=torch.float64)
        v[(0,) + tuple(s // 2 for s in shape[1:])] = 1.0
    else:
        v = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (v / v.norm()).to(dtype=dtype, device=device)


def check_inputs(x1, x2):
    """``x1`` of shape ``(N1, ...)`` with ``N1 >= 1``; ``x2`` ``None`` or ``(N2, ...)`` alike."""
    if not torch.is_tensor(x1) or x1.ndim < 1 or x1.shape[0] < 1:
        raise ValueError(
            f"x1 must be a tensor of shape (N1, ...) with N1 >= 1, "
            f"got {tuple(getattr(x1, 'shape', ())) or type(x1).__name__}"
        )
    if x2 is not None and (not torch.is_tensor(x2) or x2.ndim < 1 or x2.shape[0] < 1 or x2.shape[1:] != x1.shape[1:]):
        raise ValueError(
            f"x2 must be a tensor of shape (N2, {', '.join(map(str, x1.shape[1:]))}) "
            f"like x1, got {tuple(getattr(x2, 'shape', ())) or type(x2).__name__}"
        )


def _check_mlp_inputs(model, x1, x2):
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and (not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != model.n_in or x.shape[0] < 1):
            raise ValueError(
                f"{name} must have shape (N, {model.n_in}) with N >= 1, "
                f"got {tuple(getattr(x, 'shape', ())) or type(x).__name__}"
            )


def _scalar(out):
    """The model's output for a batch of one input as a 0-dim tensor; it must be ``(1,)`` or ``(1, 1)``."""
    if not torch.is_tensor(out) or tuple(out.shape) not in ((1,), (1, 1)):
        raise ValueError(
            f"model output must be one scalar per input, shape (N,) or (N, 1); "
            f"got {tuple(getattr(out, 'shape', ())) or type(out).__name__} for N = 1"
        )
    return out.reshape(())


# ------------------------------------------------------------------------- structured MLP path


def entry_index(entries, n1, n2):
    """Normalize an ``entries`` spec to index tensors ``(rows, cols)``, or ``None`` for all entries.

    Args:
        entries: ``None`` (the full matrix), ``"diag"`` (``K[i, i]``, needs ``n1 == n2``), or a pair
            ``(rows, cols)`` of equal-length integer sequences selecting ``K[rows[k], cols[k]]``.
        n1, n2: the number of rows and columns of ``K``.
    Returns:
        ``None`` or ``(rows, cols)``, two int64 tensors of shape ``(P,)``.
    """
    if entries is None:
        return None
    if isinstance(entries, str):
        if entries != "diag":
            raise ValueError(f"entries must be None, 'diag' or (rows, cols), got {entries!r}")
        if n1 != n2:
            raise ValueError(f"entries='diag' needs N1 == N2, got {n1} and {n2}")
        idx = torch.arange(n1)
        return idx, idx
    try:
        rows, cols = (torch.as_tensor(e, dtype=torch.int64).reshape(-1) for e in entries)
    except (TypeError, ValueError) as err:
        raise ValueError(f"entries must be None, 'diag' or (rows, cols), got {entries!r}") from err
    if rows.shape != cols.shape or rows.numel() == 0:
        raise ValueError(
            f"entries (rows, cols) must be non-empty and of equal length, got {rows.numel()} and {cols.numel()}"
        )
    if rows.min() < 0 or rows.max() >= n1 or cols.min() < 0 or cols.max() >= n2:
        raise ValueError(
            f"entries must index rows in [0, {n1}) and cols in [0, {n2}), "
            f"got rows in [{rows.min()}, {rows.max()}], cols in [{cols.min()}, {cols.max()}]"
        )
    return rows, cols


def mlp_features(weights, scales, x, biases=None):
    """Layer inputs ``h_{l-1}`` and scaled sensitivities ``s_l delta_l`` of Eq. 3, batched over members.

    One forward pass and one backward pass (by hand, no autograd) through the ``m`` members: per
    layer one scaled batched matmul (``baddbmm``, bias included) and one fused ReLU or ReLU-backward
    (``threshold_backward``, the mask ``z_l > 0`` read from ``h_l``), so few kernels run per chunk.

    Args:
        weights: ``L + 1`` tensors, ``W_l`` of shape ``(m, n_l, n_{l-1})``; the readout ``(m, 1, n_L)``.
        scales: ``L + 1`` floats ``s_l > 0`` (``z_l = s_l W_l h_{l-1} (+ b_l)``).
        x: inputs of shape ``(N, n_0)``.
        biases: ``None`` or ``L + 1`` tensors of shape ``(m, 1, n_l)``.
    Returns:
        ``(hs, ds)``: ``hs[l]`` is ``h_{l-1}`` of shape ``(m, N, n_{l-1})`` (``hs[0] = x``, shape
        ``(N, n_0)``); ``ds[l]`` is ``s_l df/dz_l`` of shape ``(m, N, n_l)`` (``ds[-1]`` holds ``s_{L+1}``).
    """
    if weights[-1].shape[1] != 1:
        raise ValueError(
            f"the readout must have shape (m, 1, n_L) (scalar-output members), got {tuple(weights[-1].shape)}"
        )
    relu_backward = torch.ops.aten.threshold_backward
    m, n = weights[0].shape[0], x.shape[0]
    zero = weights[0].new_zeros(())
    hs, h = [x], x.expand(m, *x.shape)
    for l, (w, s) in enumerate(zip(weights[:-1], scales[:-1])):
        b, beta = (zero, 0.0) if biases is None else (biases[l], 1.0)
        h = torch.baddbmm(b, h, w.transpose(1, 2), beta=beta, alpha=s).relu_()
        hs.append(h)
    w_out = weights[-1]
    ds = [w_out.new_full((m, n, 1), scales[-1])]
    d = relu_backward((scales[-1] * scales[-2]) * w_out.expand(m, n, w_out.shape[-1]), hs[-1], 0)
    ds.append(d)  # s_L delta_L = s_L s_{L+1} W_{L+1} * 1[z_L > 0]
    for l in range(len(weights) - 2, 0, -1):  # s_l delta_l = s_l (s_{l+1} delta_{l+1}) W_{l+1} * 1[z_l > 0]
        d = relu_backward(torch.baddbmm(zero, d, weights[l], beta=0.0, alpha=scales[l - 1]), hs[l], 0)
        ds.append(d)
    return hs, ds[::-1]


def mlp_member_ntk(
    weights: Sequence[Tensor],
    scales: Sequence[float],
    x1: Tensor,
    x2: Tensor | None = None,
    biases: Sequence[Tensor] | None = None,
    entries: str | None = None,
) -> Tensor:
    """NTK ``K_n(theta_j)`` of each member of a batched NTK-parameterized ReLU MLP (Eq. 3), by structure.

    ``K = sum_l (s_l delta_l)(s_l delta_l')^T * (h_{l-1} h_{l-1}'^T)`` (+ ``delta_l delta_l'^T`` per bias),
    from one batched forward and backward over ``x1`` and ``x2`` together; no Jacobian is formed.

    Args:
        weights, scales, biases: as :func:`mlp_features`.
        x1: inputs of shape ``(N1, n_0)``; x2: ``(N2, n_0)`` or ``None`` (``x1``).
        entries: ``None``, ``"diag"`` or ``(rows, cols)`` (see :func:`entry_index`).
    Returns:
        ``(m, N1, N2)``, or ``(m, P)`` for ``P`` selected entries, in the weights' dtype.
    """
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    idx = entry_index(entries, n1, n2)
    x = x1 if x2 is None else torch.cat([x1, x2.to(x1)])
    x = x.to(weights[0])
    hs, ds = mlp_features(weights, scales, x, biases)
    if idx is not None:
        rows, cols = idx[0].to(x.device), idx[1].to(x.device) + (0 if x2 is None else n1)
    out = None
    for l, (h, d) in enumerate(zip(hs, ds)):
        if idx is None:
            h1, h2 = (h, h) if x2 is None else (h[..., :n1, :], h[..., n1:, :])
            d1, d2 = (d, d) if x2 is None else (d[:, :n1], d[:, n1:])
            hh = torch.matmul(h1, h2.transpose(-1, -2))
            dd = d1 * d2.transpose(-1, -2) if d.shape[-1] == 1 else torch.matmul(d1, d2.transpose(-1, -2))
        else:
            hh = torch.linalg.vecdot(h.index_select(-2, rows), h.index_select(-2, cols))
            dd = torch.linalg.vecdot(d.index_select(-2, rows), d.index_select(-2, cols))
        term = dd * hh
        if biases is not None:
            term = term + dd / scales[l] ** 2
        out = term if out is None else out.add_(term)
    return out


def member_ntk(model: CollegialMLP, x1: Tensor, x2: Tensor | None = None, entries: str | None = None) -> Tensor:
    """NTK ``K_n(theta_j)`` of every member ``f_j`` of a :class:`CollegialMLP`, shape ``(m, N1, N2)``.

    The structured path (:func:`mlp_member_ntk`): one batched forward and backward, no Jacobian.
    The ensemble NTK of Eq. 4 is ``member_ntk(model, x1, x2).mean(0)``; since the members are
    independent draws, a model with ``m = T`` also batches ``T`` Monte Carlo draws of ``K_n``.

    Args:
        model: a :class:`~cepaper.models.mlp.CollegialMLP`.
        x1: inputs ``(N1, n_in)``; x2: inputs ``(N2, n_in)`` or ``None`` (``x1``).
        entries: ``None`` (all), ``"diag"`` or ``(rows, cols)``; then the result is ``(m, P)``.
    Returns:
        tensor ``(m, N1, N2)`` (or ``(m, P)``) in the model's dtype, detached from autograd.
    """
    if not isinstance(model, CollegialMLP):
        raise TypeError(
            f"model must be a CollegialMLP, got {type(model).__name__}; use empirical_ntk for other modules"
        )
    if model.outputs != 1:
        raise ValueError(
            f"the NTK here is of scalar-output models: the CollegialMLP must have outputs=1, "
            f"got outputs={model.outputs}"
        )
    if model.activation != "relu":
        raise ValueError(
            f"the structured path is the ReLU network of Eq. 3; this CollegialMLP has activation="
            f"{model.activation!r}: use empirical_ntk (method 'auto' or 'jacobian')"
        )
    _check_mlp_inputs(model, x1, x2)
    with torch.no_grad():
        weights = [w.detach() for w in model.weights]
        biases = None if model.biases is None else [b.detach() for b in model.biases]
        return mlp_member_ntk(weights, model.scales, x1, x2, biases, entries)


def ensemble_ntk(member_kernels: Tensor) -> Tensor:
    """Ensemble NTK of Eq. 4, ``K_e = (1/m) sum_j K_n(theta_j)``: shape ``(m, ...)`` -> ``(...)``."""
    if not torch.is_tensor(member_kernels) or member_kernels.ndim < 1 or member_kernels.shape[0] < 1:
        raise ValueError(
            f"member_kernels must be a tensor of shape (m, ...) with m >= 1, "
            f"got {tuple(getattr(member_kernels, 'shape', ()))}"
        )
    return member_kernels.mean(0)


# ------------------------------------------------------------------------------- general paths


def _trainable(model):
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no parameters with requires_grad=True")
    return params


def jacobian_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None = None, chunk_size: int | None = None) -> Tensor:
    """Empirical NTK of any scalar-output module by ``torch.func``: ``vmap(jacrev)`` then contraction.

    Each input ``x`` of shape ``(...)`` is run as the batch ``x[None]`` (so BatchNorm must be in eval
    mode); every parameter with ``requires_grad`` counts, of any layer type (grouped convolutions
    included). The ``(N, P)`` Jacobian is materialized one parameter tensor at a time in the sum
    ``K = sum_p J1_p J2_p^T``.

    Args:
        model: a module mapping ``(N, ...)`` to ``(N,)`` or ``(N, 1)``.
        x1: inputs ``(N1, ...)``; x2: ``(N2, ...)`` or ``None`` (``x1``).
        chunk_size: inputs per ``vmap`` chunk (``None``: all at once).
    Returns:
        tensor ``(N1, N2)`` in the parameters' dtype.
    """
    check_inputs(x1, x2)
    params = _trainable(model)
    buffers = dict(model.named_buffers())

    def f(p, x):
        return _scalar(functional_call(model, (p, buffers), (x.unsqueeze(0),)))

    jac = vmap(jacrev(f), in_dims=(None, 0), chunk_size=chunk_size)
    j1 = jac(params, x1)
    j2 = j1 if x2 is None else jac(params, x2)
    out = None
    for k in params:
        a, b = j1[k].reshape(len(x1), -1), j2[k].reshape(j2[k].shape[0], -1)  # a 0-dim parameter too
        out = a @ b.T if out is None else out.addmm_(a, b.T)
    return out


def naive_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None = None) -> Tensor:
    """Reference NTK: one ``torch.autograd.grad`` per input, gradients stacked to ``G``, ``K = G1 G2^T``.

    Args and shapes as :func:`jacobian_ntk`; slow and memory-hungry (``(N, P)`` gradients), but obvious.
    """
    check_inputs(x1, x2)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters with requires_grad=True")

    def grads(x):
        rows = []
        for i in range(x.shape[0]):
            g = torch.autograd.grad(_scalar(model(x[i : i + 1])), params, allow_unused=True)
            rows.append(
                torch.cat([torch.zeros_like(p).flatten() if gi is None else gi.flatten() for p, gi in zip(params, g)])
            )
        return torch.stack(rows)

    g1 = grads(x1)
    g2 = g1 if x2 is None else grads(x2)
    return g1 @ g2.T


def empirical_ntk(
    model: nn.Module, x1: Tensor, x2: Tensor | None = None, method: str = "auto", chunk_size: int | None = None
) -> Tensor:
    """Empirical NTK ``K(x1, x2) = grad_theta F(x1) . grad_theta F(x2)^T`` of a scalar-output module.

    ``method="auto"`` takes the structured path for a ReLU :class:`CollegialMLP` (returning the ensemble
    NTK ``K_e`` of Eq. 4, the mean of :func:`member_ntk` over members) and the ``torch.func`` path
    (:func:`jacobian_ntk`) otherwise (other modules, other activations); ``"naive"`` is :func:`naive_ntk`.

    Args:
        model: a module mapping ``(N, ...)`` to ``(N,)`` or ``(N, 1)``.
        x1: inputs ``(N1, ...)``; x2: inputs ``(N2, ...)`` or ``None`` (``x1``).
        method: one of ``"auto"``, ``"structured"``, ``"jacobian"``, ``"naive"``.
        chunk_size: inputs per ``vmap`` chunk of the jacobian path.
    Returns:
        tensor of shape ``(N1, N2)``.
    """
    choice("method", method, METHODS)
    if method == "structured" and not isinstance(model, CollegialMLP):
        raise ValueError(f"method='structured' needs a CollegialMLP, got {type(model).__name__}")
    structured = isinstance(model, CollegialMLP) and model.activation == "relu"
    if method == "structured" or (method == "auto" and structured):
        return ensemble_ntk(member_ntk(model, x1, x2))
    if method == "naive":
        return naive_ntk(model, x1, x2)
    return jacobian_ntk(model, x1, x2, chunk_size)


# --------------------------------------------------------------------------------- Monte Carlo


# ------------------------------------------------------------------------- Lemma 1 (Fig. 2) tools
