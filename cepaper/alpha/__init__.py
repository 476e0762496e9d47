"""Algorithm 1 of the paper: alpha from Monte Carlo estimates of the NTK's variance.

* :mod:`~cepaper.alpha.sweeps`: the sweeps over widths (the bottleneck block, the MLP, any module);
* :mod:`~cepaper.alpha.fit`: the fit of ``log(Var(K)/E[K]^2 + 1) = alpha * sum 1/n_l`` and its interval;
* :mod:`~cepaper.alpha.any_member`: the fit on any PyTorch module as the member.

``cepaper.alpha.<name>`` reads a name from the module that defines it, importing it on first use.
"""

from __future__ import annotations

from cepaper._lazy import namespace

_HOMES = {
    "sweeps": "log_grid fan_ins ntk_sweep module_sweep custom_sweep",
    "fit": "HeavyTailWarning fit_alpha fitted_curve fit_sweep refit measure_alpha sweep_result",
    "any_member": "member_inputs fit_member_alpha",
}
__getattr__, __dir__, __all__ = namespace(__name__, _HOMES)
