"""The NTK-parameterized ReLU MLP of Eq. 3 and its collegial ensemble (Eq. 4), batched over members.

One module holds all ``m`` members: layer ``l`` is one weight tensor of shape ``(m, n_l, n_{l-1})``
(a block-diagonal layer), so a forward pass is one batched matmul per layer, never a Python loop.

With ``phi`` the ReLU (or, for the controls of Theorem 1, an analytic activation: ``ACTIVATIONS``)
and ``h_0 = x``::

    z_l = sqrt(2 / n_{l-1}) W_l h_{l-1},   h_l = phi(z_l)        l = 1..L  (hidden widths n_1..n_L)
    f_j = sqrt(1 / n_L) W_{L+1} h_L                              (readout of member j: scalar, or C outputs)
    F_e = m^{-1/2} sum_j f_j                                     (Eq. 4)

All weights are drawn i.i.d. N(0, 1): the scales live in the forward pass (NTK parameterization).
Eq. 3 has one output; ``outputs = C`` gives every member ``C`` outputs (a classifier, Sec. 4.1).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torch.nn import functional as F

from cepaper._checks import choice, positive_int

#: The activations ``phi`` a :class:`CollegialMLP` takes. Eq. 3 is ReLU; Theorem 1 assumes an
#: analytic ``phi`` (Appendix F), so GELU, softplus and tanh serve as its smooth controls, under the
#: same ``sqrt(2 / n_{l-1})`` scales.
ACTIVATIONS = {"relu": torch.relu, "gelu": F.gelu, "softplus": F.softplus, "tanh": torch.tanh}


def check_activation(activation):
    """Return ``activation`` if it names one of ``ACTIVATIONS``, else raise a ``ValueError`` listing them."""
    return choice("activation", activation, tuple(ACTIVATIONS))


def hidden_widths(widths, depth=None):
    """Normalize ``widths`` (an int with ``depth``, or a sequence) to a tuple of ints >= 1."""
    if isinstance(widths, int):
        widths = (widths,) * positive_int("depth", depth if depth is not None else 1)
    widths = tuple(positive_int("width", n) for n in widths)
    if not widths:
        raise ValueError("widths must name at least one hidden layer, got ()")
    return widths


def ntk_scales(n_in, widths):
    """Forward multipliers of Eq. 3: ``sqrt(2/n_{l-1})`` for ``l = 1..L``, then ``sqrt(1/n_L)``.

    Args:
        n_in: input dimension ``n_0``.
        widths: hidden widths ``(n_1, ..., n_L)``.
    Returns:
        a list of ``L + 1`` floats, one per weight layer.
    """
    fans = (positive_int("n_in", n_in),) + hidden_widths(widths)
    return [math.sqrt(2.0 / f) for f in fans[:-1]] + [math.sqrt(1.0 / fans[-1])]


@functools.cache
def _draw_pool():
    """Threads that fill the random streams of :meth:`CollegialMLP.reset_parameters` in parallel."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="cepaper-draw")


