"""cepaper: the executable edition of *Collegial Ensembles* (Littwin et al., NeurIPS 2020).

The library, in the order of the paper:

* the empirical NTK and the ensemble NTK (Eq. 4): :func:`empirical_ntk`, :func:`member_ntk`,
  :func:`ensemble_ntk`; its Monte Carlo moments over draws (the NMK, Eq. 5; ``Var(K)``, Eq. 2):
  :func:`mc_moments`, :func:`mc_samples`; the infinite-width ReLU kernels: :func:`relu_ntk`,
  :func:`relu_nngp`;
* the models: :class:`CollegialMLP` (Eq. 3), the bottleneck blocks of Fig. 5, :func:`resnext`;
* Algorithm 1, alpha by Monte Carlo: :func:`measure_alpha`, :func:`fit_alpha`;
* Algorithm 2, the primal and the dual: :func:`design`, with the costs of :mod:`complexity`;
* any PyTorch module as a member: :func:`design_module`, :func:`fit_member_alpha`;
* data (:func:`load`) and training (:mod:`cepaper.training`).

The paper's sections (:mod:`cepaper.sections`) and the book's machinery (:mod:`cepaper.book`) build
on the library; the library never imports them. ``import cepaper`` is cheap: each name is loaded from
its module when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Each public name and the module that defines it: ``import cepaper`` loads none of them, the first use
#: of a name loads its module (torch only with the first name that needs it).
_API = {
    "CollegialMLP": "cepaper.models.mlp",
    "complexity": None,  # the module cepaper.complexity itself
    "design": "cepaper.search.networks",
    "design_module": "cepaper.search.any_module",
    "empirical_ntk": "cepaper.ntk",
    "ensemble_ntk": "cepaper.ntk",
    "fit_alpha": "cepaper.alpha.fit",
    "fit_member_alpha": "cepaper.alpha.any_member",
    "load": "cepaper.data",
    "mc_moments": "cepaper.montecarlo",
    "mc_samples": "cepaper.montecarlo",
    "measure_alpha": "cepaper.alpha.fit",
    "member_ntk": "cepaper.ntk",
    "relu_nngp": "cepaper.kernels",
    "relu_ntk": "cepaper.kernels",
    "resnext": "cepaper.models.resnext",
}

__all__ = [
    "CollegialMLP",
    "complexity",
    "design",
    "design_module",
    "empirical_ntk",
    "ensemble_ntk",
    "fit_alpha",
    "fit_member_alpha",
    "load",
    "mc_moments",
    "mc_samples",
    "measure_alpha",
    "member_ntk",
    "relu_nngp",
    "relu_ntk",
    "resnext",
]


def __getattr__(name: str):
    """A public name of :data:`_API`, its module imported on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'cepaper' has no attribute {name!r}")
    module = importlib.import_module(_API[name] or f"cepaper.{name}")
    value = module if _API[name] is None else getattr(module, name)
    globals()[name] = value  # later uses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the names as static analysis and IDEs see them
    from cepaper import complexity
    from cepaper.alpha.any_member import fit_member_alpha
    from cepaper.alpha.fit import fit_alpha, measure_alpha
    from cepaper.data import load
    from cepaper.kernels import relu_nngp, relu_ntk
    from cepaper.models.mlp import CollegialMLP
    from cepaper.models.resnext import resnext
    from cepaper.montecarlo import mc_moments, mc_samples
    from cepaper.ntk import empirical_ntk, ensemble_ntk, member_ntk
    from cepaper.search.any_module import design_module
    from cepaper.search.networks import design
