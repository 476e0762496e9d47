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

import numpy as np
import pandas as pd

from cepaper import search, stats
from cepaper._checks import choice, positive_float, positive_int
from cepaper.search import networks
from cepaper.sections import paper
from cepaper.sections._mnist_plots import fig4, fig4_learning  # noqa: F401 (the notebook's)
from cepaper.sections._shared import markdown, set_threads, show  # noqa: F401 (the notebook's)

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
    choice("curve", curve, CURVES)
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
    over repetitions, and ``reps``; sorted by curve and ``n``. ``runs``: :func:`runs_table` or its saved rows."""
    runs = pd.DataFrame(runs)
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


# ------------------------------------------------------------------------------------ the notebook's steps


def alpha_of(alpha):
    """``(alpha, source)``: ``alpha`` as given, or (``None``) the alpha that reproduces Fig. 3's optimum."""
    from cepaper.sections import primal_dual

    return primal_dual.fig3_alpha() if alpha is None else (float(alpha), "given as a parameter")


#: MNIST's training and test sets (the paper's Fig. 4 uses all of both).
SIZES = {"train": 60000, "test": 10000}


def images(split, n=None):
    """How many images of MNIST's ``split`` a run with ``n_train``/``n_test`` = ``n`` uses (``None``: all)."""
    return n or SIZES[split]


def setup_table(profile, depth, n_tilde, n_train, n_test, epochs, reps, lr, batch_size):
    """Rows for the top of the page: Sec. 4.1's set-up (``paper.FIG4``) beside this run's."""
    p4 = paper.FIG4
    return [
        dict(
            run="paper (Sec. 4.1)",
            L=p4["depth"],
            n_tilde=p4["width"],
            train_images=SIZES["train"],
            test_images=SIZES["test"],
            epochs=p4["epochs"],
            repetitions=p4["repetitions"],
            optimizer=p4["optimizer"],
            lr="not given",
            batch="not given",
        ),
        dict(
            run=f"this run ({profile})",
            L=depth,
            n_tilde=n_tilde,
            train_images=images("train", n_train),
            test_images=images("test", n_test),
            epochs=epochs,
            repetitions=reps,
            optimizer="Adam",
            lr=lr,
            batch=batch_size,
        ),
    ]


def scale_sentence(profile, alpha, alpha_source):
    """Markdown: the alpha used and where it comes from, and what scale this run is (evidence or not)."""
    scale = {
        "paper": "",
        "cpu-evidence": f" **This is the CPU-evidence scale** (profile `{profile}`): the paper's baseline "
        "(L = 6 weight layers, ñ = 200), all of MNIST, Adam and the paper's widths, with fewer epochs "
        "and repetitions than the paper's 70 and 100, as the table says.",
    }.get(
        profile,
        f" **This is a CPU-scale run** (profile `{profile}`): a narrower baseline, a subset of MNIST, "
        "few epochs and repetitions, as the table says. Its numbers test the pipeline and show the "
        "trends at this scale; they are not evidence for the paper's claims.",
    )
    return markdown(f"**α = {alpha:.4g}**: {alpha_source}.{scale}")


def save_models(run, primal_ns, dual_ns, n_tilde, alpha, alpha_source, depth, bias):
    """:func:`models` of the L-layer MLP member, saved as ``models``; returns what the page shows of them."""
    configs = models(primal_ns, dual_ns, n_tilde, alpha, member(inputs=784, depth=depth, classes=10, bias=bias))
    rows = configs.to_dict("records")
    run.save("models", {"rows": rows, "alpha": alpha, "alpha_source": alpha_source}, table=configs)
    return configs[["curve", "n", "m", "m_exact", "params", "params_ratio", "var", "var_ratio"]]


