"""Adam on the cross-entropy for the ensembles of Sec. 4.1: ``R`` repetitions of one ``(m, n)`` as one model.

The ``R`` repetitions of one ``(m, n)`` are one :class:`~cepaper.models.mlp.CollegialMLP` of ``R m``
members with ``C`` outputs each; repetition ``r`` owns members ``r m .. (r + 1) m - 1``, drawn as
``CollegialMLP(m=m, generator=Generator().manual_seed(init_seed(seed, m, n, r)))`` would draw them,
and reads its own mini-batches (order seeded by ``(seed, r)``, the same for every model). The loss
is the sum over repetitions of each one's mean cross-entropy, so each repetition's weights get
exactly the gradient of their own run; Adam acts elementwise, so the batched run *is* ``R``
independent runs (tested).

Parameterization: the members are NTK-parameterized (``z = s W h``, ``W ~ N(0, 1)``,
``s = sqrt(2 / fan-in)``, readout ``sqrt(1 / n)``), the networks whose ``Var(K)`` Eq. 9 describes.
Adam's step is invariant to the scale of a gradient, so Adam with step ``lr`` on ``W`` is Adam on the
standard (He-initialized) weights ``W' = s W`` with a per-layer step ``lr * s`` (and ``eps / s``):
every weight moves by about ``lr`` *relative to its initial scale*, whatever the width of its layer.
"""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cepaper import files, runs
from cepaper._checks import nonneg_int, positive_float, positive_int
from cepaper.models.mlp import CollegialMLP
from cepaper.training.gd import batches

# ---------------------------------------------------------------------------------------------
# Training R repetitions of one (m, n) as one batched model
# ---------------------------------------------------------------------------------------------


def _check_seed(seed, rep):
    nonneg_int("seed", seed)
    if isinstance(rep, bool) or not isinstance(rep, (int, np.integer)) or rep < 0:
        raise ValueError(f"reps must be integers >= 0, got {rep!r}")


def init_seed(seed, m, n, rep):
    """Seed of the initial weights of repetition ``rep`` of the ensemble ``(m, n)``."""
    _check_seed(seed, rep)
    return runs.derive_seed(seed, m, n, rep)


def order_seed(seed, rep):
    """Seed of the mini-batch order of repetition ``rep`` (shared by all models: paired runs)."""
    _check_seed(seed, rep)
    return runs.derive_seed(seed, rep)


