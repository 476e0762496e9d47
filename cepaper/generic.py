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
  (norms included); ``"flops"``, the count of ``torch.utils.flop_counter.FlopCounterMode`` over one
  forward pass on the example input (``2 x multiply-adds`` of convs and matmuls, nothing for norms,
  activations or sums: the ``"2macs"`` convention of :data:`cepaper.search.FLOPS_CONVENTIONS`);
  or ``"latency"``, the median seconds of a forward + backward pass after warm-up, with its IQR.

:class:`FactoryModule` is a module of :mod:`cepaper.search` (``sum_inv_fan_in``, ``cost``), so
``search.optimum`` reads its curves; :func:`curve` is ``search.curve`` with the latency budget too, and
:func:`design_module` is Algorithm 2 (primal or dual, integer ``m`` of step 6).
:func:`cepaper.member_alpha.fit_member_alpha`
is Algorithm 1 on the member: Monte Carlo NTKs of ``factory(1, n)`` through a fixed read-out; the
factories themselves (files, packages, torchvision) and their checks are :mod:`cepaper.factories`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from cepaper import complexity as cxm
from cepaper import sweeps
from cepaper import ensembles
from cepaper import search
from cepaper._checks import nonneg_int, positive_float, positive_int
from cepaper.verdicts import VERDICTS, judge  # noqa: F401  (VERDICTS: part of this module's API)
from cepaper.factories import (
    FAN_IN_LAYERS,
    _choice,
    _output,
    build,
    check_input_shape,
    check_members,
    member_fan_ins,
    param_count,
)

BUDGETS = ("params", "flops", "latency")


