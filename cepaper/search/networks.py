"""Algorithm 2 on whole networks (Sec. 3, App. C): the optimal collegial ensemble ``m x n`` for a baseline.

The curves and optima over the member width ``n`` are :mod:`cepaper.search`; here the member's
multiplicity becomes an integer ``m`` for the whole network (Algorithm 2, step 6: :func:`integer_m`,
:func:`network_m`), counted exactly by :mod:`cepaper.complexity` (:func:`network_cost`), and
:func:`design` reports the optimum of a baseline ``CxDd`` under a parameter or FLOP budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from cepaper import complexity as cxm
from cepaper._checks import choice, positive_float, positive_int
from cepaper.search.equations import (
    ALPHA_BOTTLENECK,
    ALPHA_FIG3,
    BUDGETS,
    OBJECTIVES,
    ROUNDINGS,
    BottleneckDesign,
    MLPDesign,
    curve,
    flops_of,
    optimum,
    rho,
    strong_duality,
    var_ensemble,
)


def default_module(arch, inputs=None, depth=None, classes=None, resolution=None):
    """The member module the paper uses for ``arch``: :class:`MLPDesign` for ``mlp``, the stage-1
    :class:`BottleneckDesign` (256 -> [n, n] -> 256) for the ResNeXts, at their input resolution."""
    choice("arch", arch, tuple(cxm.ARCHS))
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
    choice("budget", budget, BUDGETS)
    if arch == "mlp":
        return mlp.cost(width, budget, groups=groups)
    scaled = {k: v for k, v in (("stages", stages), ("depth", depth)) if v is not None}
    record = cxm.complexity(arch, (groups, width), classes=classes, resolution=resolution, **scaled)
    return float(record["params"] if budget == "params" else flops_of(record, flops))


def integer_m(m_exact, rounding="nearest", what="the budget"):
    """Algorithm 2 step 6: an integer ``m >= 1`` from a continuous one (``ROUNDINGS``)."""
    choice("rounding", rounding, ROUNDINGS)
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
    choice("arch", arch, tuple(cxm.ARCHS))
    choice("objective", objective, OBJECTIVES)
    choice("budget", budget, BUDGETS)
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