def train(run, data_root, n_train, n_test, reps, cache, **train_kw):
    """Train every saved model ``reps`` times on the first ``n_train``/``n_test`` MNIST images with Adam
    (:func:`cepaper.training.adam.train_reps_grid`, ``train_kw``: ``depth, epochs, lr, batch_size, seed, bias,
    device, checkpoint_every``); save ``runs`` and ``learning_curves``. Returns a sentence on the runs."""
    import torch

    from cepaper import data
    from cepaper.training import adam

    configs = pd.DataFrame(run.load("models")["rows"])
    train_set = data.load("mnist", "train", root=data_root, n=n_train)
    test_set = data.load("mnist", "test", root=data_root, n=n_test)
    x, y = data.inputs(train_set), torch.as_tensor(train_set.y)
    x_test, y_test = data.inputs(test_set), torch.as_tensor(test_set.y)
    records = adam.train_reps_grid(
        x, y, x_test, y_test, configs, range(reps), cache=cache, progress=True, classes=10, **train_kw
    )
    runs = runs_table(records, configs)
    wall = {f"{r['m']}x{r['n']}": r["wall_s"] for r in records}
    run.save("runs", {"source": train_set.source, "rows": runs.to_dict("records"), "wall_s": wall}, table=runs)
    run.save("learning_curves", {"rows": learning_curves(records).to_dict("records")})
    return markdown(
        f"{len(records)} models × {reps} repetitions on {len(x)} training and {len(x_test)} test images "
        f"of {train_set.source}; training took {sum(r['wall_s'] for r in records):.1f} s in all "
        f"(models found finished in the checkpoint folder count with their original time)."
    )


def save_correlations(run, n_tilde, n_boot, level, seed):
    """:func:`correlations` on both curves and :func:`dual_changes`, saved as ``correlations`` and
    ``dual_changes``."""
    runs = pd.DataFrame(run.load("runs")["rows"])
    corr = pd.concat(
        [
            correlations(runs, "primal", "var", n_boot, level, seed),
            correlations(runs, "dual", "params", n_boot, level, seed),
        ],
        ignore_index=True,
    )
    changes = dual_changes(runs, n_tilde, level)
    run.save("correlations", {"rows": corr.to_dict("records")}, table=corr)
    run.save("dual_changes", {"rows": changes.to_dict("records")}, table=changes)


def correlation_page(run, level, reps):
    """What the page shows of the saved correlations and dual changes: both tables, and the sentence on the
    primal (error against Var) and the dual (a larger β_e does not improve the error), with the power."""
    from cepaper.book import pages

    corr = pd.DataFrame(run.load("correlations")["rows"])
    changes = pd.DataFrame(run.load("dual_changes")["rows"])
    sem = summary(pd.DataFrame(run.load("runs")["rows"]))["sem"].median()
    sp = corr.set_index(["curve", "measure"])

    def r(curve, measure):
        row = sp.loc[(curve, measure)]
        return f"{row['value']:.2f} [{row['lo']:.2f}, {row['hi']:.2f}]"

    n_models = int(sp.loc[("primal", "spearman"), "models"])
    worse, better = changes[changes.lo > 0], changes[changes.hi < 0]
    better_larger = better[better.params_ratio > 1]
    verdict = (
        "here no dual model with more parameters is better than the baseline beyond its interval (which is "
        "no evidence of *equal* errors)."
        if better_larger.empty
        else "**here some dual models with more parameters improve on the baseline.**"
    )
    sentence = (
        f"**Primal:** Spearman r_s(error, Var) = {r('primal', 'spearman')}, Pearson with log Var = "
        f"{r('primal', 'pearson_log')} ({level:.0%} bootstrap intervals, {n_models} models). "
        f"**Dual:** Spearman r_s(error, β_e) = {r('dual', 'spearman')}. Compared with the "
        f"baseline, {len(worse)} dual model(s) are worse and {len(better)} better beyond their {level:.0%} interval, "
        f"{len(better_larger)} of them with more parameters than the baseline "
        f"(largest β_e: {changes.params_ratio.max():.2f}× the baseline's, error change "
        f"{100 * changes.loc[changes.params_ratio.idxmax(), 'change']:+.2f} points). The paper's claim for the dual is "
        f"that a larger β_e does not improve the error; {verdict} **Power:** with {reps} repetitions the median "
        f"standard error of a model's mean error is {100 * sem:.3f} points, so an error difference between two "
        f"models of {100 * 2.8 * sem * 2**0.5:.3f} points is detected with 80% power at the 5% level."
    )
    return [
        pages.show(
            corr[["curve", "against", "measure", "value", "lo", "hi", "p_value", "p_exact", "models", "reps"]].replace(
                {"against": AGAINST, "measure": MEASURES}
            ),
            3,
            headers={"against": "correlated with", "value": "coefficient"},
        ),
        pages.show(
            percent(changes[["n", "m", "params_ratio", "var_ratio", "error", "change", "change_se", "lo", "hi"]]),
            {"error": 2, "change": 2, "change_se": 2, "lo": 2, "hi": 2},
            headers={
                "error": "test error (%)",
                "change": "change of the test error (points)",
                "change_se": "its SE (points)",
                "lo": "lower end (points)",
                "hi": "upper end (points)",
            },
        ),
        markdown(sentence),
    ]


