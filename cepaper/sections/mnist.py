"""Sec. 4.1, Fig. 4 (notebook ``05_mnist``): decoupling capacity and variance on MNIST.

The baseline is the fully connected net of Eq. 3 with ``L`` weight layers of width ``ñ`` (Sec. 4.1:
``L = 6``, ``ñ = 200``; 784 inputs, 10 classes). A collegial ensemble has ``m`` members of width
``n``, output ``F_e = m^{-1/2} sum_j f_j`` (Eq. 4). Models are picked on the two curves of Sec. 3 by
:func:`cepaper.search.networks.design` with the conventions that reproduce Fig. 3 (:class:`cepaper.search.MLPDesign`:
the ``L - 1`` hidden fan-ins enter the variance, ``beta`` counts weights)::

    Var(K_e)(m, n) ~ (exp(alpha (L - 1) / n) - 1) / m                    Eqs. 9, 11
    primal: m = the integer nearest to beta_s / beta(n) for whole networks   (Eq. 12, Alg. 2 step 6)
    dual:   m = the integer nearest to m_d(n) = Var(K_n) / Var(K_ñ)           (Eq. 14)

so along the primal the variance moves at a fixed parameter count ``beta_e``, and along the dual
``beta_e`` moves at the baseline's variance. The models are trained by
:func:`cepaper.training.adam.train_reps` (every repetition of one model as one batched model); this
module picks them (:func:`models`), tabulates the runs (:func:`runs_table`, :func:`summary`), tests
the paper's claims on them (:func:`correlations`, :func:`dual_changes`) and draws Fig. 4.
"""

from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cepaper import search, stats
from cepaper._checks import positive_float, positive_int
from cepaper.search import networks

CURVE_TITLES = {"primal": "primal: fixed $\\beta_e$", "dual": "dual: fixed Var$(K_e)$"}


def fig4(summary):
    """Fig. 4: mean test error (±1 SE over repetitions, blue, labelled with the multiplicity ``m``)
    against the member width ``n``, with the theoretical ``Var(K_e)`` (a, b) and the parameter count
    ``beta_e`` (c, d) on twin log axes, each shared by the primal and the dual panel so that the
    quantity a curve holds fixed looks flat against the one it moves.

    ``summary``: rows of :func:`cepaper.sections.mnist.summary` with ``curve, n, m, error, sem, var, params``.
    """
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 7.4))
    for i, (col, label, color) in enumerate(
        ((r"var", r"Var$(K_e)$ (Eq. 11, up to $C$)", "C3"), ("params", r"$\beta_e$ (parameters)", "C2"))
    ):
        lo, hi = summary[col].min(), summary[col].max()
        for j, curve in enumerate(("primal", "dual")):
            s = summary[summary.curve == curve].sort_values("n")
            ax = axes[i, j]
            ax.errorbar(s.n, 100 * s.error, yerr=100 * s["sem"], fmt="o-", color="C0", capsize=3, ms=4)
            ax.set_ylabel("test error (%)", color="C0")
            ax.set_xlabel("member width n")
            ax.set_title(f"({'abcd'[2 * i + j]}) {CURVE_TITLES[curve]}", fontsize=10)
            tw = ax.twinx()
            tw.plot(s.n, s[col], "s--", color=color, ms=4)
            tw.set_yscale("log")
            tw.set_ylim(lo / 1.6, hi * 1.6)
            tw.set_ylabel(label, color=color)
            ax.set_xscale("log")
            ax.set_xticks(list(s.n), [str(v) for v in s.n])
            ax.xaxis.set_minor_locator(plt.NullLocator())
            for n, m, e in zip(s.n, s.m, s.error):
                ax.annotate(f"m={m}", (n, 100 * e), textcoords="offset points", xytext=(3, 5), fontsize=7, color="C0")
    fig.tight_layout()
    return fig


