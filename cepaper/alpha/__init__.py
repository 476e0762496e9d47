"""Algorithm 1 of the paper: alpha from Monte Carlo estimates of the NTK's variance.

* :mod:`~cepaper.alpha.sweeps`: the sweeps over widths (the bottleneck block, the MLP, any module);
* :mod:`~cepaper.alpha.fit`: the fit of ``log(Var(K)/E[K]^2 + 1) = alpha * sum 1/n_l`` and its interval;
* :mod:`~cepaper.alpha.any_member`: the fit on any PyTorch module as the member.

``cepaper.alpha.<name>`` reads a name from the module that defines it, importing it on first use.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "sweeps": "log_grid fan_ins sum_inv_fan_in ntk_sweep module_sweep custom_sweep",
    "fit": "HeavyTailWarning fit_alpha fitted_curve fit_sweep refit measure_alpha sweep_result",
    "any_member": "member_inputs fit_member_alpha",
}
_API = {name: module for module, names in _HOMES.items() for name in names.split()}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'cepaper.alpha' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
