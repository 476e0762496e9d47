"""Training: the three loops, which differ (what they share, seeds, checkpoints and the run cache, is
:mod:`cepaper.runs`): gradient descent
with NTK probes (``gd``, Theorem 1), batched-repetition Adam (``adam``, Sec. 4.1) and recipe SGD
(``sgd`` with ``recipes`` and ``grids``, Sec. 4.2)."""
