"""Algorithm 1 on any member (Sec. 4.2, App. D): alpha fitted from Monte Carlo NTKs of ``factory(1, n)``
through a fixed scalar read-out, the draws batched over a chunk with ``torch.func`` where the member allows it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cepaper._checks import choice, positive_int
from cepaper.alpha import fit, sweeps
from cepaper.ntk import READOUTS, readout_vector
from cepaper.search import equations
from cepaper.search.factories import (
    FAN_IN_LAYERS,
    WEIGHT_LAYERS,
    build,
    check_input_shape,
    member_fan_ins,
    run_forward,
    tensor_output,
)

#: How a draw of the member is initialized: the factory's own initialization, or Eq. 3's parameterization.
INITS = ("factory", "eq3")
#: The norm layers that ``init="eq3"`` removes (replaced by the identity).
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def member_inputs(input_shape, count=2, corr=0.5, seed=0, dtype=torch.float32):
    """Inputs ``x_k = sqrt(corr) g_0 + sqrt(1 - corr) g_k``, ``g`` i.i.d. N(0, 1): shape ``(count, *input_shape)``
    (the draw of :func:`cepaper.models.bottleneck.block_inputs` and :func:`cepaper.alpha.sweeps.mlp_inputs`)."""
    shape, count = check_input_shape(input_shape), positive_int("count", count)
    if not 0.0 <= float(corr) <= 1.0:
        raise ValueError(f"corr must be in [0, 1], got {corr!r}")
    z = torch.randn((count + 1,) + shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (math.sqrt(corr) * z[:1] + math.sqrt(1.0 - corr) * z[1:]).to(dtype)


class Readout(nn.Module):
    """``f(x) = <v, member(x)>`` per example: ``(N, *input_shape) -> (N,)`` (a scalar member for the NTK)."""

    def __init__(self, member, v):
        super().__init__()
        self.member = member
        self.register_buffer("v", v)

    def forward(self, x):
        out = tensor_output(self.member, self.member(x))  # not contained: torch.func's errors reach the sampler
        if tuple(out.shape[1:]) != tuple(self.v.shape) and not (out.ndim == 1 and self.v.numel() == 1):
            raise ValueError(
                f"module: the member's output per example must have shape {tuple(self.v.shape)} "
                f"at every width, got {tuple(out.shape[1:])}"
            )
        return (out.reshape(len(x), -1) * self.v.reshape(1, -1)).sum(1)


def eq3_member(member, seed):
    """``member`` redrawn in Eq. 3's (NTK) parameterization, in place (returned): the paper's draw of the Fig. 5 block.

    Norm layers (:data:`NORMS`) become the identity; every weight layer (:data:`cepaper.search.factories.WEIGHT_LAYERS`,
    in registration order) gets weights ``theta ~ N(0, 1)`` drawn in turn from one CPU generator seeded with
    ``seed``, its bias set to 0 and frozen (Eq. 3 has none), and its output scaled by ``sqrt(2 / fan-in)``
    (a forward hook), the last weight layer's by ``sqrt(1 / fan-in)`` (Eq. 3's output layer). Gradients are
    taken with respect to ``theta``, so the NTK is Eq. 3's. For the Fig. 5 block (``ResNeXtBottleneck(w, w, n)``)
    this is exactly :class:`cepaper.models.bottleneck.Bottleneck` ``(n, seed=seed, post_relu=True)``: the same
    weights, scales and function. Other parameters (e.g. a learnable scale) keep the factory's initialization.
    """
    for layer in list(member.modules()):
        for child_name, child in list(layer.named_children()):
            if isinstance(child, NORMS):
                setattr(layer, child_name, nn.Identity())
    layers = [layer for layer in member.modules() if isinstance(layer, WEIGHT_LAYERS)]
    g = torch.Generator().manual_seed(int(seed))
    for k, layer in enumerate(layers):
        fan_in = layer.in_features if isinstance(layer, nn.Linear) else layer.weight[0].numel()
        scale = math.sqrt((1.0 if k == len(layers) - 1 else 2.0) / fan_in)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=layer.weight.dtype))
            if layer.bias is not None:
                layer.bias.zero_()
                layer.bias.requires_grad_(False)
        layer.register_forward_hook(lambda mod, inputs, out, s=scale: out * s)
    return member


def member_draw(factory, n, generator, v, init="factory"):
    """One draw of the scalar member: ``factory(1, n)`` built under a CPU seed taken from ``generator``
    (``init="factory"``: the factory's own initialization; ``"eq3"``: redrawn by :func:`eq3_member` with
    that seed), in eval mode (BatchNorm uses its running statistics, at initialization the identity up to
    ``eps``; no dropout), wrapped by :class:`Readout` with ``v``. The seeds are those of
    :func:`cepaper.models.bottleneck.bottleneck_ntk_sampler` on the same generator."""
    choice("init", init, INITS)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only (torch.manual_seed also seeds
        member = build(factory, 1, n)  # every accelerator: most of a small draw's time)
    if init == "eq3":
        member = eq3_member(member, seed)
    return Readout(member, v).to(generator.device).eval()


#: float32 working memory per chunk of :func:`member_ntk_sampler` (floats): small enough to stay in cache,
#: where the batched path beats one NTK per draw (measured in ``benchmarks/design_alpha.py``).
MEMBER_CHUNK_FLOATS = 2**23


MEMBER_CHUNK_MAX = 256


def _split_state(members):
    """Trainable parameters and the rest (frozen parameters, buffers) of ``members``, stacked over draws."""
    from torch.func import stack_module_state

    params, buffers = stack_module_state(members)
    trainable = {k for k, p in members[0].named_parameters() if p.requires_grad}
    rest = {k: v for k, v in params.items() if k not in trainable}
    return {k: v.detach() for k, v in params.items() if k in trainable}, {**rest, **buffers}


def batched_member_ntk(members, x):
    """NTKs of draws of one scalar member at once: ``torch.func`` ``vmap`` over the draws' stacked weights.

    Every draw is ``K_t = J_t J_t^T``, ``J_t = d f_t(x_i) / d theta_t`` over the trainable parameters (the
    per-draw :func:`cepaper.ntk.jacobian_ntk`); the ``vmap`` over draws turns each layer into one batched
    (grouped) call, as :class:`cepaper.models.bottleneck.BottleneckDraws` does by hand for the Fig. 5 block.

    Args:
        members: ``T`` modules of identical structure, each mapping ``(N, ...)`` to ``(N,)`` (e.g. :class:`Readout`).
        x: inputs ``(N, ...)``.
    Returns:
        tensor ``(T, N, N)``.
    """
    from torch.func import functional_call, grad, vmap

    params, rest = _split_state(members)
    if not params:
        raise ValueError(f"module: {type(members[0]).__name__} has no trainable weights: its NTK is zero")
    base = members[0]

    def f(p, b, xi):
        return functional_call(base, (p, b), (xi.unsqueeze(0),)).reshape(())

    def kernel(p, b):
        j = vmap(grad(f), in_dims=(None, None, 0))(p, b, x)
        return sum(a @ a.T for a in (v.flatten(1) for v in j.values()))  # sum_p J_p J_p^T, out of place (vmap)

    return vmap(kernel)(params, rest)


def member_ntk_sampler(factory, n, x, v, method="batched", init="factory"):
    """Sampler of the member's NTK for :func:`cepaper.montecarlo.mc_samples` (Algorithm 1, lines 3-5).

    ``sample(t, generator)`` draws ``t`` members :func:`member_draw` ``(factory, n, generator, v, init)`` in turn
    (the same draws, in the same order, whatever ``method``) and returns their NTKs on ``x``:
    ``"batched"`` by :func:`batched_member_ntk`, ``"loop"`` one :func:`cepaper.ntk.jacobian_ntk` per draw.
    A member that ``torch.func`` cannot transform (``.item()``, data-dependent control flow) falls back, with a
    warning, to one :func:`cepaper.ntk.naive_ntk` per draw (plain autograd, one backward per input).

    Returns:
        a callable ``(t, generator) -> (t, N, N)``.
    """
    from cepaper import ntk

    choice("method", method, ("batched", "loop"))
    state = {"method": method}

    def sample(t, generator):
        members = [member_draw(factory, n, generator, v, init) for _ in range(t)]
        xd = x.to(generator.device)
        if state["method"] == "batched":
            try:
                return batched_member_ntk(members, xd).detach()
            except (RuntimeError, NotImplementedError) as e:  # torch.func cannot transform this member
                import warnings

                warnings.warn(
                    f"module: the member of width {n} cannot be batched over draws by torch.func.vmap "
                    f"({type(e).__name__}: {str(e)[:120]}); one NTK per draw by autograd instead",
                    stacklevel=2,
                )
                state["method"] = "naive"
        how = "jacobian" if state["method"] == "loop" else "naive"
        return torch.stack([ntk.empirical_ntk(m, xd, method=how).detach() for m in members])

    return sample


def member_chunk(member, x):
    """Draws per chunk of :func:`member_ntk_sampler`: one draw's weights, their gradients at each input and
    its activations on ``x`` (every submodule's output, measured on ``member``), within
    :data:`MEMBER_CHUNK_FLOATS`, at most :data:`MEMBER_CHUNK_MAX` (it depends on the member, never on the
    device)."""
    sizes = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
        for m in member.modules()
    ]
    try:
        with torch.no_grad():
            member(x)
    finally:
        for h in hooks:
            h.remove()
    per = (len(x) + 2) * sum(q.numel() for q in member.parameters()) + 3 * sum(sizes)
    return int(min(MEMBER_CHUNK_MAX, max(1, MEMBER_CHUNK_FLOATS // per)))


def fit_member_alpha(
    factory: Callable[[int, int], nn.Module],
    input_shape: Sequence[int],
    widths: Sequence[int] = (4, 8, 16, 32),
    trials: int = 100,
    seed: int = 0,
    readout: str = "center",
    layers: str = "all",
    entry: str = "diag",
    corr: float = 0.5,
    input_seed: int = 0,
    intercept: bool = True,
    n_boot: int = 200,
    level: float = 0.95,
    device: str = "cpu",
    progress: bool = True,
    weighted: bool = False,
    threads: int = 1,
    checkpoint: str | Path | None = None,
    name: str | None = None,
    method: str = "batched",
    init: str = "factory",
) -> dict:
    """Algorithm 1 on the member ``factory(1, n)``: alpha (Eq. 9) with its bootstrap interval.

    Every draw is ``factory(1, n)`` with its own initialization (``init="factory"``) or in Eq. 3's
    parameterization (``"eq3"``: N(0, 1) weights scaled by ``sqrt(2 / fan-in)``, norms off; :func:`eq3_member`,
    the paper's draw of the Fig. 5 block) (:func:`member_draw`), read out by
    :func:`readout_vector` ``(readout)``; its NTK on two inputs (:func:`member_inputs`, correlation
    ``corr``) comes from :func:`member_ntk_sampler` (``method``: ``"batched"`` over the draws of a chunk,
    or ``"loop"``, one per draw; the same draws) via :func:`cepaper.alpha.sweeps.ntk_sweep`, ``s(n)`` from the
    member's weight layers (:func:`member_fan_ins`, ``layers``), and the fit is :func:`cepaper.alpha.fit.sweep_result`.

    Args:
        widths: the member widths ``n``; trials: draws per width; seed: Monte Carlo seed.
        readout: ``"center"``, ``"mean"`` or ``"random"``; entry: ``"diag"`` or ``"offdiag"``.
        intercept, weighted, n_boot, level: as :func:`cepaper.alpha.fit.fit_alpha`; progress: a tqdm bar over widths.
        threads: CPU threads of the Monte Carlo; checkpoint: a folder keeping finished widths, with
            ``name`` identifying the factory (its code is not hashed; the read-out and inputs are).
        method: ``"batched"`` (default; falls back to ``"loop"`` for a member ``vmap`` cannot batch) or ``"loop"``.
        init: ``"factory"`` (default) or ``"eq3"`` (:data:`INITS`).
    Returns:
        :func:`cepaper.alpha.fit.sweep_result`'s dict (``alpha``, ``alpha_ci``, ``C``, ``fits``, ...) plus
        ``readout``, ``input_shape`` and ``zero_draws`` (per width, the fraction of draws whose ``entry`` is
        exactly 0: the read-out unit is off in those draws).
    Raises:
        ValueError: when every draw's NTK at a width is exactly 0 (:func:`check_nonzero_ntk`), naming another
        read-out.
    """
    choice("readout", readout, READOUTS)
    choice("init", init, INITS)
    choice("layers", layers, FAN_IN_LAYERS)
    choice("entry", entry, fit.ENTRIES)
    widths = sweeps.check_widths(widths)
    shape = check_input_shape(input_shape)
    x = member_inputs(shape, 2, corr, input_seed)
    with torch.no_grad():
        out = run_forward(build(factory, 1, widths[0]), x)
    v = readout_vector(readout, tuple(out.shape[1:]), input_seed)
    if checkpoint is not None and not name:
        raise ValueError("checkpoint: a checkpointed fit needs a name that identifies the factory")
    terms, chunks = [], {}
    for n in widths:
        probe = member_draw(factory, n, torch.Generator().manual_seed(0), v, init)
        terms.append(equations.sum_inv_fan_in(member_fan_ins(probe.member), layers))
        if not any(p.requires_grad for p in probe.parameters()):
            raise ValueError(f"module: factory(1, {n}) has no trainable weights: its NTK is zero")
        chunks[n] = member_chunk(probe, x)
    label = f"{name or 'factory'}|readout={readout}|input_shape={list(shape)}|corr={corr}|input_seed={input_seed}"
    label += "" if init == "factory" else f"|init={init}"  # the checkpoints of factory draws keep their key
    settings = {"module": label, "layers": layers, "x": x.double().sum().item(), "sampler": method}
    start = time.perf_counter()
    bar = widths
    if progress:
        from tqdm import tqdm

        bar = tqdm(widths, desc="alpha sweep", unit="width")
    samples = {}
    for n in bar:  # one width at a time: an all-zero NTK stops the sweep at the first width that shows it
        samples.update(
            sweeps.ntk_sweep(
                lambda n: member_ntk_sampler(factory, n, x.to(device), v, method, init),
                [n],
                trials,
                seed,
                chunks.get,
                device,
                checkpoint,
                settings,
                threads=threads,
            )
        )
        check_nonzero_ntk(samples[n], n, readout)
    sweep = {
        "module": name or "factory",
        "options": {"layers": layers},
        "widths": list(widths),
        "terms": terms,
        "trials": int(trials),
        "seed": int(seed),
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 3),
        "samples": samples,
    }
    res = fit.sweep_result(sweep, entry, intercept, weighted, n_boot=n_boot, level=level)
    zero = [float(np.mean(fit.entry_values(samples[n], entry) == 0.0)) for n in widths]
    return {**res, "readout": readout, "input_shape": list(shape), "zero_draws": zero, "init": init}


def check_nonzero_ntk(samples, n, readout):
    """Raise when every draw's NTK ``samples`` ``(T, N, N)`` at width ``n`` is exactly 0: the read-out
    ``f = <v, out>`` does not depend on the weights at these inputs, and no alpha can be fitted."""
    k = np.asarray(samples)
    if k.size and not np.any(k != 0.0):
        others = " or ".join(f"readout={r!r}" for r in READOUTS if r != readout)
        raise ValueError(
            f"module: the member's NTK is exactly 0 in all {len(k)} draws at width {n} with the {readout!r} "
            f"read-out: the output it reads does not depend on the weights at these inputs (e.g. a unit "
            f"behind a ReLU that is off, as after the shortcut sum of a ResNet block); use another read-out, "
            f"{others} (--readout {'mean' if readout != 'mean' else 'random'} on the command line)"
        )
