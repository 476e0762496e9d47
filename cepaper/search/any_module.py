"""Design your own collegial ensemble: Algorithm 2 on any PyTorch module, under a parameter, FLOP or latency budget.

A *factory* ``factory(m, n) -> nn.Module`` builds the collegial module: ``m`` members of width ``n``
(as grouped convolutions or block-diagonal layers), taking inputs of an example shape
``(batch, *input_shape)``. From the factory alone, with no per-architecture code:

* ``sum_l 1/fan-in_l`` (Eq. 9) is read from the member ``factory(1, n)``: every ``nn.Linear``
  (fan-in ``in_features``) and ``nn.Conv1d/2d/3d`` (fan-in ``weight.shape[1] * prod(kernel_size)``:
  input channels per group times the kernel area) enters, in registration order; norms, biases and
  other parameters do not (they have no fan-in). ``layers="hidden"`` drops the first weight layer
  (the :class:`cepaper.search.MLPDesign` convention, Prop. 1: the input layer's fan-in is fixed).
* ``beta(m, n)`` (Eq. 8, Eq. 15) is ``"params"``, the trainable parameters of ``factory(m, n)``
  (norms included); ``"flops"``, counted over one forward pass on the example input under a convention
  (:data:`FLOPS`): ``"2macs"`` (the default: ``torch.utils.flop_counter.FlopCounterMode``, 2 x the
  multiply-adds of convs and matmuls, nothing for norms, activations or sums), ``"macs"`` (the
  multiply-adds, pycls's "flops") or ``"2macs+acts"`` (plus one per output element of every conv and linear
  layer, pycls's activations: the convention of :class:`cepaper.search.BottleneckDesign`, whose curve gives
  the paper's 44x8d); or ``"latency"``, the median seconds of a forward + backward pass after warm-up,
  with its IQR.

:class:`FactoryModule` is a module of :mod:`cepaper.search` (``sum_inv_fan_in``, ``cost``), so
``search.curve`` and ``search.optimum`` read it under any of its :data:`BUDGETS` (latency too), and
:func:`design_module` is Algorithm 2 (primal or dual, integer ``m`` of step 6). Step 6 matches the
module's own cost by default; ``network=`` matches a whole network built from it (e.g. ResNeXt-29 from
the Fig. 5 block, as :func:`cepaper.search.networks.design` does: 37x10d and 44x8d) or a stated multiple of it.
:func:`cepaper.alpha.any_member.fit_member_alpha`
is Algorithm 1 on the member: Monte Carlo NTKs of ``factory(1, n)`` through a fixed read-out; the
factories themselves (files, packages, torchvision) and their checks are :mod:`cepaper.search.factories`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from cepaper import complexity as cxm
from cepaper._checks import choice, nonneg_int, positive_float, positive_int
from cepaper.search import equations, networks
from cepaper.search.factories import (
    FAN_IN_LAYERS,
    WEIGHT_LAYERS,
    build,
    check_input_shape,
    check_members,
    member_fan_ins,
    param_count,
    run_forward,
)
from cepaper.verdicts import VERDICTS, judge  # noqa: F401  (VERDICTS: part of this module's API)

BUDGETS = ("params", "flops", "latency")
#: FLOP conventions of :func:`flop_count` (``"2macs"``, ``"2macs+acts"``: as :data:`cepaper.search.FLOPS_CONVENTIONS`).
FLOPS = ("macs", "2macs", "2macs+acts")


def flop_count(module: nn.Module, x: torch.Tensor, convention: str = "2macs") -> int:
    """Eq. 15's ``beta``: the FLOPs of one forward pass of ``module`` on ``x`` under ``convention`` (:data:`FLOPS`).

    ``FlopCounterMode`` counts ``2 x`` the multiply-adds of convs and matmuls (``"2macs"``); ``"macs"`` is half
    that; ``"2macs+acts"`` adds the output elements of every ``nn.Linear`` and ``nn.Conv1d/2d/3d``
    (:data:`cepaper.search.factories.WEIGHT_LAYERS`), counted by forward hooks (:mod:`cepaper.complexity`'s ``acts``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    choice("flops convention", convention, FLOPS)
    acts = []
    hooks = [
        layer.register_forward_hook(lambda mod, i, out: acts.append(out.numel()))
        for layer in module.modules()
        if "acts" in convention and isinstance(layer, WEIGHT_LAYERS)
    ]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run_forward(module, x)
    finally:
        for h in hooks:
            h.remove()
    two = int(counter.get_total_flops())
    return two // 2 if convention == "macs" else two + sum(acts)


def latency(module, x, repeats=20, warmup=3, timer=time.perf_counter):
    """Seconds of one forward + backward pass (``out.sum().backward()``) of ``module`` on ``x``.

    ``warmup`` untimed passes, then ``repeats`` timed ones (CUDA synchronized around each).
    Returns a dict: ``median``, ``q25``, ``q75``, ``iqr`` (``q75 - q25``), ``repeats``, ``times`` (list).
    """
    repeats, warmup = positive_int("repeats", repeats), nonneg_int("warmup", warmup)
    cuda = x.device.type == "cuda"

    def once():
        module.zero_grad(set_to_none=True)
        out = run_forward(module, x)
        if out.requires_grad:
            out.float().sum().backward()

    for _ in range(warmup):
        once()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(x.device)
        t0 = timer()
        once()
        if cuda:
            torch.cuda.synchronize(x.device)
        times.append(float(timer() - t0))
    q25, med, q75 = np.percentile(times, [25, 50, 75])
    if not med > 0:
        raise ValueError(f"timer: the median time must be > 0, got {med!r}; use a clock that advances")
    return {
        "median": float(med),
        "q25": float(q25),
        "q75": float(q75),
        "iqr": float(q75 - q25),
        "repeats": repeats,
        "times": times,
    }


class FactoryModule:
    """A :class:`cepaper.search.equations.Member` (``sum_inv_fan_in``, ``cost``, ``budgets``) read from a factory's
    built modules.

    Args:
        factory: ``(m, n) -> nn.Module``, ``m`` members of width ``n``.
        input_shape: one example's shape (no batch), e.g. ``(256, 32, 32)``.
        batch: examples in the FLOPs/latency input ``(batch, *input_shape)`` (N(0, 1), seeded by ``seed``).
        device: where FLOPs and latency are measured.
        layers: weight layers entering ``sum_l 1/fan-in_l``: ``"all"`` or ``"hidden"`` (all but the first).
        repeats, warmup, timer: of :func:`latency`.
        flops: the FLOP convention of the ``"flops"`` budget (:data:`FLOPS`, :func:`flop_count`).
    Built modules' costs are cached per ``(m, n, budget)``, fan-ins per ``n``. Every ``factory(m, n)`` with
    ``m > 1`` is checked against ``factory(1, n)`` once (:func:`check_members`).
    """

    def __init__(
        self,
        factory,
        input_shape,
        batch=1,
        device="cpu",
        layers="all",
        repeats=20,
        warmup=3,
        timer=time.perf_counter,
        seed=0,
        flops="2macs",
    ):
        if not callable(factory):
            raise ValueError(f"factory must be a callable (m, n) -> torch.nn.Module, got {type(factory).__name__}")
        self.factory, self.input_shape = factory, check_input_shape(input_shape)
        self.batch, self.device = positive_int("batch", batch), torch.device(device)
        self.layers = choice("layers", layers, FAN_IN_LAYERS)
        self.repeats, self.warmup = positive_int("repeats", repeats), nonneg_int("warmup", warmup)
        self.timer, self.seed = timer, int(seed)
        self.flops = choice("flops", flops, FLOPS)
        self.budgets = BUDGETS
        self._fans, self._costs, self.latencies, self._checked = {}, {}, {}, set()

    def example_input(self):
        """The input ``(batch, *input_shape)`` of FLOPs and latency, entries N(0, 1)."""
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn((self.batch,) + self.input_shape, generator=g).to(self.device)

    def fan_ins(self, n):
        """Fan-ins of the member ``factory(1, n)`` (:func:`member_fan_ins`)."""
        n = positive_int("n", n)
        if n not in self._fans:
            self._fans[n] = member_fan_ins(build(self.factory, 1, n))
        return self._fans[n]

    def sum_inv_fan_in(self, n):
        """Eq. 9's ``sum_l 1/fan-in_l`` of the member of width ``n`` (array ``n`` -> array of its shape)."""
        arr = np.asarray(n)
        out = [equations.sum_inv_fan_in(self.fan_ins(positive_int("n", v.item())), self.layers) for v in arr.ravel()]
        return np.asarray(out, dtype=float).reshape(arr.shape)

    def _flops(self, module, m, n):
        """:func:`flop_count` of ``module = factory(m, n)`` in eval mode: on the meta device (shapes only, no
        arithmetic: the same count, several times faster), or, where its forward needs values, on ``device``."""
        try:
            return flop_count(module.to("meta").eval(), self.example_input().to("meta"), self.flops)
        except Exception:  # e.g. .item() or data-dependent control flow: count a fresh build on the device
            module = build(self.factory, m, n).to(self.device).eval()
            return flop_count(module, self.example_input(), self.flops)

    def cost(self, n, budget="params", groups=1):
        """``beta``: params, FLOPs or latency (median seconds) of ``factory(groups, n)``."""
        choice("budget", budget, BUDGETS)
        m, n = positive_int("groups", groups), positive_int("n", n)
        key = (m, n, budget)
        if key not in self._costs:
            module = build(self.factory, m, n)
            if m > 1 and (m, n) not in self._checked:
                check_members(build(self.factory, 1, n), module, m, n)
                self._checked.add((m, n))
            if budget == "params":
                value = param_count(module)
                if value == 0:
                    raise ValueError(f"factory: factory({m}, {n}) has no trainable parameters")
            else:
                x = self.example_input()
                if budget == "flops":
                    value = self._flops(module, m, n)
                    if value == 0:
                        raise ValueError(
                            f"factory: factory({m}, {n}) counts 0 FLOPs on input "
                            f"{tuple(x.shape)}: it has no conv or matmul"
                        )
                else:
                    module = module.to(self.device)
                    rec = latency(module, x, self.repeats, self.warmup, self.timer)
                    self.latencies[(m, n)] = rec
                    value = rec["median"]
            self._costs[key] = float(value)
        return self._costs[key]


class Multiple:
    """``k`` copies of a :class:`FactoryModule`'s costs: the network of ``k`` such modules in a row, for step 6.

    ``cost`` is ``k`` times the module's (params, FLOPs, latency); ``latencies`` are the module's, scaled by
    ``k``. Costs affine in ``m`` (params, FLOPs) give the same ``m`` as the module alone; the reported costs
    and ``rho`` are the network's.
    """

    def __init__(self, module, k):
        self.module, self.k = module, positive_int("network (a multiple of the module)", k)

    def __repr__(self):
        return f"{self.k} x the module"

    def cost(self, n, budget="params", groups=1):
        return self.k * self.module.cost(n, budget, groups)

    @property
    def latencies(self):
        scale = lambda rec: {k: (v * self.k if k not in ("repeats", "times") else v) for k, v in rec.items()}
        return {key: scale(rec) for key, rec in self.module.latencies.items()}


def network_module(module, network=None, input_shape=None):
    """What step 6 matches: ``module`` itself (``network=None``), ``k`` copies of it (an int, :class:`Multiple`),
    or a whole network ``network(m, n) -> nn.Module`` (a factory, or a :class:`FactoryModule`) on examples of
    ``input_shape`` (default ``module``'s), measured with ``module``'s options (batch, device, repeats, FLOPs)."""
    if network is None:
        return module
    if isinstance(network, (int, np.integer)) and not isinstance(network, bool):
        return Multiple(module, int(network))
    if isinstance(network, FactoryModule):
        return network
    if not callable(network):
        raise ValueError(
            f"network must be None, an int k >= 1 (k modules) or a factory (m, n) -> torch.nn.Module, "
            f"got {type(network).__name__}"
        )
    return FactoryModule(
        network,
        module.input_shape if input_shape is None else input_shape,
        batch=module.batch,
        device=module.device,
        layers=module.layers,
        repeats=module.repeats,
        warmup=module.warmup,
        timer=module.timer,
        seed=module.seed,
        flops=module.flops,
    )


def module_m(module, n, baseline_cost, budget="params", m_max=2**16):
    """Algorithm 2 step 6 (primal): continuous ``m`` with ``cost(n, groups=m) == baseline_cost``.

    ``module``: anything with ``cost(n, budget, groups)`` (a :class:`FactoryModule`, the network of
    :func:`network_module`).

    Params and FLOPs of grouped layers are affine in ``m``: solved through ``m = 1, 2``. Latency is
    not (fixed overheads): the integers ``m_lo, m_lo + 1`` that bracket the baseline's latency are
    found by doubling and bisection on measured latencies, then interpolated linearly.
    """
    cost = lambda m: module.cost(n, budget, groups=m)
    c1, c2 = cost(1), cost(2)
    if budget != "latency":
        if not c2 > c1:
            raise ValueError(
                f"factory: the {budget} of factory(2, {n}) ({c2:g}) must exceed factory(1, {n})'s "
                f"({c1:g}): m members must cost more than one"
            )
        return (baseline_cost - (2 * c1 - c2)) / (c2 - c1)
    if c1 >= baseline_cost:
        return baseline_cost / c1
    lo, hi = 1, 2
    while cost(hi) < baseline_cost:
        lo, hi = hi, 2 * hi
        if hi > m_max:
            raise ValueError(f"budget: factory(m, {n}) stays below the baseline's latency up to m = {m_max}")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) < baseline_cost else (lo, mid)
    step = cost(hi) - cost(lo)
    return float(lo + (baseline_cost - cost(lo)) / step) if step > 0 else float(lo)