#: Fig. 4's statistics, the primary first, fixed before the numbers were read: the paper claims a
#: monotone association ("highly correlated", "does not improve") and states no linear law, and Var(K_e)
#: and beta_e span orders of magnitude, where one point (n = 2) dominates a Pearson correlation;
#: Spearman's rank correlation is invariant to both. Pearson on raw and on log values are shown beside it.
STATISTICS = {
    "spearman": "Spearman's rank correlation: a monotone association, as the paper words it",
    "pearson": "Pearson's correlation of the raw values",
    "pearson_log": "Pearson's correlation of the logarithms (Var(K_e), β_e span orders of magnitude)",
}
PRIMARY = "spearman"
#: The page's words for the correlations' code names (the results keep the code names).
AGAINST = {"var": "Var(K_e)", "params": "β_e"}
_WORDS = {"pearson": "Pearson", "pearson_log": "Pearson, log scale", "spearman": "Spearman"}
MEASURES = {k: f"{v} (primary)" if k == PRIMARY else v for k, v in _WORDS.items()}

#: The columns of a table that are test errors or their differences, as fractions in the results.
ERROR_COLUMNS = ("error", "sem", "change", "change_se", "lo", "hi")


def percent(table):
    """``table`` with its test errors (:data:`ERROR_COLUMNS`, fractions in the results) in percent, the
    unit of Fig. 4 and of the paper, so that a table and a figure never show one quantity in two units."""
    out = table.copy()
    cols = [c for c in ERROR_COLUMNS if c in out.columns]
    out[cols] = 100 * out[cols]
    return out


def error_table(summary_):
    """The page's table of Fig. 4's points (:func:`summary`): each model's test error and its SE in percent."""
    from cepaper.book import pages

    return pages.show(
        percent(summary_[["curve", "n", "m", "params_ratio", "var_ratio", "error", "sem", "reps"]]),
        {"params_ratio": 3, "var_ratio": 3, "error": 2, "sem": 2},
        headers={"error": "test error (%)", "sem": "SE (points)"},
    )


def check(run, reps):
    """Stop the run unless every m is the nearest integer on its curve, the primal models spend the baseline's
    parameters (to half a member), every repetition learned and repetitions differ; record :func:`checks`."""
    models_ = pd.DataFrame(run.load("models")["rows"])
    runs = pd.DataFrame(run.load("runs")["rows"])
    assert ((models_.m - models_.m_exact).abs() <= 0.5 + 1e-9).all(), "m is the nearest integer on its curve"
    primal = models_[models_.curve == "primal"]
    assert ((primal.params - primal.baseline_params).abs() <= 0.5 * primal.params / primal.m + 1e-6).all()
    assert (runs.error < runs.error_init).all() and (runs.error < 0.9).all(), "every repetition must learn"
    assert runs.groupby(["m", "n"]).error.nunique().min() > 1 or reps == 1, "repetitions are independent runs"
    for name, holds, detail in checks(models_):
        run.check(name, holds, detail)
