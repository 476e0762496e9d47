"""Efficient ensembles (Sec. 3, App. C, Algorithm 2): primal and dual search over the width ``n``
(the integer ``m`` of whole networks and ``design`` are :mod:`cepaper.search.networks`).

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
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from cepaper import complexity as cxm
from cepaper._checks import choice, positive_float, positive_int

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


def sum_inv_fan_in(fans, layers="all"):
    """Eq. 9's ``s = sum_l 1 / fan-in_l`` over ``layers="all"`` or ``"hidden"`` (all but the first)."""
    fans = [positive_int("fan-in", f) for f in fans]
    choice("layers", layers, ("all", "hidden"))
    used = fans if layers == "all" else fans[1:]
    if not used:
        raise ValueError(f"no layer enters the sum: {len(fans)} fan-in(s) with layers={layers!r}")
    return float(sum(1.0 / f for f in used))


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
    choice("flops convention", convention, FLOPS_CONVENTIONS)
    total = 2 * record["macs"]
    if "acts" in convention:
        total += record["acts"]
    if "adds" in convention:
        total += record["adds"]
    return total


# ---------------------------------------------------------------------------------------------
# Modules: the member as a function of its width n
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class Member(Protocol):
    """What Algorithm 2 reads of the member as a function of its width ``n``, and all it reads:
    :class:`BottleneckDesign`, :class:`MLPDesign` and :class:`cepaper.search.any_module.FactoryModule` are each
    one (:func:`curve` takes any).

    ``budgets``: the budgets ``cost`` counts (:data:`BUDGETS`; a ``FactoryModule`` also ``"latency"``, and then
    ``latencies[(1, n)]`` holds each width's timing, its quartiles and IQR).
    """

    budgets: tuple[str, ...]

    def sum_inv_fan_in(self, n):
        """Eq. 9's ``sum_l 1/fan-in_l`` of the member of width ``n`` (array ``n`` -> array of its shape)."""

    def cost(self, n: int, budget: str = "params", groups: int = 1) -> float:
        """``beta`` (Eq. 8, Eq. 15): the ``budget`` of ``groups`` members of width ``n``."""


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
    budgets: ClassVar[tuple[str, ...]] = BUDGETS

    def __post_init__(self):
        positive_int("w_in", self.w_in), positive_int("w_out", self.w_out), positive_int("resolution", self.resolution)
        choice("fan_in_layers", self.fan_in_layers, ("all", "width"))
        choice("bn", self.bn, ("all", "member", "none"))
        choice("flops", self.flops, FLOPS_CONVENTIONS)

    def sum_inv_fan_in(self, n):
        """``sum_l 1/fan-in_l`` of a member of width ``n`` (array ``n`` -> array)."""
        n = np.asarray(n, dtype=float)
        k = 9.0 if self.kernel_area else 1.0
        return (1.0 / self.w_in if self.fan_in_layers == "all" else 0.0) + 1.0 / (k * n) + 1.0 / n

    def cost(self, n, budget="params", groups=1):
        """``beta``: params or FLOPs of the block with ``groups`` paths of width ``n``."""
        choice("budget", budget, BUDGETS)
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
    budgets: ClassVar[tuple[str, ...]] = BUDGETS

    def __post_init__(self):
        positive_int("inputs", self.inputs), positive_int("outputs", self.outputs)
        if positive_int("depth", self.depth) < 2:
            raise ValueError(f"depth must be >= 2 (an input and an output layer), got {self.depth}")
        choice("fan_in_layers", self.fan_in_layers, ("hidden", "all"))
        choice("flops", self.flops, FLOPS_CONVENTIONS)

    def sum_inv_fan_in(self, n):
        """``(L - 1) / n`` (+ ``1 / n_0`` with ``fan_in_layers="all"``), array ``n`` -> array."""
        n = np.asarray(n, dtype=float)
        return (self.depth - 1) / n + (1.0 / self.inputs if self.fan_in_layers == "all" else 0.0)

    def cost(self, n, budget="params", groups=1):
        """``beta``: params or FLOPs of ``groups`` (>= 1) nets of width ``n``."""
        choice("budget", budget, BUDGETS)
        cx = cxm.mlp_cx(cxm.cx_init(1), self.inputs, int(n), self.depth, self.outputs, self.bias)
        return float(groups * (cx["params"] if budget == "params" else flops_of(cx, self.flops)))


# ---------------------------------------------------------------------------------------------
# Curves and optima (Algorithm 2 steps 2-5)
# ---------------------------------------------------------------------------------------------


def curve(module: Member, n_tilde, alpha, budget="params", ns=None, m_tilde=1):
    """Primal and dual curves of ``module`` (a :class:`Member`) over the widths ``ns`` (default ``1..n_tilde``),
    under one of its ``budgets``.

    The baseline is ``m_tilde`` members of width ``n_tilde`` (``m_tilde = 1``: a single model).
    Returns a dict of arrays of shape ``(len(ns),)``: ``n``, ``sum_inv_fan_in``, ``var_k``,
    ``beta`` (cost of one member), ``m_primal`` (Eq. 12), ``var_primal`` (Eq. 11 at ``m_primal``:
    the primal objective), ``var_ratio_primal`` (the same over the baseline's variance),
    ``m_dual`` (Eq. 14), ``rho_dual`` (Eq. 8 at ``m_dual``: the dual objective); and the scalars
    ``beta_s``, ``var_s``, ``n_tilde``, ``m_tilde``, ``alpha``, ``budget``. Under ``"latency"`` also
    ``beta_iqr``, ``beta_q25`` and ``beta_q75``: the IQR and quartiles of each member's timing (``beta`` is
    the median).
    """
    return _curve(_costs(module, n_tilde, budget, ns, m_tilde), alpha)


def _costs(module, n_tilde, budget, ns, m_tilde):
    """The alpha-free part of a curve: widths, costs and sums of inverse fan-ins."""
    n_tilde, m_tilde = positive_int("n_tilde", n_tilde), positive_int("m_tilde", m_tilde)
    choice("budget", budget, module.budgets)
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
    if budget == "latency":  # measured, not counted: each width's timing has a spread, kept with its median
        costs |= {f"beta_{k}": np.array([module.latencies[(1, int(n))][k] for n in ns]) for k in ("iqr", "q25", "q75")}
    return costs


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
    choice("objective", objective, OBJECTIVES)
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
