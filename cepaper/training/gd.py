"""Gradient descent on the L2 loss for a collegial ensemble trained as one batched model (Sec. 2).

The setting of Theorem 1: the ensemble output ``F_e = m^{-1/2} sum_j f_j`` (Eq. 4) is fit to
targets ``y`` with the L2 loss; all ``m`` members are one :class:`~cepaper.models.mlp.CollegialMLP`
and move together, every member driven by the shared residual (Appendix F, Eqs. 21-22). We use
the mean over a batch ``B``::

    L(Theta) = 1/(2|B|) sum_{i in B} (F_e(x_i) - y_i)^2,     Theta <- Theta - lr * grad L

(full batch: ``B`` is the whole training set and one epoch is one step). Along the way we record
the empirical ensemble NTK ``K_e(X_p, X_p)`` of Eq. 4 on a few probe inputs ``X_p``: at
initialization, every ``record_every`` epochs, and at the end.

A run with ``checkpoint=path`` writes its state there atomically every ``checkpoint_every``
epochs; calling :func:`train_gd` again with the same arguments (and data) resumes from it.
"""

import numpy as np
import torch
from tqdm import tqdm

from cepaper import files, runs
from cepaper._checks import positive_int


def l2_loss(out, y):
    """``1/(2N) sum_i (out_i - y_i)^2`` for ``out``, ``y`` of shape ``(N,)``."""
    return 0.5 * (out - y).pow(2).mean()


def check_lr(lr):
    """Return ``lr`` as a float, or raise ``ValueError`` unless it is a finite number >= 0."""
    if isinstance(lr, bool) or not (float(lr) >= 0 and np.isfinite(float(lr))):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    return float(lr)


def batches(n_examples, batch_size, seed, epoch):
    """Index batches of one epoch: all of ``range(n_examples)`` in order when ``batch_size`` is
    ``None`` or >= ``n_examples`` (full batch), else a permutation drawn from ``(seed, epoch)``
    cut into batches of ``batch_size`` (the last one may be smaller). A list of int64 arrays."""
    if batch_size is None or batch_size >= n_examples:
        return [np.arange(n_examples)]
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return [order[i : i + batch_size] for i in range(0, n_examples, batch_size)]


def gd_step(model, x, y, lr):
    """One gradient-descent step on ``l2_loss(model(x), y)``, in place; returns the loss before it."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = l2_loss(model(x), y)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)
    return loss.item()


@torch.no_grad()
def full_loss(model, x, y, chunk=8192):
    """``l2_loss`` of the model over all of ``(x, y)``, evaluated in chunks of ``chunk`` rows."""
    total = sum((model(x[i : i + chunk]) - y[i : i + chunk]).pow(2).sum().item() for i in range(0, len(y), chunk))
    return 0.5 * total / len(y)


def probe_ntk(model, probe):
    """Empirical ensemble NTK ``K_e(X_p, X_p)`` (Eq. 4) on probe inputs ``(P, D)``: ``(P, P)``."""
    from cepaper.ntk import empirical_ntk

    return empirical_ntk(model, probe)


def _record(history, model, x, y, probe, epoch, ntk_fn):
    history["epoch"].append(epoch)
    history["loss"].append(full_loss(model, x, y))
    if probe is not None:
        history["ntk"].append(ntk_fn(model, probe).detach().to("cpu", torch.float64))


def train_gd(
    model,
    x,
    y,
    *,
    epochs,
    lr,
    batch_size=None,
    probe=None,
    record_every=None,
    seed=0,
    checkpoint=None,
    checkpoint_every=1,
    ntk_fn=None,
    progress=False,
):
    """Train ``model`` in place by gradient descent on the L2 loss; record the probe NTK.

    Args:
        model: a scalar-output module, e.g. a ``CollegialMLP`` (all members train as one model).
        x: inputs ``(N, D)``; y: targets ``(N,)``. Moved to the model's device.
        epochs: number of passes over the data ``T`` (>= 1).
        lr: learning rate ``mu`` (>= 0; 0 leaves the model unchanged).
        batch_size: ``None`` for full-batch gradient descent, else the mini-batch size.
        probe: inputs ``(P, D)`` at which to record the NTK, or ``None`` to record only the loss.
        record_every: also record every this many epochs (``None``: only at 0 and ``T``).
        seed: seed of the mini-batch order (the initial weights are the caller's).
        checkpoint: path of a checkpoint file to write and resume from, or ``None``.
        checkpoint_every: epochs between checkpoints.
        ntk_fn: ``(model, probe) -> (P, P)``; default :func:`probe_ntk` (``cepaper.ntk``).
        progress: show a ``tqdm`` progress bar over epochs.
    Returns:
        ``{"epoch": [e_0 = 0, ..., T], "loss": [...], "ntk": (R, P, P) float64 tensor or None}``:
        the full-data loss and the probe NTK at the ``R`` recorded epochs.
    """
    epochs = positive_int("epochs", epochs)
    lr = check_lr(lr)
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size)
    every = positive_int("record_every", record_every) if record_every is not None else epochs
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"x must be (N, D) and y (N,); got {tuple(x.shape)} and {tuple(y.shape)}")
    ntk_fn = ntk_fn or probe_ntk
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    probe = probe.to(device) if probe is not None else None
    settings = (
        None
        if checkpoint is None
        else dict(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            record_every=record_every,
            data=files.digest(x, y, probe),
        )
    )

    start, history = 0, {"epoch": [], "loss": [], "ntk": []}
    if (
        checkpoint is not None
        and (state := runs.resume(checkpoint, settings, model=model, required=("epoch", "history"))) is not None
    ):
        start, history = state["epoch"], state["history"]
    if not history["epoch"]:
        _record(history, model, x, y, probe, 0, ntk_fn)
    for epoch in tqdm(
        range(start, epochs), initial=start, total=epochs, disable=not progress, desc="epochs", leave=False
    ):
        for idx in batches(len(y), batch_size, seed, epoch):
            if len(idx) == len(y):  # full batch, in order: no copy
                gd_step(model, x, y, lr)
            else:
                idx = torch.as_tensor(idx, device=device)
                gd_step(model, x[idx], y[idx], lr)
        done = epoch + 1
        if done % every == 0 or done == epochs:
            _record(history, model, x, y, probe, done, ntk_fn)
        if checkpoint is not None and (done % checkpoint_every == 0 or done == epochs):
            runs.save_checkpoint(
                checkpoint, {"epoch": done, "model": model.state_dict(), "history": history, "settings": settings}
            )
    out = dict(history)
    out["ntk"] = torch.stack(history["ntk"]) if history["ntk"] else None
    return out
