"""The ResNet bottleneck block of Fig. 5 as a scalar function, for fitting α (Sec. 4.2, App. D).

NTK parameterization, no BN, identity shortcut (``n_in == n_out``). With ``phi`` the ReLU, an input
``x`` of shape ``(n_in, H, W)`` and every weight drawn i.i.d. N(0, 1) (the scales live in the forward
pass, as in :mod:`cepaper.models.mlp`)::

    z1 = sqrt(2 / n_in)   W1 * x          1x1 conv  n_in -> n       fan-in n_in
    z2 = sqrt(2 / (9 n))  W2 * phi(z1)    3x3 conv  n -> n, pad 1   fan-in 9 n
    y  = sqrt(1 / n)      W3 * phi(z2)    1x1 conv  n -> n_out      fan-in n
    out = x + y          (Fig. 5's "+";  phi(x + y) with ``post_relu=True``, as in ResNet v1)
    f(x) = <v, out>      a fixed read-out ``v`` of shape (n_out, H, W) makes the block scalar

The input ``x``, its spatial size ``H x W`` and the read-out ``v`` are the choices that turn the
block into the scalar function whose NTK is measured; :func:`block_inputs` and
:func:`cepaper.ntk.readout_vector` build the standard ones. The default is the literal reading of Sec. 4.2's
"one diagonal entry of the NTK matrix": the NTK of one output unit (``readout="center"``: channel 0
at the centre pixel) on a Gaussian input of size 3x3, the unit's receptive field (a larger input
gives the same law). These choices change alpha several-fold (notebook ``03_alpha``). The shortcut
has no weights, so without the post ReLU it only shifts ``f`` and leaves the NTK unchanged.

:class:`Bottleneck` is one draw built from ``nn.Conv2d`` layers (any generic tool, e.g.
:func:`cepaper.alpha.sweeps.fan_ins` or :func:`cepaper.ntk.empirical_ntk`, can read it). :class:`BottleneckDraws`
holds ``T`` independent draws as one module: the convolutions are grouped with ``groups = T``, so
one forward pass evaluates all ``T`` scalar functions, and :func:`bottleneck_ntk` returns all ``T``
NTK matrices from one structured backward pass. Draw ``t`` seeded with ``s`` has exactly the weights
of ``Bottleneck(n, seed=s)``.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from cepaper._checks import choice, positive_int

INPUTS = ("gaussian", "constant")


def block_inputs(n_in=256, spatial=3, count=2, corr=0.5, kind="gaussian", seed=0, dtype=torch.float32, device=None):
    """Inputs ``x_1..x_count`` of the block, entries N(0, 1), pairwise correlation ``corr``.

    ``x_k = sqrt(corr) g_0 + sqrt(1 - corr) g_k`` with independent standard Gaussian maps ``g``, so
    every entry has variance 1 and ``E[x_i . x_j] / E[|x|^2] = corr`` for ``i != j``.

    Args:
        n_in: channels; spatial: ``H = W``; count: number of inputs ``N``.
        corr: correlation between distinct inputs, in ``[0, 1]`` (it sets ``K(x1, x2)``).
        kind: ``"gaussian"`` (i.i.d. over channels and positions) or ``"constant"`` (one Gaussian
            vector over channels, the same at every position).
        seed: seed of the draw (the inputs are fixed across weight draws).
    Returns:
        tensor of shape ``(count, n_in, spatial, spatial)``.
    """
    n_in, spatial, count = (positive_int(k, v) for k, v in (("n_in", n_in), ("spatial", spatial), ("count", count)))
    if not 0.0 <= float(corr) <= 1.0:
        raise ValueError(f"corr must be in [0, 1], got {corr!r}")
    choice("kind", kind, INPUTS)
    g = torch.Generator().manual_seed(int(seed))
    shape = (count + 1, n_in, spatial, spatial) if kind == "gaussian" else (count + 1, n_in, 1, 1)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    x = math.sqrt(corr) * z[:1] + math.sqrt(1.0 - corr) * z[1:]
    return x.expand(count, n_in, spatial, spatial).to(dtype=dtype, device=device).contiguous()


def check_readout(readout, n_out):
    """Return ``readout`` if it has shape ``(n_out, H, W)`` (a scalar block), else raise."""
    if not torch.is_tensor(readout) or readout.ndim != 3 or readout.shape[0] != n_out:
        shape = tuple(readout.shape) if torch.is_tensor(readout) else type(readout).__name__
        raise ValueError(
            f"readout must have shape (n_out, H, W) = ({n_out}, H, W) so that the block is a "
            f"scalar function of its input; got {shape}"
        )
    if not torch.isfinite(readout).all() or not readout.abs().sum() > 0:
        raise ValueError("readout must be finite and not all zero")
    return readout


def bottleneck_shapes(n, n_in=256, n_out=256):
    """Weight shapes of one draw, in drawing order: ``W1 (n, n_in)``, ``W2 (n, n, 3, 3)``, ``W3 (n_out, n)``."""
    return [(n, n_in), (n, n, 3, 3), (n_out, n)]


def bottleneck_scales(n, n_in=256):
    """Forward multipliers ``(sqrt(2/n_in), sqrt(2/(9n)), sqrt(1/n))`` of the three convolutions."""
    return math.sqrt(2.0 / n_in), math.sqrt(2.0 / (9 * n)), math.sqrt(1.0 / n)


def _generator(seed, device):
    device = torch.device(device if device is not None else "cpu")
    return torch.Generator(device=device).manual_seed(int(seed))


def _check_x(x, n_in, readout):
    h, w = readout.shape[1:]
    if not torch.is_tensor(x) or x.ndim != 4 or tuple(x.shape[1:]) != (n_in, h, w):
        raise ValueError(
            f"x must have shape (N, {n_in}, {h}, {w}) to match the read-out, got {tuple(getattr(x, 'shape', ()))}"
        )
    return x


class Bottleneck(nn.Module):
    """One draw of the Fig. 5 block as a scalar function ``x -> <v, x + y(x)>`` (module docstring).

    Args:
        n: bottleneck width (``n = [n, n]`` in Sec. 4.2).
        readout: the read-out ``v``, shape ``(n_out, H, W)`` (see :func:`cepaper.ntk.readout_vector`).
        n_in: input (and output) channels; post_relu: apply ``phi`` after the shortcut sum.
        seed: draw the weights from a generator seeded with ``seed``; ``None`` draws them from torch's
            global RNG (the same numbers after ``torch.manual_seed(seed)``).
    """

    def __init__(self, n, readout, n_in=256, post_relu=False, seed=None, dtype=torch.float32, device=None):
        super().__init__()
        self.n, self.n_in, self.post_relu = positive_int("n", n), positive_int("n_in", n_in), bool(post_relu)
        self.register_buffer("readout", check_readout(readout, self.n_in).to(dtype=dtype, device=device))
        kw = dict(bias=False, dtype=dtype, device=torch.device(device or "cpu"))  # skip_init: no global RNG draw
        self.conv1 = nn.utils.skip_init(nn.Conv2d, self.n_in, self.n, 1, **kw)
        self.conv2 = nn.utils.skip_init(nn.Conv2d, self.n, self.n, 3, padding=1, **kw)
        self.conv3 = nn.utils.skip_init(nn.Conv2d, self.n, self.n_in, 1, **kw)
        g = None if seed is None else _generator(seed, self.conv1.weight.device)
        with torch.no_grad():
            for conv, shape in zip((self.conv1, self.conv2, self.conv3), bottleneck_shapes(n, n_in, n_in)):
                conv.weight.copy_(
                    torch.randn(shape, generator=g, dtype=dtype, device=conv.weight.device).view_as(conv.weight)
                )

    def forward(self, x):
        """``f(x)`` for inputs ``x`` of shape ``(N, n_in, H, W)``; returns shape ``(N,)``."""
        _check_x(x, self.n_in, self.readout)
        s1, s2, s3 = bottleneck_scales(self.n, self.n_in)
        h = torch.relu(s1 * self.conv1(x))
        h = torch.relu(s2 * self.conv2(h))
        out = x + s3 * self.conv3(h)
        out = torch.relu(out) if self.post_relu else out
        return (out * self.readout).sum((1, 2, 3))


class BottleneckDraws(nn.Module):
    """``T`` independent draws of :class:`Bottleneck`, evaluated together by grouped convolutions.

    Weights: ``w1 (T, n, n_in)``, ``w2 (T, n, n, 3, 3)``, ``w3 (T, n_out, n)``; draw ``t`` is drawn
    from a generator seeded with ``seeds[t]`` exactly as ``Bottleneck(n, seed=seeds[t])``.

    Args:
        n: bottleneck width; seeds: one seed per draw (``T = len(seeds)``).
        readout: ``v`` of shape ``(n_out, H, W)``; n_in: channels (``n_out = n_in``).
        post_relu: apply ``phi`` after the shortcut sum.
    """

    def __init__(self, n, seeds, readout, n_in=256, post_relu=False, dtype=torch.float32, device=None):
        super().__init__()
        self.n, self.n_in, self.post_relu = positive_int("n", n), positive_int("n_in", n_in), bool(post_relu)
        seeds = [int(s) for s in seeds]
        self.draws = len(seeds)
        if not self.draws:
            raise ValueError("seeds must hold at least one seed (one per draw), got []")
        self.register_buffer("readout", check_readout(readout, self.n_in).to(dtype=dtype, device=device))
        shapes = bottleneck_shapes(self.n, self.n_in, self.n_in)
        self.w1, self.w2, self.w3 = (
            nn.Parameter(torch.empty((self.draws,) + s, dtype=dtype, device=device)) for s in shapes
        )
        self.reset_parameters(seeds)

    @torch.no_grad()
    def reset_parameters(self, seeds):
        """Redraw every draw ``t`` from a generator seeded with ``seeds[t]``.

        On the CPU the draws are spread over ``torch.get_num_threads()`` threads (the Gaussian
        generator is single-threaded and bounds the Monte Carlo); each draw has its own generator,
        so the weights do not depend on the threading.
        """
        if len(seeds) != self.draws:
            raise ValueError(f"seeds must hold one seed per draw ({self.draws}), got {len(seeds)}")
        ws = (self.w1, self.w2, self.w3)

        def draw(t):
            g = _generator(seeds[t], self.w1.device)
            for w in ws:
                torch.randn(w.shape[1:], generator=g, dtype=w.dtype, device=w.device, out=w.data[t])

        workers = torch.get_num_threads() if self.w1.device.type == "cpu" else 1
        if workers > 1 and self.draws > 1 and sum(w.numel() for w in ws) > 2**20:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(draw, range(self.draws)))
        else:
            for t in range(self.draws):
                draw(t)

    def fan_ins(self):
        """Fan-ins of the three convolutions of one draw: ``(n_in, 9 n, n)``."""
        return (self.n_in, 9 * self.n, self.n)

    def draw(self, t):
        """Draw ``t`` as a standalone :class:`Bottleneck` holding copies of its weights."""
        block = Bottleneck(self.n, self.readout, self.n_in, self.post_relu, dtype=self.w1.dtype, device=self.w1.device)
        with torch.no_grad():
            for conv, w in zip((block.conv1, block.conv2, block.conv3), (self.w1, self.w2, self.w3)):
                conv.weight.copy_(w[t].view_as(conv.weight))
        return block

    def maps(self, x, branch_output=True):
        """Pre-activations ``z1, z2`` (shape ``(N, T n, H, W)``) and the branch output ``y``
        (``(N, T n_out, H, W)``; ``None`` unless ``branch_output``)."""
        _check_x(x, self.n_in, self.readout)
        T, n = self.draws, self.n
        s1, s2, s3 = bottleneck_scales(n, self.n_in)
        z1 = s1 * F.conv2d(x, self.w1.reshape(T * n, self.n_in, 1, 1))
        z2 = s2 * F.conv2d(torch.relu(z1), self.w2.reshape(T * n, n, 3, 3), padding=1, groups=T)
        if not branch_output:
            return z1, z2, None
        y = s3 * F.conv2d(torch.relu(z2), self.w3.reshape(T * self.n_in, n, 1, 1), groups=T)
        return z1, z2, y

    def forward(self, x):
        """``f_t(x)`` of every draw for inputs ``x`` of shape ``(N, n_in, H, W)``; returns ``(T, N)``."""
        y = self.maps(x)[2]
        N = x.shape[0]
        out = x[:, None] + y.view(N, self.draws, *x.shape[1:])
        out = torch.relu(out) if self.post_relu else out
        return (out * self.readout).sum((2, 3, 4)).T


# --- the NTK of every draw ---------------------------------------------------------------------


def _dot(a, b):
    """``sum(a * b)`` over all but the first (draw) axis, in float64: shape ``(T,)``."""
    return (a * b).flatten(1).sum(1, dtype=torch.float64)


def _pgram(a, b):
    """Per-draw Gram over channels: ``(T, c, P), (T, c, Q) -> (T, P, Q)`` with ``[p, q] = a[:, p] . b[:, q]``."""
    return torch.bmm(a.transpose(1, 2), b)


def _im2col(h, H, W):
    """Columns of a padded 3x3 conv: ``(T, c, H + 2, W + 2) -> (T, 9 c, H W)`` (channel-major, then tap)."""
    T, c = h.shape[:2]
    cols = torch.stack([h[:, :, a : a + H, b : b + W] for a in range(3) for b in range(3)], 2)
    return cols.view(T, 9 * c, H * W)


def _shifted(g, H, W):
    """``S[p, q] = sum_k G[p + k, q + k]`` over the 9 taps ``k`` of a 3x3 conv.

    ``g`` is a per-draw Gram of padded maps, shape ``(T, (H+2)(W+2), (H+2)(W+2))``; returns
    ``(T, H W, H W)``: the Gram of the im2col columns, from one Gram of the padded map (9 times
    fewer channel products than unfolding first).
    """
    T = g.shape[0]
    g = g.view(T, H + 2, W + 2, H + 2, W + 2)
    s = g[:, :H, :W, :H, :W].clone()
    for a in range(3):
        for b in range(3):
            if a or b:
                s += g[:, a : a + H, b : b + W, a : a + H, b : b + W]
    return s.view(T, H * W, H * W)


def _use_gradients(n, N, H, W):
    """``True`` when explicit conv2 weight gradients cost fewer multiply-adds than the Gram route."""
    P, Pp, pairs = H * W, (H + 2) * (W + 2), N * (N + 1) // 2
    gradients = N * 9 * n * n * P + pairs * 9 * n * n
    grams = pairs * (n * (P * P + Pp * Pp) + 10 * P * P)
    return gradients < grams


@torch.no_grad()
def _ntk_structured(block, x, conv2="auto"):
    T, N, n, c = block.draws, x.shape[0], block.n, block.n_in
    H, W = x.shape[2:]
    P = H * W
    s1, s2, s3 = bottleneck_scales(n, c)
    z1, z2, y = block.maps(x, branch_output=block.post_relu)  # (N, T n, H, W)
    per = lambda a, i, ch=n: a[i].view(T, ch, P)  # input i, as (T, ch, P)
    pairs = [(i, j) for i in range(N) for j in range(i, N)]
    K = torch.zeros(T, N, N, dtype=torch.float64, device=x.device)

    def put(i, j, k):
        K[:, i, j] += k
        if i != j:
            K[:, j, i] += k

    # conv3 (1x1, n -> n_out): its input h2 and the gradient dy of the output map
    v = block.readout.reshape(c, P)
    h2 = torch.relu(z2)
    if block.post_relu:
        dy = [((x[i] + y[i].view(T, c, H, W)) > 0).to(x.dtype).mul_(block.readout).view(T, c, P) for i in range(N)]
        for i, j in pairs:
            put(i, j, s3**2 * _dot(_pgram(dy[i], dy[j]), _pgram(per(h2, i), per(h2, j))))
        dh2 = torch.stack([s3 * torch.bmm(block.w3.transpose(1, 2), dy[i]) for i in range(N)])
        del dy, y
    else:  # dy = v for every draw and input: K3 = sum_k h2_i[k] (v^T v) h2_j[k]
        h2v = [per(h2, i) @ (v.T @ v) for i in range(N)]
        for i, j in pairs:
            put(i, j, s3**2 * _dot(h2v[i], per(h2, j)))
        dh2 = (s3 * torch.einsum("toc,op->tcp", block.w3, v)).unsqueeze(0)  # (1, T, n, P)
        del h2v
    del h2
    dz2 = (z2 > 0).view(N, T, n, P).mul(dh2)  # (N, T, n, P)
    del z2, dh2
    # conv2 (3x3, n -> n): its padded input h1 and the gradient dz2
    hp = F.pad(torch.relu(z1), (1, 1, 1, 1)).view(N, T, n, H + 2, W + 2)
    if conv2 == "gradients" or (conv2 == "auto" and _use_gradients(n, N, H, W)):
        g = [torch.bmm(dz2[i], _im2col(hp[i], H, W).transpose(1, 2)) for i in range(N)]  # (T, n, 9n)
        for i, j in pairs:
            put(i, j, s2**2 * _dot(g[i], g[j]))
        del g
    else:
        hp_flat = hp.view(N, T, n, -1)
        for i, j in pairs:
            put(i, j, s2**2 * _dot(_pgram(dz2[i], dz2[j]), _shifted(_pgram(hp_flat[i], hp_flat[j]), H, W)))
    del hp
    # conv1 (1x1, n_in -> n): its input x and the gradient dz1
    dh1 = s2 * F.conv_transpose2d(dz2.view(N, T * n, H, W), block.w2.reshape(T * n, n, 3, 3), padding=1, groups=T)
    dz1 = dh1.mul_(z1 > 0)
    del dz2, z1
    xs = x.reshape(N, c, P)
    for i, j in pairs:
        xg = (xs[i].T @ xs[j]).expand(T, P, P)
        put(i, j, s1**2 * _dot(_pgram(per(dz1, i), per(dz1, j)), xg))
    return K


def _ntk_autograd(block, x):
    N = x.shape[0]
    params = [block.w1, block.w2, block.w3]
    out = block(x)  # (T, N)
    grads = []
    for i in range(N):
        g = torch.autograd.grad(out[:, i].sum(), params, retain_graph=i < N - 1)
        grads.append(torch.cat([gi.reshape(block.draws, -1) for gi in g], 1).double())
    g = torch.stack(grads, 1)  # (T, N, params per draw)
    return g @ g.transpose(1, 2)


def bottleneck_ntk(block, x, method="structured", conv2="auto"):
    """The NTK ``K_t(x_i, x_j)`` of every draw ``t`` of ``block`` on the inputs ``x``.

    ``K_t(x_i, x_j) = sum_l <df_t(x_i)/dW_l, df_t(x_j)/dW_l>`` over the three convolutions of draw
    ``t``. ``method="structured"`` runs one forward and one hand-written backward pass for all draws
    and inputs together, and never forms the weight gradients of the 1x1 convs: for a convolution
    with input ``a`` and output gradient ``d`` (both over positions ``p``),
    ``<dW(x_i), dW(x_j)> = sum_k sum_pq (d_i(p) . d_j(q)) (a_i(p + k) . a_j(q + k))``, i.e. products
    of per-draw Gram matrices over positions (float32 products, float64 sums). For the 3x3 conv it
    takes the cheaper of that Gram route and explicit weight gradients (``conv2="auto"``; force one
    with ``"gram"`` or ``"gradients"``).
    ``method="autograd"`` backpropagates once per input and takes inner products of the weight
    gradients (a reference; memory ``N T`` times the weights of one draw).

    Args:
        block: a :class:`BottleneckDraws` with ``T`` draws.
        x: inputs of shape ``(N, n_in, H, W)`` matching the read-out.
    Returns:
        float64 tensor of shape ``(T, N, N)``.
    """
    if not isinstance(block, BottleneckDraws):
        raise ValueError(f"block must be a BottleneckDraws, got {type(block).__name__}")
    _check_x(x, block.n_in, block.readout)
    x = x.to(dtype=block.w1.dtype, device=block.w1.device)
    choice("conv2", conv2, ("auto", "gram", "gradients"))
    if choice("method", method, ("structured", "autograd")) == "structured":
        return _ntk_structured(block, x, conv2)
    return _ntk_autograd(block, x)


def bottleneck_ntk_sampler(n, x, readout, n_in=256, post_relu=False, dtype=torch.float32):
    """Sampler of the block's NTK for :func:`cepaper.montecarlo.mc_samples` (Algorithm 1, lines 3-5).

    A call ``sample(t, generator)`` draws ``t`` seeds from ``generator`` (on its device), builds
    :class:`BottleneckDraws` with them and returns :func:`bottleneck_ntk` on ``x``.

    Args:
        n: width; x: inputs ``(N, n_in, H, W)``; readout: ``v`` of shape ``(n_in, H, W)``.
    Returns:
        a callable ``(t, generator) -> float64 tensor (t, N, N)``.
    """
    n = positive_int("n", n)
    check_readout(readout, n_in)
    _check_x(x, n_in, readout)

    def sample(t, generator):
        dev = generator.device
        seeds = torch.randint(0, 2**62, (t,), generator=generator, device=dev).tolist()
        block = BottleneckDraws(n, seeds, readout.to(dev), n_in, post_relu, dtype, dev)
        return bottleneck_ntk(block, x.to(dev))

    return sample


def bottleneck_floats_per_draw(n, n_in=256, spatial=3, count=2):
    """Rough float32 working memory of :func:`bottleneck_ntk` per draw (sizes the chunks of draws)."""
    P, Pp = spatial**2, (spatial + 2) ** 2
    weights = 2 * n * n_in + 9 * n * n
    maps = count * (8 * n * P + 3 * n_in * P + 2 * n * Pp)
    work = max(count * 9 * n * n + 9 * n * P, 2 * Pp * Pp + 4 * P * P)
    return weights + maps + work