def fig4_learning(curves, summary):
    """Test error (mean over repetitions) against the epoch for every model, one panel per curve,
    coloured by ``n``. ``curves``: :func:`cepaper.sections.mnist.learning_curves`; ``summary`` as :func:`fig4`."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, curve in zip(axes, ("primal", "dual")):
        s = summary[summary.curve == curve].sort_values("n")
        cmap = plt.get_cmap("viridis")
        for k, (m, n) in enumerate(zip(s.m, s.n)):
            c = curves[(curves.m == m) & (curves.n == n) & (curves.epoch > 0)]
            ax.plot(c.epoch, 100 * c.error, "o-", ms=3, color=cmap(k / max(1, len(s) - 1)), label=f"{m}x{n}")
        ax.set(xlabel="epoch", title=CURVE_TITLES[curve])
        ax.legend(fontsize=7, ncol=2, title="m x n", title_fontsize=7)
    axes[0].set_ylabel("test error (%)")
    fig.tight_layout()
    return fig


CURVES = search.OBJECTIVES  # ("primal", "dual")


def member(inputs=784, depth=6, classes=10, bias=False):
    """The member of Sec. 4.1 as a :class:`cepaper.search.MLPDesign` (``depth`` = weight layers ``L``)."""
    return search.MLPDesign(inputs, depth, outputs=classes, bias=bias)


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
        d = networks.design("mlp", n_tilde, curve, alpha=alpha, module=mlp, n=n)
        var_k = float(search.var_k(mlp.sum_inv_fan_in(n), alpha))
        rows.append(
            dict(
                curve=curve,
                n=n,
                m=d["m"],
                m_exact=d["m_exact"],
                params=d["params"],
                baseline_params=d["baseline_params"],
                params_ratio=d["params"] / d["baseline_params"],
                var_k=var_k,
                var=var_k / d["m"],
                var_ratio=d["var_ratio"],
                alpha=alpha,
            )
        )
    return rows


def models(primal_ns, dual_ns, n_tilde, alpha, mlp):
    """Both curves as one DataFrame (:func:`select` rows, primal first)."""
    return pd.DataFrame(select("primal", primal_ns, n_tilde, alpha, mlp) + select("dual", dual_ns, n_tilde, alpha, mlp))


def runs_table(records, configs):
    """One row per (curve, model, repetition): the ``configs`` columns, ``rep``, the final
    ``error`` (test error after the last epoch) and ``train_loss`` (mean over the last epoch)."""
    rows = []
    for rec in records:
        for r, errs, losses in zip(rec["reps"], rec["test_error"], rec["train_loss"]):
            rows.append(dict(m=rec["m"], n=rec["n"], rep=r, error=errs[-1], error_init=errs[0], train_loss=losses[-1]))
    return configs.merge(pd.DataFrame(rows), on=["m", "n"], how="left", validate="many_to_many")


def summary(runs):
    """Per (curve, model): the model columns, mean final test ``error``, its standard error ``sem``
    over repetitions, and ``reps``; sorted by curve and ``n``."""
    keys = [c for c in runs.columns if c not in ("rep", "error", "error_init", "train_loss")]
    g = runs.groupby(keys, sort=False)
    out = g.error.agg(error="mean", sd="std", reps="count").reset_index()
    out["sem"] = out.sd / np.sqrt(out.reps)
    return (
        out.drop(columns="sd")
        .sort_values(
            ["curve", "n"], key=lambda s: s.map({c: i for i, c in enumerate(CURVES)}) if s.name == "curve" else s
        )
        .reset_index(drop=True)
    )


def learning_curves(records):
    """Mean and standard error over repetitions of the test error at every epoch: one row per
    ``(m, n, epoch)``."""
    rows = []
    for rec in records:
        e = np.asarray(rec["test_error"], dtype=float)  # (R, T + 1)
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
    for measure, method, vv in (
        ("pearson", "pearson", v),
        ("pearson_log", "pearson", np.log(v)),
        ("spearman", "spearman", v),
    ):
        b = stats.bootstrap_correlation(samples, vv, method, n_boot, level, seed)
        p, exact = stats.permutation_pvalue(rows.error.to_numpy(), vv, method)
        out.append(
            dict(
                curve=curve,
                against=against,
                measure=measure,
                **b,
                p_value=p,
                p_exact=exact,
                models=len(v),
                reps=int(rows.reps.min()),
            )
        )
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


def checks(models, spread=2.0):
    """Sec. 4.1's design checked on a run: ``[(name, holds, detail)]`` for
    :meth:`cepaper.book.results.Run.check`. ``models``: :func:`models`. Checked: the primal models
    differ in ``Var(K_e)`` by more than a factor ``spread``, so the test error is read against
    variances that differ (Sec. 4.1: at a fixed budget the error follows the variance)."""
    var = models[models.curve == "primal"]["var"]
    return [
        (
            f"the primal models differ in Var(K_e) by more than a factor {spread:g}",
            bool(var.max() > spread * var.min()),
            f"Var(K_e) from {var.min():.3g} to {var.max():.3g} ({var.max() / var.min():.3g}×)",
        )
    ]
