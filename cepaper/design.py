"""Design your own collegial ensemble: Algorithms 1 and 2 on any PyTorch module (Sec. 3, 4.2, App. C-D).

A *factory* ``factory(m, n) -> nn.Module`` builds the collegial module: ``m`` members of width ``n``
(as grouped convolutions or block-diagonal layers), taking inputs of an example shape
``(batch, *input_shape)``. From the factory alone, with no per-architecture code:

* ``sum_l 1/fan-in_l`` (Eq. 9) is read from the member ``factory(1, n)``: every ``nn.Linear``
  (fan-in ``in_features``) and ``nn.Conv1d/2d/3d`` (fan-in ``weight.shape[1] * prod(kernel_size)``:
  input channels per group times the kernel area) enters, in registration order; norms, biases and
  other parameters do not (they have no fan-in). ``layers="hidden"`` drops the first weight layer
  (the :class:`cepaper.search.MLP` convention, Prop. 1: the input layer's fan-in is fixed).
* ``beta(m, n)`` (Eq. 8, Eq. 15) is ``"params"``, the trainable parameters of ``factory(m, n)``
  (norms included); ``"flops"``, the count of ``torch.utils.flop_counter.FlopCounterMode`` over one
  forward pass on the example input (``2 x multiply-adds`` of convs and matmuls, nothing for norms,
  activations or sums: the ``"2macs"`` convention of :data:`cepaper.search.FLOPS_CONVENTIONS`);
  or ``"latency"``, the median seconds of a forward + backward pass after warm-up, with its IQR.

:class:`FactoryModule` is a module of :mod:`cepaper.search` (``sum_inv_fan_in``, ``cost``), so
``search.optimum`` reads its curves; :func:`curve` is ``search.curve`` with the latency budget too, and
:func:`design_module` is Algorithm 2 (primal or dual, integer ``m`` of step 6). :func:`fit_member_alpha`
is Algorithm 1 on the member: Monte Carlo NTKs of ``factory(1, n)`` through a fixed read-out.
"""

import importlib
import importlib.util
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cepaper import complexity as cxm
from cepaper import fit
from cepaper import sweeps
from cepaper import search
from cepaper._checks import nonneg_int, positive_float, positive_int

BUDGETS = ("params", "flops", "latency")
FAN_IN_LAYERS = ("all", "hidden")
READOUTS = ("center", "mean", "random")
#: The weight layers whose fan-ins enter Eq. 9 (transposed convs are not among them).
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return value


def check_input_shape(input_shape):
    """``input_shape`` (one example's shape, without the batch) as a tuple of ints >= 1."""
    if isinstance(input_shape, (int, np.integer)):
        input_shape = (input_shape,)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a tuple of ints >= 1 (one example, no batch), got {input_shape!r}")
    if not shape:
        raise ValueError("input_shape must hold at least one dimension, got ()")
    return tuple(positive_int("input_shape entry", s) for s in shape)


def build(factory, m, n):
    """``factory(m, n)``, checked: an ``nn.Module`` of ``m`` members of width ``n``."""
    if not callable(factory):
        raise ValueError(f"factory must be a callable (m, n) -> torch.nn.Module, got {type(factory).__name__}")
    m, n = positive_int("m", m), positive_int("n", n)
    try:
        module = factory(m, n)
    except Exception as e:
        raise ValueError(f"factory: factory({m}, {n}) raised {type(e).__name__}: {e}") from e
    if not isinstance(module, nn.Module):
        raise ValueError(f"factory: factory({m}, {n}) must return a torch.nn.Module, got {type(module).__name__}")
    return module


#: torchvision's Bottleneck ResNets by builder name: the plain ResNet of the same depth (whose builder
#: takes ``groups`` and ``width_per_group``) and the builder's own ``(groups, width_per_group)``.
TORCHVISION = {"resnet50": ("resnet50", (1, 64)), "resnet101": ("resnet101", (1, 64)),
               "resnet152": ("resnet152", (1, 64)), "resnext50_32x4d": ("resnet50", (32, 4)),
               "resnext101_32x8d": ("resnet101", (32, 8)), "resnext101_64x4d": ("resnet101", (64, 4)),
               "wide_resnet50_2": ("resnet50", (1, 128)), "wide_resnet101_2": ("resnet101", (1, 128))}
#: Blocks per stage (``layer1..layer4``) of the plain ResNets.
TORCHVISION_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}