class CollegialMLP(nn.Module):
    """``m`` NTK-parameterized ReLU MLPs ``R^{n_in} -> R`` (or ``R^C``), summed and scaled by ``1/sqrt(m)``.

    Args:
        n_in: input dimension ``n_0``.
        widths: hidden widths ``(n_1, ..., n_L)``, or one int repeated ``depth`` times.
        m: multiplicity (number of members); ``m = 1`` is the single network of Eq. 3.
        depth: number of hidden layers ``L`` when ``widths`` is an int.
        outputs: outputs ``C`` of every member (1: the scalar network of Eq. 3; the NTK code of
            :mod:`cepaper.ntk` takes only scalar models).
        bias: add a bias ``b_l ~ N(0, 1)`` (unscaled) to every layer; Eq. 3 has none.
        generator: ``torch.Generator`` for the initial draw (reproducible weights).
        streams: split the members into this many contiguous groups, each drawn from its own
            random stream (the first from ``generator``, the others seeded from it) in parallel
            threads. The draws depend on ``streams``, never on how many cores run them. ``1`` (the
            default) draws everything from ``generator``; the Monte Carlo samplers use 2, since the
            single-threaded generator bounds their rate.
        activation: ``phi``, a key of ``ACTIVATIONS`` (Eq. 3: ``"relu"``).
    """

    def __init__(
        self,
        n_in: int,
        widths: int | Sequence[int],
        m: int = 1,
        depth: int | None = None,
        bias: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        streams: int = 1,
        outputs: int = 1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.activation = check_activation(activation)
        self.n_in = positive_int("n_in", n_in)
        self.widths = hidden_widths(widths, depth)
        self.m = positive_int("m", m)
        self.streams = positive_int("streams", streams)
        self.outputs = positive_int("outputs", outputs)
        fans = (self.n_in,) + self.widths
        outs = self.widths + (self.outputs,)
        kw = dict(dtype=dtype, device=device)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(self.m, o, i, **kw)) for i, o in zip(fans, outs))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(self.m, 1, o, **kw)) for o in outs) if bias else None
        self.reset_parameters(generator)

    @property
    def depth(self):
        """Number of hidden layers ``L``."""
        return len(self.widths)

    @property
    def scales(self):
        """Forward multiplier of each weight layer: ``sqrt(2/n_{l-1})``, then ``sqrt(1/n_L)``."""
        return ntk_scales(self.n_in, self.widths)

    @torch.no_grad()
    def reset_parameters(self, generator=None):
        """Draw every weight (and bias) i.i.d. from N(0, 1), layer by layer, weights first.

        With ``streams = 1`` the draws equal ``torch.randn(p.shape, generator=generator)`` taken in
        that order; they are written in place when the generator lives on the parameters' device.
        With more streams, member group ``k`` is drawn the same way from stream ``k`` (see the class).
        """
        params = list(self.parameters())
        streams = min(self.streams, self.m)
        if streams == 1 or generator is None or any(p.device != generator.device for p in params):
            for p in params:
                if generator is None or generator.device == p.device:
                    p.normal_(generator=generator)
                else:
                    p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))
            return
        seeds = torch.randint(2**62, (streams - 1,), generator=generator, device=generator.device)
        gens = [generator] + [torch.Generator(device=generator.device).manual_seed(int(s)) for s in seeds]
        bounds = [self.m * k // streams for k in range(streams + 1)]

        def fill(k):
            with torch.no_grad():  # grad mode is per thread
                for p in params:
                    p[bounds[k] : bounds[k + 1]].normal_(generator=gens[k])

        list(_draw_pool().map(fill, range(streams)))

    def layers(self, x):
        """Hidden pre-activations ``[z_1, ..., z_L]`` and the member outputs.

        Args:
            x: inputs ``(N, n_in)`` seen by every member, or ``(G, N, n_in)``: one batch per group
                of ``m / G`` consecutive members (``G`` must divide ``m``).
        Returns:
            ``(zs, out)``: each ``z_l`` of shape ``(m, N, n_l)``; ``out`` of shape ``(m, N)``, or
            ``(m, N, C)`` when ``outputs = C > 1``.
        """
        grouped = x.ndim == 3
        if grouped and (x.shape[-1] != self.n_in or x.shape[0] < 1 or self.m % x.shape[0]):
            raise ValueError(
                f"grouped x must have shape (G, N, {self.n_in}) with G dividing m = {self.m}, got {tuple(x.shape)}"
            )
        if not grouped and (x.ndim != 2 or x.shape[1] != self.n_in):
            raise ValueError(f"x must have shape (N, {self.n_in}), got {tuple(x.shape)}")
        h, zs = x, []
        for l, (w, s) in enumerate(zip(self.weights, self.scales)):
            if l == 0 and grouped:  # group g: (N, n_in) @ (n_in, k * n_1) in one batched matmul
                g, k = x.shape[0], self.m // x.shape[0]
                z = torch.bmm(h, w.reshape(g, k * w.shape[1], w.shape[2]).transpose(1, 2))
                z = s * z.reshape(g, -1, k, w.shape[1]).transpose(1, 2).reshape(self.m, -1, w.shape[1])
            else:
                z = s * torch.matmul(h, w.transpose(1, 2))
            if self.biases is not None:
                z = z + self.biases[l]
            if l == self.depth:
                return zs, z.squeeze(-1) if self.outputs == 1 else z
            zs.append(z)
            h = ACTIVATIONS[self.activation](z)

    def members(self, x):
        """Outputs ``f_j(x)`` of every member, shape ``(m, N)`` (``(m, N, C)`` with ``C`` outputs)."""
        return self.layers(x)[1]

    def forward(self, x):
        """Ensemble output ``F_e(x) = m^{-1/2} sum_j f_j(x)`` (Eq. 4), shape ``(N,)`` (or ``(N, C)``)."""
        if x.ndim != 2:
            raise ValueError(
                f"x must have shape (N, {self.n_in}): the ensemble sums members that see the "
                f"same inputs; got {tuple(x.shape)} (use members() for grouped inputs)"
            )
        return self.members(x).sum(0) / math.sqrt(self.m)
