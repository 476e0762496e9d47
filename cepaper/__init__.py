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
on the library; the library never imports them.
"""

from cepaper import complexity
from cepaper.data import load
from cepaper.generic import design_module
from cepaper.member_alpha import fit_member_alpha
from cepaper.fit import fit_alpha, measure_alpha
from cepaper.kernels import relu_nngp, relu_ntk
from cepaper.models.mlp import CollegialMLP
from cepaper.models.resnext import resnext
from cepaper.montecarlo import mc_moments, mc_samples
from cepaper.ntk import empirical_ntk, ensemble_ntk, member_ntk
from cepaper.ensembles import design

__version__ = "0.1.0"

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