def design_module(
    factory: Callable[[int, int], nn.Module],
    input_shape: Sequence[int],
    baseline: tuple[int, int] = (1, 64),
    objective: str = "primal",
    budget: str = "params",
    alpha: float | None = None,
    ns: Sequence[int] | None = None,
    rounding: str = "nearest",
    module: FactoryModule | None = None,
    network: Callable[[int, int], nn.Module] | int | None = None,
    network_input_shape: Sequence[int] | None = None,
    **options,
) -> dict:
    """Algorithm 2 for any factory: the optimal collegial module ``m x n`` for the baseline ``(m_tilde, n_tilde)``.

    Args:
        factory, input_shape: as :class:`FactoryModule` (``options`` are its other arguments).
        baseline: ``(m_tilde, n_tilde)`` or ``"CxD"``: the module the ensemble replaces.
        objective: ``"primal"`` (Eq. 12) or ``"dual"`` (Eq. 14); budget: one of :data:`BUDGETS`.
        alpha: Eq. 9's alpha (``None``: the paper's 1.60 for the ResNeXt block; fit your member's
            with :func:`fit_member_alpha`).
        ns: widths searched (default ``1..n_tilde``); rounding: of step 6 (``search.ROUNDINGS``);
            primal: the ``m`` at which ``factory(m, n)`` (or ``network``) costs the baseline's, dual: ``m_d(n)``.
        module: a :class:`FactoryModule` to reuse (its cache), instead of building one.
        network: what step 6 matches (:func:`network_module`): ``None``, the module itself (the curve's
            ``beta``); an int ``k``, ``k`` such modules; or a factory ``(m, n) -> nn.Module`` of the whole
            network built from the module (e.g. ``cepaper.models.resnext.ResNeXtCifar`` for the Fig. 5 block:
            the paper's step 6, as :func:`cepaper.search.networks.design`). Its costs are also the reported ``cost``,
            ``params`` and ``rho``; network_input_shape: one example of the network's input (for FLOPs and
            latency; default ``input_shape``).
    Returns:
        dict: ``n``, ``m``, ``m_exact``, ``m_curve``, ``config``, ``baseline``, ``objective``,
        ``budget``, ``cost``/``baseline_cost`` (of the budget), ``params``/``baseline_params``,
        ``rho`` (baseline cost over the design's), ``var_ratio`` (ensemble Var(K) over the baseline's,
        at the integer m), ``strong_duality``, ``alpha``, ``alpha_source``, ``rounding``, ``layers``,
        ``flops_convention``, ``step6`` (what step 6 matched), ``module_cost``/``module_baseline_cost`` (the
        module's, the curve's ``beta``), ``curve`` (lists over ``n``), and :func:`cepaper.verdicts.judge`'s
        ``improves``, ``verdict`` (``"optimum"`` or ``"no improvement found"``) and ``notes``; under latency
        also ``latency`` and ``baseline_latency`` (median, quartiles and IQR of the chosen design's and the
        baseline's seconds) and ``timings_resolved``.
    """
    choice("objective", objective, equations.OBJECTIVES)
    choice("budget", budget, BUDGETS)
    if isinstance(baseline, str):
        try:
            baseline = cxm.parse_config(baseline)
        except ValueError:
            raise ValueError(f"baseline must be 'CxD' (e.g. '1x64') or (m_tilde, n_tilde), got {baseline!r}") from None
    try:
        m_tilde, n_tilde = baseline
    except (TypeError, ValueError):
        raise ValueError(f"baseline must be 'CxD' (e.g. '1x64') or (m_tilde, n_tilde), got {baseline!r}") from None
    m_tilde, n_tilde = positive_int("baseline m_tilde", m_tilde), positive_int("baseline n_tilde", n_tilde)
    if alpha is None:
        alpha, source = networks.default_alpha("bottleneck")
        source += " for the ResNeXt block, not fitted to this module (see fit_member_alpha)"
    else:
        alpha, source = positive_float("alpha", alpha), "given"
    module = module if module is not None else FactoryModule(factory, input_shape, **options)
    c = equations.curve(module, n_tilde, alpha, budget, ns, m_tilde)
    opt = equations.optimum(c, objective)
    n, i = opt["n"], opt["index"]
    m_curve = float(opt["m"])
    whole = network_module(module, network, network_input_shape)
    base = whole.cost(n_tilde, budget, groups=m_tilde)
    if objective == "primal":
        m_exact = float(module_m(whole, n, base, budget))
        m = networks.integer_m(m_exact, rounding, f"the baseline's {budget}")
    else:
        m_exact = m_curve
        m = networks.integer_m(m_exact, rounding, "the baseline's Var(K)")
    cost = whole.cost(n, budget, groups=m)
    out = {
        "n": int(n),
        "m": m,
        "m_exact": m_exact,
        "m_curve": m_curve,
        "config": f"{m}x{n}",
        "baseline": f"{m_tilde}x{n_tilde}",
        "objective": objective,
        "budget": budget,
        "cost": cost,
        "baseline_cost": float(base),
        "rho": float(base / cost),
        "params": int(whole.cost(n, "params", groups=m)),
        "baseline_params": int(whole.cost(n_tilde, "params", groups=m_tilde)),
        "var_ratio": float(equations.var_ensemble(c["var_k"][i], m) / c["var_s"]),
        "strong_duality": equations.strong_duality(c),
        "alpha": float(alpha),
        "alpha_source": source,
        "rounding": rounding,
        "layers": module.layers,
        "flops_convention": module.flops,
        "step6": "the module" if whole is module else repr(whole) if isinstance(whole, Multiple) else _name(whole),
        "module_cost": module.cost(n, budget, groups=m),
        "module_baseline_cost": float(c["beta_s"]),
        "curve": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in c.items()},
    }
    if budget == "latency":
        lat = whole.latencies
        out["latency"] = {k: v for k, v in lat[(m, n)].items() if k != "times"}
        out["baseline_latency"] = {k: v for k, v in lat[(m_tilde, n_tilde)].items() if k != "times"}
    return out | judge(out, c, i, whole)


def _name(module):
    """``"the network <factory>"``: a :class:`FactoryModule`'s factory by name."""
    f = module.factory
    return f"the network {getattr(f, '__qualname__', None) or repr(f)}" + (
        "" if module.input_shape is None else f" on {'x'.join(map(str, module.input_shape))}"
    )


# ---------------------------------------------------------------------------------------------
# Algorithm 1 on the member factory(1, n)
# ---------------------------------------------------------------------------------------------
