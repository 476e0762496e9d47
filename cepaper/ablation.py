"""Sec. 4.1, Fig. 4: decoupling capacity and variance on MNIST.

The baseline is the fully connected net of Eq. 3 with ``L`` weight layers of width ``ñ`` (Sec. 4.1:
``L = 6``, ``ñ = 200``; 784 inputs, 10 classes). A collegial ensemble has ``m`` members of width
``n``, output ``F_e = m^{-1/2} sum_j f_j`` (Eq. 4). Models are picked on the two curves of Sec. 3 by
:func:`cepaper.search.design` with the conventions that reproduce Fig. 3 (:class:`cepaper.search.MLP`:
the ``L - 1`` hidden fan-ins enter the variance, ``beta`` counts weights)::

    Var(K_e)(m, n) ~ (exp(alpha (L - 1) / n) - 1) / m                    Eqs. 9, 11
    primal: m = the integer nearest to beta_s / beta(n) for whole networks   (Eq. 12, Alg. 2 step 6)
    dual:   m = the integer nearest to m_d(n) = Var(K_n) / Var(K_ñ)           (Eq. 14)

so along the primal the variance moves at a fixed parameter count ``beta_e``, and along the dual
``beta_e`` moves at the baseline's variance.

Training (:func:`train`): Adam on the cross-entropy of the ensemble's logits. The ``R`` repetitions
of one ``(m, n)`` are one :class:`~cepaper.models.mlp.CollegialMLP` of ``R m`` members with ``C``
outputs each; repetition ``r`` owns members ``r m .. (r + 1) m - 1``, drawn as
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
from statistics import NormalDist
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cepaper import results, search, stats
from cepaper._checks import nonneg_int, positive_float, positive_int
from cepaper.models.mlp import CollegialMLP
from cepaper.train import batches, digest, resume, save_checkpoint

CURVES = search.OBJECTIVES  # ("primal", "dual")


# ---------------------------------------------------------------------------------------------
# Models on the primal and dual curves
# ---------------------------------------------------------------------------------------------

def member(inputs=784, depth=6, classes=10, bias=False):
    """The member of Sec. 4.1 as a :class:`cepaper.search.MLP` (``depth`` = weight layers ``L``)."""
    return search.MLP(inputs, depth, outputs=classes, bias=bias)


def select(curve, ns, n_tilde, alpha, mlp):
    """Models of one curve (``"primal"`` or ``"dual"``) at the widths ``ns``, one dict per width.

    Each dict: ``curve, n, m, m_exact`` (the continuous m that Algorithm 2 rounds), ``params``
    (``beta_e`` of the ensemble), ``baseline_params``, ``params_ratio``, ``var_k`` (Eq. 9 for one
    member), ``var`` (Eq. 11, ``var_k / m``), ``var_ratio`` (over the baseline's), ``alpha``.
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {', '.join(CURVES)}, got {curve!r}")
    ns = [positive_int("n", n) for n in ns]
    if not ns:
        raise ValueError(f"{curve}_ns must name at least one width, got []")
    alpha = positive_float("alpha", alpha)
    rows = []
    for n in ns:
        d = search.design("mlp", n_tilde, curve, alpha=alpha, module=mlp, n=n)
        var_k = float(search.var_k(mlp.sum_inv_fan_in(n), alpha))
        rows.append(dict(curve=curve, n=n, m=d["m"], m_exact=d["m_exact"], params=d["params"],
                         baseline_params=d["baseline_params"], params_ratio=d["params"] / d["baseline_params"],
                         var_k=var_k, var=var_k / d["m"], var_ratio=d["var_ratio"], alpha=alpha))
    return rows


def models(primal_ns, dual_ns, n_tilde, alpha, mlp):
    """Both curves as one DataFrame (:func:`select` rows, primal first)."""
    return pd.DataFrame(select("primal", primal_ns, n_tilde, alpha, mlp) + select("dual", dual_ns, n_tilde, alpha, mlp))


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
    return int(np.random.SeedSequence([seed, m, n, rep]).generate_state(1)[0])


def order_seed(seed, rep):
    """Seed of the mini-batch order of repetition ``rep`` (shared by all models: paired runs)."""
    _check_seed(seed, rep)
    return int(np.random.SeedSequence([seed, rep]).generate_state(1)[0])


def build(n_in, n, m, seeds, depth=6, classes=10, bias=False, dtype=torch.float32, device="cpu"):
    """``len(seeds)`` ensembles ``(m, n)`` as one :class:`CollegialMLP` of ``len(seeds) * m`` members.

    Block ``r`` (members ``r m .. (r + 1) m - 1``) holds the weights that
    ``CollegialMLP(n_in, n, m, depth=depth - 1, outputs=classes, generator=G(seeds[r]))`` draws.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("reps must name at least one repetition, got []")
    m = positive_int("m", m)
    model = CollegialMLP(n_in, n, m=len(seeds) * m, depth=positive_int("depth", depth) - 1, bias=bias,
                         outputs=classes, generator=torch.Generator(device=device), dtype=dtype, device=device)
    with torch.no_grad():  # every block redrawn from its own stream, layer by layer (as reset_parameters)
        for r, s in enumerate(seeds):
            gen = torch.Generator(device=device).manual_seed(s)
            for p in model.parameters():
                p[r * m:(r + 1) * m].normal_(generator=gen)
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
        wrong = wrong + (ensemble_logits(model, x[i:i + chunk], m).argmax(-1) != y[i:i + chunk]).sum(1)
    return wrong.to("cpu", torch.float64) / len(y)


def train(x, y, x_test, y_test, m, n, reps, *, depth=6, classes=10, epochs, lr, batch_size, seed=0, bias=False,
          device="cpu", dtype=torch.float32, checkpoint=None, checkpoint_every=1, progress=False,
          eval_chunk=1000):
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
        raise ValueError(f"x, x_test must be (N, D) and y, y_test (N,); got {tuple(x.shape)}, {tuple(y.shape)}, "
                         f"{tuple(x_test.shape)}, {tuple(y_test.shape)}")
    classes = positive_int("classes", classes)
    if min(y.min(), y_test.min()) < 0 or max(y.max(), y_test.max()) >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1} (classes = {classes})")
    started = time.perf_counter()
    model = build(x.shape[1], n, m, [init_seed(seed, m, n, r) for r in reps], depth, classes, bias, dtype, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, x_test = x.to(device=device, dtype=dtype), x_test.to(device=device, dtype=dtype)
    y, y_test = y.to(device), y_test.to(device)
    settings = None if checkpoint is None else dict(
        m=m, n=n, reps=reps, depth=depth, classes=classes, epochs=epochs, lr=lr, batch_size=batch_size,
        seed=seed, bias=bias, dtype=str(dtype), data=digest(x, y, x_test, y_test))
    start, hist = 0, {"test_error": [error_rates(model, m, x_test, y_test, eval_chunk)], "train_loss": []}
    if checkpoint is not None and Path(checkpoint).exists():
        start, hist = resume(checkpoint, model, settings, opt)
    R = len(reps)
    for epoch in tqdm(range(start, epochs), initial=start, total=epochs, disable=not progress,
                      desc=f"m={m} n={n}", leave=False):
        order = np.stack([np.concatenate(batches(len(y), batch_size, order_seed(seed, r), epoch)) for r in reps])
        order = torch.as_tensor(order, device=device)
        loss_sum = torch.zeros(R, dtype=torch.float64, device=device)
        for i in range(0, len(y), batch_size):
            idx = order[:, i:i + batch_size]                                   # (R, B)
            logits = ensemble_logits(model, x[idx], m)                         # (R, B, C)
            per = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none").view(R, -1)
            opt.zero_grad(set_to_none=True)
            per.mean(1).sum().backward()
            opt.step()
            loss_sum += per.detach().sum(1).double()
        hist["train_loss"].append((loss_sum / len(y)).cpu())
        hist["test_error"].append(error_rates(model, m, x_test, y_test, eval_chunk))
        if checkpoint is not None and (epoch + 1) % checkpoint_every == 0:
            save_checkpoint(checkpoint, {"epoch": epoch + 1, "model": model.state_dict(),
                                         "optimizer": opt.state_dict(), "history": hist, "settings": settings})
    return {"m": m, "n": n, "reps": reps, "epoch": list(range(epochs + 1)),
            "test_error": torch.stack(hist["test_error"], 1).tolist(),
            "train_loss": torch.stack(hist["train_loss"], 1).tolist(),
            "wall_s": time.perf_counter() - started}


def run_models(x, y, x_test, y_test, configs, reps, *, cache=None, progress=False, **train_kw):
    """Train every distinct ``(m, n)`` of ``configs`` (columns ``m``, ``n``): one :func:`train` each.

    ``cache``: folder of finished models (``<key>.json``) and checkpoints (``<key>.pt``), keyed by
    :func:`cepaper.results.source_key` of the settings, the data and the training code; an
    interrupted run resumes. ``progress``: a bar over models (``train_kw`` may ask one over epochs).
    Returns one record per model (see :func:`train`), sorted by ``(m, n)``.
    """
    pairs = sorted({(int(m), int(n)) for m, n in zip(configs["m"], configs["n"])})
    reps = [int(r) for r in reps]
    data = None if cache is None else digest(x, y, x_test, y_test)
    records = []
    for m, n in tqdm(pairs, disable=not progress, desc="models"):
        settings = dict(m=m, n=n, reps=reps, data=data, **{k: str(v) if k in ("device", "dtype") else v
                                                          for k, v in train_kw.items() if k != "checkpoint_every"})
        records.append(results.cached_record(
            cache, settings, ("cepaper.models.mlp", "cepaper.train", __name__),
            lambda ckpt: train(x, y, x_test, y_test, m, n, reps, checkpoint=ckpt, **train_kw)))
    return records


# ---------------------------------------------------------------------------------------------
# Tables and statistics (from records and the model table)
# ---------------------------------------------------------------------------------------------

def runs_table(records, configs):
    """One row per (curve, model, repetition): the ``configs`` columns, ``rep``, the final
    ``error`` (test error after the last epoch) and ``train_loss`` (mean over the last epoch)."""
    rows = []
    for rec in records:
        for r, errs, losses in zip(rec["reps"], rec["test_error"], rec["train_loss"]):
            rows.append(dict(m=rec["m"], n=rec["n"], rep=r, error=errs[-1], error_init=errs[0],
                             train_loss=losses[-1]))
    return configs.merge(pd.DataFrame(rows), on=["m", "n"], how="left", validate="many_to_many")


def summary(runs):
    """Per (curve, model): the model columns, mean final test ``error``, its standard error ``sem``
    over repetitions, and ``reps``; sorted by curve and ``n``."""
    keys = [c for c in runs.columns if c not in ("rep", "error", "error_init", "train_loss")]
    g = runs.groupby(keys, sort=False)
    out = g.error.agg(error="mean", sd="std", reps="count").reset_index()
    out["sem"] = out.sd / np.sqrt(out.reps)
    return out.drop(columns="sd").sort_values(["curve", "n"], key=lambda s: s.map(
        {c: i for i, c in enumerate(CURVES)}) if s.name == "curve" else s).reset_index(drop=True)


def learning_curves(records):
    """Mean and standard error over repetitions of the test error at every epoch: one row per
    ``(m, n, epoch)``."""
    rows = []
    for rec in records:
        e = np.asarray(rec["test_error"], dtype=float)                          # (R, T + 1)
        sem = e.std(0, ddof=1) / np.sqrt(len(e)) if len(e) > 1 else np.full(e.shape[1], np.nan)
        rows += [dict(m=rec["m"], n=rec["n"], epoch=t, error=e[:, t].mean(), sem=sem[t]) for t in rec["epoch"]]
    return pd.DataFrame(rows)


def _errors(runs, curve):
    """The final errors of each model of ``curve`` (list of arrays) and the model rows, by ``n``."""
    c = runs[runs.curve == curve]
    ns = sorted(c.n.unique())
    rows = summary(c).set_index("n").loc[ns].reset_index()
    return [c[c.n == n].error.to_numpy() for n in ns], rows


def correlations(runs, curve="primal", against="var", n_boot=2000, level=0.95, seed=0):
    """Correlation of the mean test error with a model column (``var``, ``params``) along a curve.

    One row per measure: Pearson with ``against``, Pearson with ``log(against)``, Spearman. Each has
    a percentile-bootstrap interval over repetitions (:func:`cepaper.stats.bootstrap_correlation`)
    and a permutation p-value over the models (:func:`cepaper.stats.permutation_pvalue`; exact for
    up to 8 models). Returns a DataFrame with ``curve, against, measure, value, lo, hi, level,
    n_boot, p_value, p_exact, models, reps``.
    """
    samples, rows = _errors(runs, curve)
    v = rows[against].to_numpy(dtype=float)
    if len(v) < 3:
        raise ValueError(f"a correlation along the {curve} needs at least 3 models, got {len(v)}")
    out = []
    for measure, method, vv in (("pearson", "pearson", v), ("pearson_log", "pearson", np.log(v)),
                                ("spearman", "spearman", v)):
        b = stats.bootstrap_correlation(samples, vv, method, n_boot, level, seed)
        p, exact = stats.permutation_pvalue(rows.error.to_numpy(), vv, method)
        out.append(dict(curve=curve, against=against, measure=measure, **b, p_value=p, p_exact=exact,
                        models=len(v), reps=int(rows.reps.min())))
    return pd.DataFrame(out)


def dual_changes(runs, n_tilde, level=0.95):
    """Along the dual: each model's mean error minus the baseline's (``n = ñ``, ``m = 1``), its
    standard error (independent repetitions) and a normal ``level`` interval. One row per model."""
    _, rows = _errors(runs, "dual")
    base = rows[(rows.n == n_tilde) & (rows.m == 1)]
    if base.empty:
        raise ValueError(f"dual_ns must contain the baseline width n_tilde = {n_tilde} (m = 1) to compare against")
    b = base.iloc[0]
    z = NormalDist().inv_cdf((1 + level) / 2)
    diff = rows.error - b.error
    se = np.sqrt(rows["sem"] ** 2 + b["sem"] ** 2)
    return rows.assign(change=diff, change_se=se, lo=diff - z * se, hi=diff + z * se)
