"""Algorithm 2 of the paper: the primal and the dual, from the variance of the ensemble NTK.

* :mod:`~cepaper.search.equations`: Eqs. 8-14 (``var_k``, ``rho``, ``m_primal``, ``m_dual``), the
  efficiency curves of the bottleneck block and the MLP, their optimum and alpha's interval;
* :mod:`~cepaper.search.networks`: whole networks (ResNeXt, the MLP), integer ``m`` and :func:`design`;
* :mod:`~cepaper.search.any_module`: any PyTorch module as the member (:func:`design_module`);
* :mod:`~cepaper.search.factories`: members built by a user's factory or torchvision.

``cepaper.search.<name>`` reads a name from the module that defines it, importing that module on first
use (so that ``cepaper.search.equations`` needs no torch).
"""

from __future__ import annotations

from cepaper._lazy import namespace

#: The public names of Algorithm 2 and the module of this package that defines each.
_HOMES = {
    "equations": (
        "OBJECTIVES BUDGETS ROUNDINGS FLOPS_CONVENTIONS ALPHA_FIG3 ALPHA_BOTTLENECK sum_inv_fan_in var_k "
        "var_ensemble rho m_primal m_dual flops_of Member BottleneckDesign MLPDesign curve optimum strong_duality "
        "alpha_scan alpha_interval"
    ),
    "networks": "default_module network_cost integer_m network_m design default_alpha",
    "any_module": "flop_count latency FactoryModule Multiple network_module module_m design_module",
    "factories": "build torchvision_factory load_factory member_fan_ins check_members param_count",
}
__getattr__, __dir__, __all__ = namespace(__name__, _HOMES)