class TorchvisionFactory:
    """``factory(m, n)``: torchvision's ResNet ``name`` with ``groups=m, width_per_group=n`` (``weights=None``).

    ``name`` is any key of :data:`TORCHVISION` (``resnet50``, ``resnext50_32x4d``, ``wide_resnet50_2``...):
    they differ only in ``(groups, width_per_group)``, so each names the family of its depth, and
    ``baseline`` is the builder's own ``(groups, width_per_group)`` (``resnext50_32x4d``: ``(32, 4)``).
    ``stage`` (1-4) builds only ``layer<stage>`` (torchvision's ``Bottleneck`` blocks, ``planes`` =
    ``64 * 2^(stage-1)``, its first block strided and projected as in ``ResNet._make_layer``); its input
    has ``in_channels`` channels (64 for stage 1, else ``128 * 2^(stage-1)``). Nothing is downloaded.
    """

    def __init__(self, name, stage=None, classes=1000):
        if name not in TORCHVISION:
            raise ValueError(f"torchvision model must be one of {', '.join(TORCHVISION)} (Bottleneck ResNets taking "
                             f"groups and width_per_group), got {name!r}")
        self.name, (self.builder, self.baseline) = name, TORCHVISION[name]
        self.stage = None if stage is None else _choice("stage", int(stage), (1, 2, 3, 4))
        self.classes = positive_int("classes", classes)
        self.in_channels = 3 if stage is None else (64 if self.stage == 1 else 128 * 2 ** (self.stage - 1))

    def __repr__(self):
        return f"torchvision:{self.name}" + ("" if self.stage is None else f":layer{self.stage}")

    def __call__(self, m, n):
        import torchvision
        from torchvision.models.resnet import Bottleneck, conv1x1
        m, n = positive_int("groups", m), positive_int("width_per_group", n)
        if self.stage is None:
            return getattr(torchvision.models, self.builder)(weights=None, groups=m, width_per_group=n,
                                                             num_classes=self.classes)
        planes, stride = 64 * 2 ** (self.stage - 1), 1 if self.stage == 1 else 2
        blocks = TORCHVISION_LAYERS[self.builder][self.stage - 1]
        inplanes, out = self.in_channels, planes * Bottleneck.expansion
        down = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
        layers = [Bottleneck(inplanes, planes, stride, down, groups=m, base_width=n)]
        layers += [Bottleneck(out, planes, groups=m, base_width=n) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def torchvision_factory(name, stage=None, classes=1000):
    """:class:`TorchvisionFactory` ``(name, stage, classes)``: a torchvision ResNet family as a factory."""
    return TorchvisionFactory(name, stage, classes)


def load_factory(spec):
    """The factory named by ``spec``: ``"path/to/file.py:func"``, ``"package.module:func"``, or
    ``"torchvision:NAME"`` / ``"torchvision:NAME:layerK"`` (:func:`torchvision_factory`, a whole
    network or its stage ``K``)."""
    if isinstance(spec, str) and spec.startswith("torchvision:"):
        name, _, stage = spec[len("torchvision:"):].partition(":")
        if stage and not (stage.startswith("layer") and stage[5:] in ("1", "2", "3", "4")):
            raise ValueError(f"module: torchvision stage must be layer1..layer4, got {stage!r} in {spec!r}")
        try:
            return torchvision_factory(name, int(stage[5:]) if stage else None)
        except ValueError as e:
            raise ValueError(f"module: {e}") from None
    if not isinstance(spec, str) or spec.count(":") < 1 or not spec.rpartition(":")[2]:
        raise ValueError(f"module must be FILE.py:FUNC, package.module:FUNC or torchvision:NAME, got {spec!r}")
    where, _, name = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"module: file {where} does not exist (give FILE.py:FUNC)")
        spec_ = importlib.util.spec_from_file_location(f"_cepaper_factory_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec_)
        try:
            spec_.loader.exec_module(mod)
        except Exception as e:
            raise ValueError(f"module: importing {where} raised {type(e).__name__}: {e}") from e
    else:
        try:
            mod = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"module: cannot import {where!r} ({e}); give FILE.py:FUNC or package.module:FUNC") from e
    factory = getattr(mod, name, None)
    if not callable(factory):
        raise ValueError(f"module: {where} has no function {name!r} (a factory (m, n) -> torch.nn.Module)")
    return factory


