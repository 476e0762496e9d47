"""cepaper: the executable edition of *Collegial Ensembles* (Littwin et al., NeurIPS 2020)."""

__version__ = "0.1.0"