def build(n_in, n, m, seeds, depth=6, classes=10, bias=False, dtype=torch.float32, device="cpu"):
    """``len(seeds)`` ensembles ``(m, n)`` as one :class:`CollegialMLP` of ``len(seeds) * m`` members.

    Block ``r`` (members ``r m .. (r + 1) m - 1``) holds the weights that
    ``CollegialMLP(n_in, n, m, depth=depth - 1, outputs=classes, generator=G(seeds[r]))`` draws.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("reps must name at least one repetition, got []")
    m = positive_int("m", m)
    model = CollegialMLP(
        n_in,
        n,
        m=len(seeds) * m,
        depth=positive_int("depth", depth) - 1,
        bias=bias,
        outputs=classes,
        generator=torch.Generator(device=device),
        dtype=dtype,
        device=device,
    )
    with torch.no_grad():  # every block redrawn from its own stream, layer by layer (as reset_parameters)
        for r, s in enumerate(seeds):
            gen = torch.Generator(device=device).manual_seed(s)
            for p in model.parameters():
                p[r * m : (r + 1) * m].normal_(generator=gen)
    return model


def ensemble_logits(model, x, m):
    """``F_e`` (Eq. 4) of each block of ``m`` members: ``x`` ``(N, D)`` or ``(R, N, D)`` -> ``(R, N, C)``."""
    out = model.members(x)
    return out.view(-1, m, *out.shape[1:]).sum(1) / math.sqrt(m)


@torch.no_grad()
def error_rates(model, m, x, y, chunk=1000):
    """Error rate of every repetition on ``(x, y)``: ``(R,)`` float64, evaluated in chunks of rows."""
    wrong = 0
    for i in range(0, len(y), chunk):
        wrong = wrong + (ensemble_logits(model, x[i : i + chunk], m).argmax(-1) != y[i : i + chunk]).sum(1)
    return wrong.to("cpu", torch.float64) / len(y)


def train_reps(
    x,
    y,
    x_test,
    y_test,
    m,
    n,
    reps,
    *,
    depth=6,
    classes=10,
    epochs,
    lr,
    batch_size,
    seed=0,
    bias=False,
    device="cpu",
    dtype=torch.float32,
    checkpoint=None,
    checkpoint_every=1,
    progress=False,
    eval_chunk=1000,
):
    """Train repetitions ``reps`` of the ensemble ``(m, n)`` with Adam, as one batched model.

    Args:
        x, y: training inputs ``(N, D)`` and labels ``(N,)`` (int64 in ``0..classes - 1``).
        x_test, y_test: test inputs and labels.
        m, n: multiplicity and member width. reps: repetition indices (they fix the seeds).
        depth: weight layers ``L`` of a member; classes: outputs ``C`` of a member.
        epochs, lr, batch_size: Adam's schedule (constant step ``lr``, mini-batches per repetition).
        checkpoint: a path to save the state to every ``checkpoint_every`` epochs, and to resume from.
    Returns:
        ``{"m", "n", "reps", "epoch": [0..T], "test_error": (R, T + 1), "train_loss": (R, T)``
        (mean cross-entropy over each epoch's batches), ``"wall_s"}`` (seconds of this call), lists.
    """
    m, n, epochs = positive_int("m", m), positive_int("n", n), positive_int("epochs", epochs)
    lr, batch_size = positive_float("lr", lr), positive_int("batch_size", batch_size)
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    reps = [int(r) for r in reps]
    if x.ndim != 2 or y.shape != (len(x),) or x_test.ndim != 2 or y_test.shape != (len(x_test),):
        raise ValueError(
            f"x, x_test must be (N, D) and y, y_test (N,); got {tuple(x.shape)}, {tuple(y.shape)}, "
            f"{tuple(x_test.shape)}, {tuple(y_test.shape)}"
        )
    classes = positive_int("classes", classes)
    if min(y.min(), y_test.min()) < 0 or max(y.max(), y_test.max()) >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1} (classes = {classes})")
    started = time.perf_counter()
    model = build(x.shape[1], n, m, [init_seed(seed, m, n, r) for r in reps], depth, classes, bias, dtype, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, x_test = x.to(device=device, dtype=dtype), x_test.to(device=device, dtype=dtype)
    y, y_test = y.to(device), y_test.to(device)
    settings = (
        None
        if checkpoint is None
        else dict(
            m=m,
            n=n,
            reps=reps,
            depth=depth,
            classes=classes,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            bias=bias,
            dtype=str(dtype),
            data=files.digest(x, y, x_test, y_test),
        )
    )
    start, hist = 0, {"test_error": [error_rates(model, m, x_test, y_test, eval_chunk)], "train_loss": []}
    if (
        checkpoint is not None
        and (state := runs.resume(checkpoint, settings, model=model, optimizer=opt, required=("epoch", "history")))
        is not None
    ):
        start, hist = state["epoch"], state["history"]
    R = len(reps)
    for epoch in tqdm(
        range(start, epochs), initial=start, total=epochs, disable=not progress, desc=f"m={m} n={n}", leave=False
    ):
        order = np.stack([np.concatenate(batches(len(y), batch_size, order_seed(seed, r), epoch)) for r in reps])
        order = torch.as_tensor(order, device=device)
        loss_sum = torch.zeros(R, dtype=torch.float64, device=device)
        for i in range(0, len(y), batch_size):
            idx = order[:, i : i + batch_size]  # (R, B)
            logits = ensemble_logits(model, x[idx], m)  # (R, B, C)
            per = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none").view(R, -1)
            opt.zero_grad(set_to_none=True)
            per.mean(1).sum().backward()
            opt.step()
            loss_sum += per.detach().sum(1).double()
        hist["train_loss"].append((loss_sum / len(y)).cpu())
        hist["test_error"].append(error_rates(model, m, x_test, y_test, eval_chunk))
        if checkpoint is not None and (epoch + 1) % checkpoint_every == 0:
            runs.save_checkpoint(
                checkpoint,
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": hist,
                    "settings": settings,
                },
            )
    return {
        "m": m,
        "n": n,
        "reps": reps,
        "epoch": list(range(epochs + 1)),
        "test_error": torch.stack(hist["test_error"], 1).tolist(),
        "train_loss": torch.stack(hist["train_loss"], 1).tolist(),
        "wall_s": time.perf_counter() - started,
    }


def train_reps_grid(x, y, x_test, y_test, configs, reps, *, cache=None, progress=False, **train_kw):
    """Train every distinct ``(m, n)`` of ``configs`` (columns ``m``, ``n``): one :func:`train_reps` each.

    ``cache``: folder of finished models and checkpoints (:func:`cepaper.runs.run_grid`),
    keyed by the settings, the data and the training code; an interrupted run resumes. ``progress``:
    a bar over models (``train_kw`` may ask one over epochs). Returns one record per model (see
    :func:`train_reps`), sorted by ``(m, n)``.
    """
    pairs = sorted({(int(m), int(n)) for m, n in zip(configs["m"], configs["n"])})
    reps = [int(r) for r in reps]
    data = None if cache is None else files.digest(x, y, x_test, y_test)
    options = {k: str(v) if k in ("device", "dtype") else v for k, v in train_kw.items() if k != "checkpoint_every"}
    jobs = [dict(m=m, n=n, reps=reps, data=data, **options) for m, n in pairs]
    return runs.run_grid(
        jobs,
        lambda job, ckpt: train_reps(x, y, x_test, y_test, job["m"], job["n"], reps, checkpoint=ckpt, **train_kw),
        cache=cache,
        modules=(__name__,),  # and all it imports
        progress=progress,
        desc="models",
    )