def flop_count(module: nn.Module, x: torch.Tensor) -> int:
    """Eq. 15's ``beta``: ``FlopCounterMode``'s FLOPs of one forward pass on ``x`` (``2 x`` multiply-adds)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _output(module, x)
    return int(counter.get_total_flops())


def latency(module, x, repeats=20, warmup=3, timer=time.perf_counter):
    """Seconds of one forward + backward pass (``out.sum().backward()``) of ``module`` on ``x``.

    ``warmup`` untimed passes, then ``repeats`` timed ones (CUDA synchronized around each).
    Returns a dict: ``median``, ``q25``, ``q75``, ``iqr`` (``q75 - q25``), ``repeats``, ``times`` (list).
    """
    repeats, warmup = positive_int("repeats", repeats), nonneg_int("warmup", warmup)
    cuda = x.device.type == "cuda"

    def once():
        module.zero_grad(set_to_none=True)
        out = _output(module, x)
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
    """A :mod:`cepaper.search` module (``sum_inv_fan_in``, ``cost``) read from a factory's built modules.

    Args:
        factory: ``(m, n) -> nn.Module``, ``m`` members of width ``n``.
        input_shape: one example's shape (no batch), e.g. ``(256, 32, 32)``.
        batch: examples in the FLOPs/latency input ``(batch, *input_shape)`` (N(0, 1), seeded by ``seed``).
        device: where FLOPs and latency are measured.
        layers: weight layers entering ``sum_l 1/fan-in_l``: ``"all"`` or ``"hidden"`` (all but the first).
        repeats, warmup, timer: of :func:`latency`.
    Built modules' costs are cached per ``(m, n, budget)``, fan-ins per ``n``. Every ``factory(m, n)`` with
    ``m > 1`` is checked against ``factory(1, n)`` once (:func:`check_members`).
    """

    flops = "2macs"

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
    ):
        if not callable(factory):
            raise ValueError(f"factory must be a callable (m, n) -> torch.nn.Module, got {type(factory).__name__}")
        self.factory, self.input_shape = factory, check_input_shape(input_shape)
        self.batch, self.device = positive_int("batch", batch), torch.device(device)
        self.layers = _choice("layers", layers, FAN_IN_LAYERS)
        self.repeats, self.warmup = positive_int("repeats", repeats), nonneg_int("warmup", warmup)
        self.timer, self.seed = timer, int(seed)
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
        out = [sweeps.sum_inv_fan_in(self.fan_ins(positive_int("n", v.item())), self.layers) for v in arr.ravel()]
        return np.asarray(out, dtype=float).reshape(arr.shape)

    def cost(self, n, budget="params", groups=1):
        """``beta``: params, FLOPs or latency (median seconds) of ``factory(groups, n)``."""
        _choice("budget", budget, BUDGETS)
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
                module = module.to(self.device)
                x = self.example_input()
                if budget == "flops":
                    value = flop_count(module, x)
                    if value == 0:
                        raise ValueError(
                            f"factory: factory({m}, {n}) counts 0 FLOPs on input "
                            f"{tuple(x.shape)}: it has no conv or matmul"
                        )
                else:
                    rec = latency(module, x, self.repeats, self.warmup, self.timer)
                    self.latencies[(m, n)] = rec
                    value = rec["median"]
            self._costs[key] = float(value)
        return self._costs[key]


def curve(module, n_tilde, alpha, budget="params", ns=None, m_tilde=1):
    """:func:`cepaper.search.curve` (Eqs. 8-14 over ``ns``, default ``1..n_tilde``), any of :data:`BUDGETS`.

    Returns search's dict (arrays of shape ``(len(ns),)``); with ``"latency"`` and a
    :class:`FactoryModule` also ``beta_iqr``, ``beta_q25`` and ``beta_q75`` (the IQR and quartiles of each
    member's latency; ``beta`` is the median).
    """
    _choice("budget", budget, BUDGETS)
    if budget in search.BUDGETS:
        return search.curve(module, n_tilde, alpha, budget, ns, m_tilde)
    n_tilde, m_tilde = positive_int("n_tilde", n_tilde), positive_int("m_tilde", m_tilde)
    ns = np.arange(1, n_tilde + 1) if ns is None else np.asarray([positive_int("n", n) for n in ns])
    costs = {
        "n": ns,
        "beta": np.array([module.cost(n, budget) for n in ns]),
        "beta_s": module.cost(n_tilde, budget, groups=m_tilde),
        "sum_inv_fan_in": module.sum_inv_fan_in(ns),
        "sum_inv_fan_in_s": float(module.sum_inv_fan_in(n_tilde)),
        "n_tilde": n_tilde,
        "m_tilde": m_tilde,
        "budget": budget,
    }
    if isinstance(module, FactoryModule):
        for key in ("iqr", "q25", "q75"):
            costs[f"beta_{key}"] = np.array([module.latencies[(1, int(n))][key] for n in ns])
    return search._curve(costs, alpha)


def module_m(module, n, baseline_cost, budget="params", m_max=2**16):
    """Algorithm 2 step 6 (primal): continuous ``m`` with ``cost(n, groups=m) == baseline_cost``.

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
            primal: the ``m`` at which ``factory(m, n)`` costs the baseline's, dual: ``m_d(n)``.
        module: a :class:`FactoryModule` to reuse (its cache), instead of building one.
    Returns:
        dict: ``n``, ``m``, ``m_exact``, ``m_curve``, ``config``, ``baseline``, ``objective``,
        ``budget``, ``cost``/``baseline_cost`` (of the budget), ``params``/``baseline_params``,
        ``rho`` (baseline cost over the design's), ``var_ratio`` (ensemble Var(K) over the baseline's,
        at the integer m), ``strong_duality``, ``alpha``, ``alpha_source``, ``rounding``, ``layers``,
        ``flops_convention``, ``curve`` (lists over ``n``), and :func:`judge`'s ``improves``, ``verdict``
        (``"optimum"`` or ``"no improvement found"``) and ``notes``; under latency also ``latency`` and
        ``baseline_latency`` (median, quartiles and IQR of the chosen design's and the baseline's seconds) and
        ``timings_resolved``.
    """
    _choice("objective", objective, search.OBJECTIVES)
    _choice("budget", budget, BUDGETS)
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
        alpha, source = ensembles.default_alpha("bottleneck")
        source += " for the ResNeXt block, not fitted to this module (see fit_member_alpha)"
    else:
        alpha, source = positive_float("alpha", alpha), "given"
    module = module if module is not None else FactoryModule(factory, input_shape, **options)
    c = curve(module, n_tilde, alpha, budget, ns, m_tilde)
    opt = search.optimum(c, objective)
    n, i = opt["n"], opt["index"]
    m_curve = float(opt["m"])
    base = c["beta_s"]
    if objective == "primal":
        m_exact = float(module_m(module, n, base, budget))
        m = ensembles.integer_m(m_exact, rounding, f"the baseline's {budget}")
    else:
        m_exact = m_curve
        m = ensembles.integer_m(m_exact, rounding, "the baseline's Var(K)")
    cost = module.cost(n, budget, groups=m)
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
        "params": int(module.cost(n, "params", groups=m)),
        "baseline_params": int(module.cost(n_tilde, "params", groups=m_tilde)),
        "var_ratio": float(search.var_ensemble(c["var_k"][i], m) / c["var_s"]),
        "strong_duality": search.strong_duality(c),
        "alpha": float(alpha),
        "alpha_source": source,
        "rounding": rounding,
        "layers": module.layers,
        "flops_convention": module.flops,
        "curve": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in c.items()},
    }
    if budget == "latency":
        out["latency"] = {k: v for k, v in module.latencies[(m, n)].items() if k != "times"}
        out["baseline_latency"] = {k: v for k, v in module.latencies[(m_tilde, n_tilde)].items() if k != "times"}
    return out | judge(out, c, i, module)


# ---------------------------------------------------------------------------------------------
# Algorithm 1 on the member factory(1, n)
# ---------------------------------------------------------------------------------------------