def member_fan_ins(module):
    """Fan-ins of the weight layers (:data:`WEIGHT_LAYERS`) of ``module``, in registration order."""
    fans = []
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            fans.append(int(layer.in_features))
        elif isinstance(layer, WEIGHT_LAYERS):
            fans.append(int(layer.weight.shape[1] * math.prod(layer.kernel_size)))
    if not fans:
        raise ValueError(f"module: {type(module).__name__} has no weight layers (nn.Linear or nn.Conv1d/2d/3d) "
                         f"to read fan-ins from")
    return tuple(fans)


def _leaf_types(module):
    from collections import Counter
    return Counter(type(m).__name__ for m in module.modules() if not list(m.children()))


def check_members(member, module, m, n):
    """That ``module = factory(m, n)`` is ``m`` members ``member = factory(1, n)``, differing in width only.

    Two forms pass. Stacked (grouped or block-diagonal layers): the same layers by name and type, and each
    parameter's shape equal to the member's (shared, e.g. an output norm) or ``m`` times it along exactly
    one dimension. Replicated (members as separate submodules): every leaf-layer type counted
    ``c_1 + (m - 1) q`` times, ``0 <= q <= c_1``. Either way the parameters are ``P(1) + (m - 1) p`` with
    ``0 < p <= P(1)``: ``p`` per member (Eq. 8's ``beta`` is affine in ``m``). Raises ``ValueError`` otherwise.
    """
    if m == 1:
        return
    what = f"factory: factory({m}, {n}) must be {m} members factory(1, {n}) differing only in width"
    shapes1 = {k: tuple(p.shape) for k, p in member.named_parameters()}
    shapes = {k: tuple(p.shape) for k, p in module.named_parameters()}
    if shapes.keys() == shapes1.keys():
        types1 = [(k, type(v).__name__) for k, v in member.named_modules()]
        types = [(k, type(v).__name__) for k, v in module.named_modules()]
        if types != types1:
            diff = next(((a, b) for a, b in zip(types1, types) if a != b), (types1[len(types):] or types[len(types1):],))
            raise ValueError(f"{what}, but their layers differ: {diff[0]} at m = 1 vs "
                             f"{diff[1] if len(diff) > 1 else 'nothing'} at m = {m}")
        for k, s1 in shapes1.items():
            sm = shapes[k]
            stacked = [d for d, (a, b) in enumerate(zip(s1, sm)) if a != b]
            ok = len(sm) == len(s1) and (not stacked or (len(stacked) == 1 and sm[stacked[0]] == m * s1[stacked[0]]))
            if not ok:
                raise ValueError(f"{what}, but parameter {k} has shape {sm} at m = {m} and {s1} at m = 1: a member's "
                                 f"parameter is either shared (same shape) or stacked m times along one dimension")
    else:
        t1, tm = _leaf_types(member), _leaf_types(module)
        for t in sorted(set(t1) | set(tm)):
            q, r = divmod(tm[t] - t1[t], m - 1)
            if r or not 0 <= q <= t1[t]:
                raise ValueError(f"{what}, but it has {tm[t]} {t} layer(s) and factory(1, {n}) {t1[t]}: neither "
                                 f"shared nor one per member")
    p1, pm = param_count(member), param_count(module)
    p, r = divmod(pm - p1, m - 1)
    if r or not 0 < p <= p1:
        per = f"{(pm - p1) / (m - 1):g}"
        raise ValueError(f"{what}, but its {pm} trainable parameters are not factory(1, {n})'s {p1} plus {m - 1} "
                         f"more members of at most {p1} each (got {per} per added member)")


