"""Training: the spine every loop shares (``spine``) and the three loops, which differ: gradient descent
with NTK probes (``gd``, Theorem 1), batched-repetition Adam (``adam``, Sec. 4.1) and recipe SGD
(``sgd`` with ``recipes`` and ``grids``, Sec. 4.2)."""
