"""Efficient ensembles (Sec. 3, App. C, Algorithm 2): primal and dual search over the width ``n``.

A *module* is the member of the ensemble as a function of its width ``n``: the fan-ins that enter
the variance (Eq. 9, ``sum_l 1 / fan-in_l``) and its cost ``beta(n)`` (parameters, Eq. 8, or FLOPs,
Eq. 15). With a baseline module of width ``n_tilde`` (cost ``beta_s``, variance ``var_s``)::

    var_k(n)  = exp(alpha * sum_l 1 / fan-in_l(n)) - 1          Eq. 9
    var_e     = var_k(n) / m                                    Eq. 11
    rho(m, n) = beta_s / (m * beta(n))                          Eq. 8 (Eq. 15 for FLOPs)
    m_p(n)    = beta_s / beta(n);    n_p = argmin var_k(n) / m_p(n)     Eq. 12 (primal)
    m_d(n)    = var_k(n) / var_s;    n_d = argmax rho(m_d(n), n)        Eq. 14 (dual)

Both objectives are ``var_k(n) * beta(n)`` up to a constant, so ``n_p = n_d`` (strong duality).
Algorithm 2 step 6 then makes ``m`` an integer: for the primal, the ``m`` whose *whole network*
(``m x n d``) has the baseline network's parameter count (or FLOPs); for the dual, the nearest
integer to ``m_d(n)``.

Conventions (the defaults reproduce the paper's models; see notebook ``04_primal_dual``):

* :class:`BottleneckDesign` (Fig. 5, ``n_in = n_out = 256``): all three convs enter the sum with fan-in
  = kernel area x input channels per group (``1/256 + 1/(9n) + 1/n``); ``beta(n)`` is the block of
  width ``n`` with *all* its BN parameters (``2*256*n + 9n^2 + 4n + 2*256``); FLOPs are
  ``2 * macs + acts`` (one FLOP per conv output, i.e. its BN).
* :class:`MLPDesign` (Eq. 3, Fig. 3): the ``L - 1`` hidden layers enter the sum (``(L - 1) / n``), not the
  input layer's ``1 / n_0``; ``beta(n)`` counts weights only (Eq. 3 has no biases), one output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cepaper import complexity as cxm
from cepaper._checks import positive_float, positive_int

OBJECTIVES = ("primal", "dual")
BUDGETS = ("params", "flops")
ROUNDINGS = ("nearest", "floor", "ceil")
FLOPS_CONVENTIONS = ("2macs", "2macs+acts", "2macs+acts+adds")
#: Fig. 3's alpha: the paper does not state it; this value (found in notebook 04) reproduces
#: n = 48, m_p(48) = 30, m_d(48) = 12 and rho = 2.45 with the default :class:`MLPDesign` conventions.
ALPHA_FIG3 = 3.63
#: Sec. 4.2: alpha fitted to the ResNet bottleneck block of Fig. 5 ("We find alpha ~ 1.60"); the
#: default of every design that is given no alpha.
ALPHA_BOTTLENECK = 1.60


# ---------------------------------------------------------------------------------------------
# Equations 8-14 (elementwise on arrays)
# ---------------------------------------------------------------------------------------------


def var_k(sum_inv_fan_in, alpha):
    """Eq. 9: ``Var(K_n) ~ exp(alpha * sum_l 1/fan-in_l) - 1`` (up to the constant ``C``)."""
    return np.expm1(positive_float("alpha", alpha) * np.asarray(sum_inv_fan_in, dtype=float))


def var_ensemble(var_n, m):
    """Eq. 11: variance of the ensemble NTK of ``m`` independent members, ``Var(K_n) / m``."""
    return np.asarray(var_n, dtype=float) / np.asarray(m, dtype=float)


def rho(beta_s, beta_n, m):
    """Eq. 8 (Eq. 15 with FLOPs): efficiency ``beta_s / (m * beta(n))``."""
    return np.asarray(beta_s, dtype=float) / (np.asarray(m, dtype=float) * np.asarray(beta_n, dtype=float))


def m_primal(beta_s, beta_n):
    """Eq. 12: multiplicity at equal cost, ``m_p(n) = beta_s / beta(n)``."""
    return np.asarray(beta_s, dtype=float) / np.asarray(beta_n, dtype=float)


def m_dual(var_n, var_s):
    """Eq. 14: multiplicity at equal variance, ``m_d(n) = Var(K_n) / Var(K_ñ)``."""
    return np.asarray(var_n, dtype=float) / np.asarray(var_s, dtype=float)


def flops_of(record, convention="2macs"):
    """FLOPs of a complexity record under ``convention`` (``FLOPS_CONVENTIONS``):
    ``2 * macs``, plus one per conv/linear output (``acts``), plus one per residual-sum element."""
    if convention not in FLOPS_CONVENTIONS:
        raise ValueError(f"flops convention must be one of {', '.join(FLOPS_CONVENTIONS)}, got {convention!r}")
    total = 2 * record["macs"]
    if "acts" in convention:
        total += record["acts"]
    if "adds" in convention:
        total += record["adds"]
    return total


# ---------------------------------------------------------------------------------------------
# Modules: the member as a function of its width n
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BottleneckDesign:
    """The Fig. 5 block ``w_in -> [n, n] -> w_out`` as the member of a block-level ensemble.

    Args:
        w_in, w_out: block input/output channels (256 in the paper).
        resolution: feature-map size for FLOPs (FLOPs scale with it; the optimum does not).
        fan_in_layers: ``"all"`` (the three convs: ``1/w_in + 1/(9n) + 1/n``) or ``"width"``
            (only the convs whose fan-in grows with n: ``1/(9n) + 1/n``).
        kernel_area: a conv's fan-in is kernel area x input channels per group (``9n`` for the
            3x3); ``False`` uses input channels only (``n``).
        bn: BN parameters in ``beta(n)``: ``"all"`` (``4n + 2 w_out``: the block of width n with
            its BNs), ``"member"`` (``4n``), ``"none"``.
        flops: FLOPs convention, one of ``FLOPS_CONVENTIONS``.
    """

    w_in: int = 256
    w_out: int = 256
    resolution: int = 32
    fan_in_layers: str = "all"
    kernel_area: bool = True
    bn: str = "all"
    flops: str = "2macs+acts"

    def __post_init__(self):
        positive_int("w_in", self.w_in), positive_int("w_out", self.w_out), positive_int("resolution", self.resolution)
        _choice("fan_in_layers", self.fan_in_layers, ("all", "width"))
        _choice("bn", self.bn, ("all", "member", "none"))
        _choice("flops", self.flops, FLOPS_CONVENTIONS)

    def sum_inv_fan_in(self, n):
        """``sum_l 1/fan-in_l`` of a member of width ``n`` (array ``n`` -> array)."""
        n = np.asarray(n, dtype=float)
        k = 9.0 if self.kernel_area else 1.0
        return (1.0 / self.w_in if self.fan_in_layers == "all" else 0.0) + 1.0 / (k * n) + 1.0 / n

    def cost(self, n, budget="params", groups=1):
        """``beta``: params or FLOPs of the block with ``groups`` paths of width ``n``."""
        _choice("budget", budget, BUDGETS)
        cx = cxm.bottleneck_cx(
            cxm.cx_init(self.resolution),
            self.w_in,
            self.w_out,
            groups * int(n),
            groups,
            bn=self.bn != "none",
            shortcut=False,
        )
        if budget == "flops":
            return float(flops_of(cx, self.flops))
        params = cx["params"]
        return float(params - 2 * self.w_out if self.bn == "member" else params)


@dataclass(frozen=True)
class MLPDesign:
    """The fully connected net of Eq. 3 (``depth`` weight layers, ``depth - 1`` hidden of width n).

    Args:
        inputs, depth, outputs, bias: as :func:`cepaper.complexity.mlp`.
        fan_in_layers: ``"hidden"`` (the layers fed by a hidden layer: ``(L - 1) / n``) or
            ``"all"`` (also the input layer's ``1 / n_0``).
        flops: FLOPs convention, one of ``FLOPS_CONVENTIONS``.
    """

    inputs: int
    depth: int
    outputs: int = 1
    bias: bool = False
    fan_in_layers: str = "hidden"
    flops: str = "2macs+acts"

    def __post_init__(self):
        positive_int("inputs", self.inputs), positive_int("outputs", self.outputs)
        if positive_int("depth", self.depth) < 2:
            raise ValueError(f"depth must be >= 2 (an input and an output layer), got {self.depth}")
        _choice("fan_in_layers", self.fan_in_layers, ("hidden", "all"))
        _choice("flops", self.flops, FLOPS_CONVENTIONS)

    def sum_inv_fan_in(self, n):
        """``(L - 1) / n`` (+ ``1 / n_0`` with ``fan_in_layers="all"``), array ``n`` -> array."""
        n = np.asarray(n, dtype=float)
        return (self.depth - 1) / n + (1.0 / self.inputs if self.fan_in_layers == "all" else 0.0)

    def cost(self, n, budget="params", groups=1):
        """``beta``: params or FLOPs of ``groups`` (>= 1) nets of width ``n``."""
        _choice("budget", budget, BUDGETS)
        cx = cxm.mlp_cx(cxm.cx_init(1), self.inputs, int(n), self.depth, self.outputs, self.bias)
        return float(groups * (cx["params"] if budget == "params" else flops_of(cx, self.flops)))


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Curves and optima (Algorithm 2 steps 2-5)
# ---------------------------------------------------------------------------------------------


def curve(module, n_tilde, alpha, budget="params", ns=None, m_tilde=1):
    """Primal and dual curves over the widths ``ns`` (default ``1..n_tilde``).

    The baseline is ``m_tilde`` members of width ``n_tilde`` (``m_tilde = 1``: a single model).
    Returns a dict of arrays of shape ``(len(ns),)``: ``n``, ``sum_inv_fan_in``, ``var_k``,
    ``beta`` (cost of one member), ``m_primal`` (Eq. 12), ``var_primal`` (Eq. 11 at ``m_primal``:
    the primal objective), ``var_ratio_primal`` (the same over the baseline's variance),
    ``m_dual`` (Eq. 14), ``rho_dual`` (Eq. 8 at ``m_dual``: the dual objective); and the scalars
    ``beta_s``, ``var_s``, ``n_tilde``, ``m_tilde``, ``alpha``, ``budget``.
    """
    return _curve(_costs(module, n_tilde, budget, ns, m_tilde), alpha)


def _costs(module, n_tilde, budget, ns, m_tilde):
    """The alpha-free part of a curve: widths, costs and sums of inverse fan-ins."""
    n_tilde, m_tilde = positive_int("n_tilde", n_tilde), positive_int("m_tilde", m_tilde)
    _choice("budget", budget, BUDGETS)
    ns = np.arange(1, n_tilde + 1) if ns is None else np.asarray([positive_int("n", n) for n in ns])
    return {
        "n": ns,
        "beta": np.array([module.cost(n, budget) for n in ns]),
        "beta_s": module.cost(n_tilde, budget, groups=m_tilde),
        "sum_inv_fan_in": module.sum_inv_fan_in(ns),
        "sum_inv_fan_in_s": float(module.sum_inv_fan_in(n_tilde)),
        "n_tilde": n_tilde,
        "m_tilde": m_tilde,
        "budget": budget,
    }


def _curve(costs, alpha):
    c = {k: v for k, v in costs.items() if k != "sum_inv_fan_in_s"}
    with np.errstate(over="ignore"):
        v = var_k(c["sum_inv_fan_in"], alpha)
        var_s = float(var_k(costs["sum_inv_fan_in_s"], alpha)) / c["m_tilde"]
    if not (np.isfinite(v).all() and np.isfinite(var_s)):
        largest = max(float(np.max(c["sum_inv_fan_in"])), costs["sum_inv_fan_in_s"])
        raise ValueError(
            f"alpha = {alpha:g} is too large: Var(K) of Eq. 9, exp(alpha * sum_l 1/fan-in_l) - 1, "
            f"overflows float64 at the narrowest width; alpha must be below "
            f"{np.log(np.finfo(float).max) / largest:.4g} for this baseline"
        )
    mp, md = m_primal(c["beta_s"], c["beta"]), m_dual(v, var_s)
    return {
        **c,
        "var_k": v,
        "m_primal": mp,
        "var_primal": var_ensemble(v, mp),
        "var_ratio_primal": var_ensemble(v, mp) / var_s,
        "m_dual": md,
        "rho_dual": rho(c["beta_s"], c["beta"], md),
        "var_s": var_s,
        "alpha": float(alpha),
    }


def optimum(c, objective="primal"):
    """The optimum of a :func:`curve`: ``{"n", "m" (continuous), "var_ratio", "rho", "index"}``.

    Primal: argmin of ``var_primal`` (Eq. 12); dual: argmax of ``rho_dual`` (Eq. 14).
    """
    _choice("objective", objective, OBJECTIVES)
    i = int(np.argmin(c["var_primal"]) if objective == "primal" else np.argmax(c["rho_dual"]))
    m = c["m_primal"][i] if objective == "primal" else c["m_dual"][i]
    return {
        "n": int(c["n"][i]),
        "m": float(m),
        "index": i,
        "var_ratio": float(var_ensemble(c["var_k"][i], m) / c["var_s"]),
        "rho": float(rho(c["beta_s"], c["beta"][i], m)),
    }


def strong_duality(c):
    """``True`` when the primal and dual optima of a curve are at the same width (``n_p = n_d``)."""
    return optimum(c, "primal")["n"] == optimum(c, "dual")["n"]


def alpha_scan(module, n_tilde, alphas, budget="params", ns=None):
    """Optimum as a function of alpha: dict of arrays ``alpha``, ``n``, ``m_primal``, ``m_dual``,
    ``rho`` (the dual efficiency at the optimum) and ``strong_duality``, each of shape ``(len(alphas),)``."""
    costs = _costs(module, n_tilde, budget, ns, 1)
    rows = []
    for a in alphas:
        c = _curve(costs, a)
        p, d = optimum(c, "primal"), optimum(c, "dual")
        rows.append((float(a), p["n"], p["m"], d["m"], d["rho"], p["n"] == d["n"]))
    cols = list(zip(*rows)) if rows else [()] * 6
    return {k: np.asarray(v) for k, v in zip(("alpha", "n", "m_primal", "m_dual", "rho", "strong_duality"), cols)}


# ---------------------------------------------------------------------------------------------
# Networks and Algorithm 2 step 6
# ---------------------------------------------------------------------------------------------


def default_module(arch, inputs=None, depth=None, classes=None, resolution=None):
    """The member module the paper uses for ``arch``: :class:`MLPDesign` for ``mlp``, the stage-1
    :class:`BottleneckDesign` (256 -> [n, n] -> 256) for the ResNeXts, at their input resolution."""
    _choice("arch", arch, tuple(cxm.ARCHS))
    if arch == "mlp":
        return MLPDesign(inputs, depth, outputs=1 if classes is None else classes)
    return BottleneckDesign(resolution=cxm.ARCHS[arch]["resolution"] if resolution is None else resolution)


def network_cost(
    arch,
    groups,
    width,
    budget="params",
    flops="2macs+acts",
    classes=None,
    resolution=None,
    mlp=None,
    stages=None,
    depth=None,
):
    """Params or FLOPs of the whole network ``groups x width d`` of ``arch`` (for ``mlp``: an
    ensemble of ``groups`` nets of width ``width``, as described by the :class:`MLPDesign` ``mlp``;
    ``stages``/``depth``: a scaled-down CIFAR ResNeXt, see :func:`cepaper.complexity.resnext_cifar`)."""
    _choice("budget", budget, BUDGETS)
    if arch == "mlp":
        return mlp.cost(width, budget, groups=groups)
    scaled = {k: v for k, v in (("stages", stages), ("depth", depth)) if v is not None}
    record = cxm.complexity(arch, (groups, width), classes=classes, resolution=resolution, **scaled)
    return float(record["params"] if budget == "params" else flops_of(record, flops))


def integer_m(m_exact, rounding="nearest", what="the budget"):
    """Algorithm 2 step 6: an integer ``m >= 1`` from a continuous one (``ROUNDINGS``)."""
    _choice("rounding", rounding, ROUNDINGS)
    m = {"nearest": np.floor(m_exact + 0.5), "floor": np.floor(m_exact), "ceil": np.ceil(m_exact)}[rounding]
    if not np.isfinite(m_exact) or m < 1:
        raise ValueError(
            f"budget: no integer m >= 1 meets {what} (continuous m = {m_exact:.3g}, rounding "
            f"{rounding!r}); use a larger baseline or a smaller n"
        )
    return int(m)


def network_m(arch, n, baseline_cost, budget="params", **kw):
    """Continuous ``m`` with ``network_cost(arch, m, n) == baseline_cost`` (costs are affine in m)."""
    c1, c2 = network_cost(arch, 1, n, budget, **kw), network_cost(arch, 2, n, budget, **kw)
    return (baseline_cost - (2 * c1 - c2)) / (c2 - c1)


def design(
    arch: str,
    baseline: str | int | tuple[int, int],
    objective: str = "primal",
    budget: str = "params",
    alpha: float | None = None,
    classes: int | None = None,
    resolution: int | None = None,
    rounding: str = "nearest",
    module: BottleneckDesign | MLPDesign | None = None,
    n: int | None = None,
    ns: Sequence[int] | None = None,
    with_curve: bool = False,
    mlp_inputs: int | None = None,
    mlp_depth: int | None = None,
    stages: Sequence[int] | None = None,
    depth: int | None = None,
) -> dict:
    """Algorithm 2: the optimal collegial ensemble ``m x n`` for a baseline.

    Args:
        arch: one of ``cepaper.complexity.ARCHS``.
        baseline: ``"CxDd"`` (or ``(C, d)``) for the conv archs (``C > 1``: the baseline is itself
            an ensemble of ``C`` members of width ``d``); for ``mlp`` the baseline width.
        objective: ``"primal"`` (Eq. 12: smoothest at equal cost) or ``"dual"`` (Eq. 14: cheapest
            at equal variance).
        budget: ``"params"`` (Eq. 8) or ``"flops"`` (Eq. 15).
        alpha: Eq. 9's alpha; ``None`` uses :func:`default_alpha`.
        rounding: integer ``m`` rule (``ROUNDINGS``); primal: the whole network's cost matches the
            baseline network's; dual: ``m_d(n)`` at the optimum.
        module: the member module (default :func:`default_module`).
        n: evaluate this width instead of the optimum (a model "on the curve").
        ns: widths searched (default ``1..n_tilde``).
        with_curve: add the whole curve (lists) under ``"curve"``.
        mlp_inputs, mlp_depth: the ``mlp`` baseline's input size and depth.
        stages, depth: stage outputs and blocks per stage of a scaled-down CIFAR ResNeXt (the
            whole-network costs of step 6); pass the matching ``module`` (its block widths).
    Returns:
        dict with ``n``, ``m``, ``m_exact``, ``m_curve``, ``config``, ``params``, ``baseline_params``,
        ``flops``, ``baseline_flops``, ``rho`` (of the budget, whole networks), ``rho_params``,
        ``rho_flops``, ``var_ratio`` (ensemble Var(K) over the baseline's, at the integer m),
        ``strong_duality``, ``alpha``, ``alpha_source``, and the conventions used.
    """
    _choice("arch", arch, tuple(cxm.ARCHS))
    _choice("objective", objective, OBJECTIVES)
    _choice("budget", budget, BUDGETS)
    if alpha is None:
        alpha, source = default_alpha(arch)
    else:
        alpha, source = positive_float("alpha", alpha), "given"
    if arch == "mlp":
        c_tilde, n_tilde = 1, positive_int("width", baseline)
        module = module or default_module("mlp", inputs=mlp_inputs, depth=mlp_depth, classes=classes)
        net_kw = dict(mlp=module)
    else:
        c_tilde, n_tilde = (
            cxm.parse_config(baseline)
            if isinstance(baseline, str)
            else (positive_int("groups", baseline[0]), positive_int("width_per_group", baseline[1]))
        )
        classes = cxm.ARCHS[arch].get("classes") if classes is None else positive_int("classes", classes)
        resolution = cxm.ARCHS[arch]["resolution"] if resolution is None else positive_int("resolution", resolution)
        module = module or default_module(arch, resolution=resolution)
        net_kw = dict(classes=classes, resolution=resolution, flops=module.flops, stages=stages, depth=depth)
    c = curve(module, n_tilde, alpha, budget, ns, m_tilde=c_tilde)
    opt = optimum(c, objective)
    if n is not None:
        n = positive_int("n", n)
        if n not in c["n"]:
            c_n = curve(module, n_tilde, alpha, budget, [n], m_tilde=c_tilde)
            i, c_at = 0, c_n
        else:
            i, c_at = int(np.flatnonzero(c["n"] == n)[0]), c
    else:
        n, i, c_at = opt["n"], opt["index"], c
    m_curve = float(c_at["m_primal"][i] if objective == "primal" else c_at["m_dual"][i])
    base = {b: network_cost(arch, c_tilde, n_tilde, b, **net_kw) for b in BUDGETS}
    if objective == "primal":
        m_exact = float(network_m(arch, n, base[budget], budget, **net_kw))
        m = integer_m(m_exact, rounding, f"the baseline's {budget}")
    else:
        m_exact = m_curve
        m = integer_m(m_exact, rounding, "the baseline's Var(K)")
    ens = {b: network_cost(arch, m, n, b, **net_kw) for b in BUDGETS}
    var_ratio = float(var_ensemble(c_at["var_k"][i], m) / c_at["var_s"])
    out = {
        "arch": arch,
        "baseline": cxm.format_config(c_tilde, n_tilde) if arch != "mlp" else n_tilde,
        "config": cxm.format_config(m, n) if arch != "mlp" else f"{m}x{n}",
        "objective": objective,
        "budget": budget,
        "n": int(n),
        "m": m,
        "m_exact": m_exact,
        "m_curve": m_curve,
        "n_optimum": opt["n"],
        "params": int(ens["params"]),
        "baseline_params": int(base["params"]),
        "flops": int(ens["flops"]),
        "baseline_flops": int(base["flops"]),
        "flops_convention": module.flops,
        "rho": base[budget] / ens[budget],
        "rho_params": base["params"] / ens["params"],
        "rho_flops": base["flops"] / ens["flops"],
        "rho_curve": float(rho(c_at["beta_s"], c_at["beta"][i], m_curve)),
        "var_ratio": var_ratio,
        "strong_duality": strong_duality(c),
        "alpha": float(alpha),
        "alpha_source": source,
        "rounding": rounding,
        "classes": classes,
        "resolution": resolution,
        "module": {"type": type(module).__name__, **asdict(module)},
    }
    if with_curve:
        out["curve"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in c.items()}
    return out


def default_alpha(arch="bottleneck"):
    """``(alpha, source)`` when the caller passes none: the paper's 1.60 for the ResNeXt block
    (Sec. 4.2), :data:`ALPHA_FIG3` for ``mlp`` (the paper states no alpha for fully connected nets;
    this one reproduces Fig. 3's optimum). Never read from a results store: a fitted alpha is passed
    by the caller, which says where it came from."""
    if arch == "mlp":
        return ALPHA_FIG3, (
            "reproduces the paper's Fig. 3 optimum (the primal_dual section); the paper states no alpha for MLPs"
        )
    return ALPHA_BOTTLENECK, "the paper's alpha (Sec. 4.2)"


def alpha_interval(optimum_of, alpha, lo, hi, tol=1e-3, grid=64):
    """The interval of alpha around ``alpha`` on which ``optimum_of(alpha)`` stays the same.

    Scans a log grid of ``grid`` points over ``[lo, hi]`` and bisects each edge to ``tol`` (relative).
    Assumes the set is an interval (one change on each side within the grid's resolution).

    Args:
        optimum_of: ``alpha -> hashable`` (e.g. the optimal ``(n, m)`` of a design).
        alpha: the fitted alpha, in ``[lo, hi]``.
    Returns:
        ``(a_lo, a_hi)``; an end equals ``lo`` or ``hi`` when the optimum never changes on that side.
    """
    if not 0 < lo <= alpha <= hi:
        raise ValueError(f"need 0 < lo <= alpha <= hi, got lo={lo}, alpha={alpha}, hi={hi}")
    ref = optimum_of(alpha)
    below = [a for a in np.geomspace(lo, alpha, grid // 2)[::-1][1:]]
    above = [a for a in np.geomspace(alpha, hi, grid // 2)[1:]]

    def edge(side):
        inside = alpha
        for a in side:
            if optimum_of(a) != ref:
                out = a
                while abs(out - inside) > tol * inside:
                    mid = math.sqrt(out * inside)
                    if optimum_of(mid) == ref:
                        inside = mid
                    else:
                        out = mid
                return inside
            inside = a
        return inside

    return float(edge(below)), float(edge(above))