def param_count(module):
    """Eq. 8's ``beta``: trainable parameters of ``module`` (every ``p`` with ``requires_grad``)."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def _output(module, x):
    out = module(x)
    if not torch.is_tensor(out):
        raise ValueError(f"module: {type(module).__name__} must return a tensor, got {type(out).__name__}")
    return out


def flop_count(module, x):
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
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "iqr": float(q75 - q25),
            "repeats": repeats, "times": times}


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

    def __init__(self, factory, input_shape, batch=1, device="cpu", layers="all", repeats=20, warmup=3,
                 timer=time.perf_counter, seed=0):
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
                        raise ValueError(f"factory: factory({m}, {n}) counts 0 FLOPs on input "
                                         f"{tuple(x.shape)}: it has no conv or matmul")
                else:
                    rec = latency(module, x, self.repeats, self.warmup, self.timer)
                    self.latencies[(m, n)] = rec
                    value = rec["median"]
            self._costs[key] = float(value)
        return self._costs[key]


def curve(module, n_tilde, alpha, budget="params", ns=None, m_tilde=1):
    """:func:`cepaper.search.curve` (Eqs. 8-14 over ``ns``, default ``1..n_tilde``), any of :data:`BUDGETS`.

    Returns search's dict (arrays of shape ``(len(ns),)``); with ``"latency"`` and a
    :class:`FactoryModule` also ``beta_iqr`` (the IQR of each member's latency).
    """
    _choice("budget", budget, BUDGETS)
    if budget in search.BUDGETS:
        return search.curve(module, n_tilde, alpha, budget, ns, m_tilde)
    n_tilde, m_tilde = positive_int("n_tilde", n_tilde), positive_int("m_tilde", m_tilde)
    ns = np.arange(1, n_tilde + 1) if ns is None else np.asarray([positive_int("n", n) for n in ns])
    costs = {"n": ns, "beta": np.array([module.cost(n, budget) for n in ns]),
             "beta_s": module.cost(n_tilde, budget, groups=m_tilde), "sum_inv_fan_in": module.sum_inv_fan_in(ns),
             "sum_inv_fan_in_s": float(module.sum_inv_fan_in(n_tilde)), "n_tilde": n_tilde, "m_tilde": m_tilde,
             "budget": budget}
    if isinstance(module, FactoryModule):
        costs["beta_iqr"] = np.array([module.latencies[(1, int(n))]["iqr"] for n in ns])
    return search._curve(costs, alpha)


def module_m(module, n, baseline_cost, budget="params", m_max=2 ** 16):
    """Algorithm 2 step 6 (primal): continuous ``m`` with ``cost(n, groups=m) == baseline_cost``.

    Params and FLOPs of grouped layers are affine in ``m``: solved through ``m = 1, 2``. Latency is
    not (fixed overheads): the integers ``m_lo, m_lo + 1`` that bracket the baseline's latency are
    found by doubling and bisection on measured latencies, then interpolated linearly.
    """
    cost = lambda m: module.cost(n, budget, groups=m)
    c1, c2 = cost(1), cost(2)
    if budget != "latency":
        if not c2 > c1:
            raise ValueError(f"factory: the {budget} of factory(2, {n}) ({c2:g}) must exceed factory(1, {n})'s "
                             f"({c1:g}): m members must cost more than one")
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


def design_module(factory, input_shape, baseline=(1, 64), objective="primal", budget="params", alpha=None, ns=None,
                  rounding="nearest", module=None, **options):
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
        ``flops_convention`` and ``curve`` (lists over ``n``).
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
        raise ValueError(f"baseline must be 'CxD' (e.g. '1x64') or (m_tilde, n_tilde), got {baseline!r}")
    m_tilde, n_tilde = positive_int("baseline m_tilde", m_tilde), positive_int("baseline n_tilde", n_tilde)
    if alpha is None:
        alpha, source = search.default_alpha("bottleneck")
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
        m = search.integer_m(m_exact, rounding, f"the baseline's {budget}")
    else:
        m_exact = m_curve
        m = search.integer_m(m_exact, rounding, "the baseline's Var(K)")
    cost = module.cost(n, budget, groups=m)
    out = {"n": int(n), "m": m, "m_exact": m_exact, "m_curve": m_curve, "config": f"{m}x{n}",
           "baseline": f"{m_tilde}x{n_tilde}", "objective": objective, "budget": budget,
           "cost": cost, "baseline_cost": float(base), "rho": float(base / cost),
           "params": int(module.cost(n, "params", groups=m)),
           "baseline_params": int(module.cost(n_tilde, "params", groups=m_tilde)),
           "var_ratio": float(search.var_ensemble(c["var_k"][i], m) / c["var_s"]),
           "strong_duality": search.strong_duality(c), "alpha": float(alpha), "alpha_source": source,
           "rounding": rounding, "layers": module.layers, "flops_convention": module.flops,
           "curve": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in c.items()}}
    if budget == "latency":
        out["latency"] = {k: v for k, v in module.latencies[(m, n)].items() if k != "times"}
        out["baseline_latency"] = {k: v for k, v in module.latencies[(m_tilde, n_tilde)].items() if k != "times"}
    return out


# ---------------------------------------------------------------------------------------------
# Algorithm 1 on the member factory(1, n)
# ---------------------------------------------------------------------------------------------

def member_inputs(input_shape, count=2, corr=0.5, seed=0, dtype=torch.float32):
    """Inputs ``x_k = sqrt(corr) g_0 + sqrt(1 - corr) g_k``, ``g`` i.i.d. N(0, 1): shape ``(count, *input_shape)``
    (the draw of :func:`cepaper.models.blocks.block_inputs` and :func:`cepaper.sweeps.mlp_inputs`)."""
    shape, count = check_input_shape(input_shape), positive_int("count", count)
    if not 0.0 <= float(corr) <= 1.0:
        raise ValueError(f"corr must be in [0, 1], got {corr!r}")
    z = torch.randn((count + 1,) + shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (math.sqrt(corr) * z[:1] + math.sqrt(1.0 - corr) * z[1:]).to(dtype)


def readout_vector(kind, out_shape, seed=0, dtype=torch.float32):
    """Unit read-out ``v`` of shape ``out_shape = (C, *spatial)`` making ``f = <v, out>`` scalar.

    ``"center"``: channel 0 at the centre of every spatial axis (index ``s // 2``); ``"mean"``: all
    entries equal; ``"random"``: a fixed Gaussian direction drawn with ``seed``. For ``(C, H, H)`` this
    is :func:`cepaper.models.blocks.readout_vector`.
    """
    _choice("readout", kind, READOUTS)
    shape = tuple(positive_int("output shape entry", s) for s in out_shape) or (1,)
    if kind == "mean":
        v = torch.ones(shape, dtype=torch.float64)
    elif kind == "center":
        v = torch.zeros(shape, dtype=torch.float64)
        v[(0,) + tuple(s // 2 for s in shape[1:])] = 1.0
    else:
        v = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (v / v.norm()).to(dtype)


class Readout(nn.Module):
    """``f(x) = <v, member(x)>`` per example: ``(N, *input_shape) -> (N,)`` (a scalar member for the NTK)."""

    def __init__(self, member, v):
        super().__init__()
        self.member = member
        self.register_buffer("v", v)

    def forward(self, x):
        out = _output(self.member, x)
        if tuple(out.shape[1:]) != tuple(self.v.shape) and not (out.ndim == 1 and self.v.numel() == 1):
            raise ValueError(f"module: the member's output per example must have shape {tuple(self.v.shape)} "
                             f"at every width, got {tuple(out.shape[1:])}")
        return (out.reshape(len(x), -1) * self.v.reshape(1, -1)).sum(1)


def member_draw(factory, n, generator, v):
    """One draw of the scalar member: ``factory(1, n)`` built under a CPU seed taken from ``generator``
    (the factory's own initialization), in eval mode (BatchNorm uses its running statistics, at
    initialization the identity up to ``eps``; no dropout), wrapped by :class:`Readout` with ``v``."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)    # the CPU generator only (torch.manual_seed also seeds
        member = build(factory, 1, n)                # every accelerator: most of a small draw's time)
    return Readout(member, v).to(generator.device).eval()


#: float32 working memory per chunk of :func:`member_ntk_sampler` (floats): small enough to stay in cache,
#: where the batched path beats one NTK per draw (measured in ``benchmarks/design_alpha.py``).
MEMBER_CHUNK_FLOATS = 2 ** 23
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
    (grouped) call, as :class:`cepaper.models.blocks.BottleneckDraws` does by hand for the Fig. 5 block.

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
        return sum(a @ a.T for a in (v.flatten(1) for v in j.values()))   # sum_p J_p J_p^T, out of place (vmap)

    return vmap(kernel)(params, rest)


def member_ntk_sampler(factory, n, x, v, method="batched"):
    """Sampler of the member's NTK for :func:`cepaper.montecarlo.mc_samples` (Algorithm 1, lines 3-5).

    ``sample(t, generator)`` draws ``t`` members :func:`member_draw` ``(factory, n, generator, v)`` in turn
    (the same draws, in the same order, whatever ``method``) and returns their NTKs on ``x``:
    ``"batched"`` by :func:`batched_member_ntk`, ``"loop"`` one :func:`cepaper.ntk.jacobian_ntk` per draw.
    A member that ``torch.func`` cannot transform (``.item()``, data-dependent control flow) falls back, with a
    warning, to one :func:`cepaper.ntk.naive_ntk` per draw (plain autograd, one backward per input).

    Returns:
        a callable ``(t, generator) -> (t, N, N)``.
    """
    from cepaper import ntk
    _choice("method", method, ("batched", "loop"))
    state = {"method": method}

    def sample(t, generator):
        members = [member_draw(factory, n, generator, v) for _ in range(t)]
        xd = x.to(generator.device)
        if state["method"] == "batched":
            try:
                return batched_member_ntk(members, xd).detach()
            except (RuntimeError, NotImplementedError) as e:       # torch.func cannot transform this member
                import warnings
                warnings.warn(f"module: the member of width {n} cannot be batched over draws by torch.func.vmap "
                              f"({type(e).__name__}: {str(e)[:120]}); one NTK per draw by autograd instead")
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
    hooks = [m.register_forward_hook(lambda mod, i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
             for m in member.modules()]
    try:
        with torch.no_grad():
            member(x)
    finally:
        for h in hooks:
            h.remove()
    per = (len(x) + 2) * sum(q.numel() for q in member.parameters()) + 3 * sum(sizes)
    return int(min(MEMBER_CHUNK_MAX, max(1, MEMBER_CHUNK_FLOATS // per)))


def fit_member_alpha(factory, input_shape, widths=(4, 8, 16, 32), trials=100, seed=0, readout="center",
                     layers="all", entry="diag", corr=0.5, input_seed=0, intercept=True, n_boot=200, level=0.95,
                     device="cpu", progress=True, weighted=False, threads=1, checkpoint=None, name=None,
                     method="batched"):
    """Algorithm 1 on the member ``factory(1, n)``: alpha (Eq. 9) with its bootstrap interval.

    Every draw is ``factory(1, n)`` with its own initialization (:func:`member_draw`), read out by
    :func:`readout_vector` ``(readout)``; its NTK on two inputs (:func:`member_inputs`, correlation
    ``corr``) comes from :func:`member_ntk_sampler` (``method``: ``"batched"`` over the draws of a chunk,
    or ``"loop"``, one per draw; the same draws) via :func:`cepaper.sweeps.ntk_sweep`, ``s(n)`` from the
    member's weight layers (:func:`member_fan_ins`, ``layers``), and the fit is :func:`cepaper.fit.sweep_result`.

    Args:
        widths: the member widths ``n``; trials: draws per width; seed: Monte Carlo seed.
        readout: ``"center"``, ``"mean"`` or ``"random"``; entry: ``"diag"`` or ``"offdiag"``.
        intercept, weighted, n_boot, level: as :func:`cepaper.fit.fit_alpha`; progress: a tqdm bar over widths.
        threads: CPU threads of the Monte Carlo; checkpoint: a folder keeping finished widths, with
            ``name`` identifying the factory (its code is not hashed; the read-out and inputs are).
        method: ``"batched"`` (default; falls back to ``"loop"`` for a member ``vmap`` cannot batch) or ``"loop"``.
    Returns:
        :func:`cepaper.fit.sweep_result`'s dict (``alpha``, ``alpha_ci``, ``C``, ``fits``, ...) plus
        ``readout`` and ``input_shape``.
    """
    _choice("readout", readout, READOUTS)
    _choice("layers", layers, FAN_IN_LAYERS)
    _choice("entry", entry, fit.ENTRIES)
    widths = sweeps.check_widths(widths)
    shape = check_input_shape(input_shape)
    x = member_inputs(shape, 2, corr, input_seed)
    with torch.no_grad():
        out = _output(build(factory, 1, widths[0]), x)
    v = readout_vector(readout, tuple(out.shape[1:]), input_seed)
    if checkpoint is not None and not name:
        raise ValueError("checkpoint: a checkpointed fit needs a name that identifies the factory")
    terms, chunks = [], {}
    for n in widths:
        probe = member_draw(factory, n, torch.Generator().manual_seed(0), v)
        terms.append(sweeps.sum_inv_fan_in(member_fan_ins(probe.member), layers))
        if not any(p.requires_grad for p in probe.parameters()):
            raise ValueError(f"module: factory(1, {n}) has no trainable weights: its NTK is zero")
        chunks[n] = member_chunk(probe, x)
    label = f"{name or 'factory'}|readout={readout}|input_shape={list(shape)}|corr={corr}|input_seed={input_seed}"
    settings = {"module": label, "layers": layers, "x": x.double().sum().item(), "sampler": method}
    start = time.perf_counter()
    samples = sweeps.ntk_sweep(lambda n: member_ntk_sampler(factory, n, x.to(device), v, method), widths, trials,
                            seed, chunks.get, device, checkpoint, settings, progress=progress, threads=threads)
    sweep = {"module": name or "factory", "options": {"layers": layers}, "widths": list(widths), "terms": terms,
             "trials": int(trials), "seed": int(seed), "device": str(device),
             "seconds": round(time.perf_counter() - start, 3), "samples": samples}
    res = fit.sweep_result(sweep, entry, intercept, weighted, n_boot=n_boot, level=level)
    return {**res, "readout": readout, "input_shape": list(shape)}
