"""Theorem 1 under its own assumptions: the exponents of ``n`` and of ``m``, apart, under declared readings.

Theorem 1 (Eq. 7) bounds the change of the ensemble NTK during training by ``O_p(1/(mn))``. Its
proof (Appendix F) assumes gradient flow on the L2 loss and an analytic activation, and it is a
first-order statement in ``1/n``; Fig. 9 trains ReLU networks with mini-batch SGD and pools single
models (an exponent of ``n``) with ensembles (an exponent of ``m``). Footnote 1 recalls the rigorous
single-model rate ``O_p(n^{-1/2})`` of [10], which gives ``O_p(n^{-1/2} m^{-1})`` for the ensemble.

This section trains a controlled grid of the paper's NTK-parameterized MLP (``L = 4`` hidden layers,
:func:`cepaper.sections.theorem1.run_one`) on an MNIST subset with parity targets, under each of the
declared :data:`READINGS`, and fits the two exponents separately:

* the exponent of ``n``: single models ``m = 1`` over ``widths``;
* the exponent of ``m``: ensembles of constant width ``n_m`` over ``ms``.

Only configurations in the perturbative regime enter a fit (:data:`PERTURBATIVE`): the mean over seeds
of the relative change ``|K_T - K_0| / |K_0|`` of the probe-mean entries must stay below
``max_rel_change``. Each exponent is judged against Theorem 1's ``-1`` and footnote 1's ``-0.5``
(``n``) or ``-1`` (``m``).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cepaper import data
from cepaper._checks import choices, positive_int
from cepaper.models.mlp import check_activation
from cepaper.sections import paper, theorem1
from cepaper.sections._shared import markdown, set_threads, show  # noqa: F401 (the notebook's)


@dataclass(frozen=True)
class Reading:
    """One reading of how Theorem 1 is to be tested: the optimizer, the activation, and why."""

    optimizer: str  # "gd": full batch, a small step (gradient flow); "sgd": mini-batches, as Fig. 9
    activation: str  # a key of cepaper.models.mlp.ACTIVATIONS
    why: str


#: The readings, declared before any number was read. ``gd-relu`` is primary: Eq. 7 is stated for
#: gradient flow (Appendix F trains by ``dTheta/dt = -grad L``), and ReLU is the network of Eq. 3 and of
#: every experiment of the paper; the other two change one assumption each.
READINGS = {
    "gd-relu": Reading(
        "gd", "relu", "gradient flow, as Theorem 1 is stated (Appendix F), on the ReLU network of Eq. 3"
    ),
    "sgd-relu": Reading("sgd", "relu", "mini-batch SGD, as Fig. 9 trains, at the same training time lr × steps"),
    "gd-gelu": Reading("gd", "gelu", "gradient flow with an analytic activation (GELU), as the proof assumes"),
}
PRIMARY = "gd-relu"

#: The entry a verdict reads, and why: the mean over all probe pairs has far less noise than one
#: entry (Fig. 9 plots one off-diagonal entry, which is shown beside it).
PRIMARY_ENTRY = "offdiag_mean"
ENTRIES = ("offdiag_mean", "offdiag")

#: The perturbative rule: a configuration enters a fit when the mean over seeds of its relative change
#: of the probe-mean kernel stays below this (Theorem 1 is the first order in 1/n of the change).
PERTURBATIVE = 0.2

#: The exponents each fit is judged against: Theorem 1 (Eq. 7) and footnote 1 (the rigorous rate of [10]).
TARGETS = {
    "n": {"Theorem 1": paper.THEOREM1_EXPONENT_MN, "footnote 1": paper.THEOREM1_RIGOROUS["n"]},
    "m": {"Theorem 1": paper.THEOREM1_EXPONENT_MN, "footnote 1": paper.THEOREM1_RIGOROUS["m"]},
}


def check_readings(readings):
    """Return ``readings`` as a list of declared names, or raise ``ValueError`` listing the declared ones."""
    readings = choices("readings", readings, tuple(READINGS))
    for r in readings:
        check_activation(READINGS[r].activation)
    return readings


def mnist(n_train, target="parity", root=None, dtype=torch.float64):
    """``(source, x, y)``: the first ``n_train`` MNIST training images, standardized and flattened
    ``(N, 784)``, with scalar targets ``(N,)`` (``parity``: +1 for even digits), in ``dtype``."""
    ds = data.load("mnist", "train", root=root, n=positive_int("n_train", n_train))
    return ds.source, data.inputs(ds, dtype=dtype), data.scalar_targets(ds.y, target, dtype=dtype)


def grid(widths, ms, n_m):
    """The runs: single models over ``widths`` (fit ``n``) and ensembles ``(m, n_m)`` over ``ms`` (fit
    ``m``). A DataFrame with columns ``fit, m, n`` (a configuration in both fits appears twice)."""
    widths = [positive_int("width", n) for n in widths]
    ms = [positive_int("m", m) for m in ms]
    n_m = positive_int("n_m", n_m)
    for name, values in (("widths", widths), ("ms", ms)):
        if len(set(values)) != len(values) or len(values) < 3:
            raise ValueError(f"{name} must hold at least 3 distinct values, got {values}")
    rows = [("n", 1, n) for n in widths] + [("m", m, n_m) for m in ms]
    return pd.DataFrame(rows, columns=["fit", "m", "n"])


def schedule(reading, steps, lr, n_train, batch_size):
    """``(epochs, batch_size)`` of ``reading`` at training time ``lr × steps``: full-batch GD takes
    ``steps`` epochs of one step; SGD takes the same number of steps of ``batch_size`` examples."""
    steps = positive_int("steps", steps)
    if READINGS[reading].optimizer == "gd":
        return steps, None
    batch_size = positive_int("batch_size", batch_size)
    per_epoch = -(-n_train // batch_size)
    if steps % per_epoch:
        raise ValueError(f"steps ({steps}) must be a multiple of the {per_epoch} SGD steps of one epoch")
    return steps // per_epoch, batch_size


def train(x, y, configs, seeds, readings, *, steps, lr, batch_size, cache=None, **train_kw):
    """Train every configuration under every reading; return ``{reading: [records]}``.

    ``train_kw`` (``depth, n_probe, record_every, dtype, device``) goes to
    :func:`cepaper.sections.theorem1.train_grid`; ``cache`` is a folder (one subfolder per reading).
    """
    out = {}
    for r in check_readings(readings):
        epochs, bs = schedule(r, steps, lr, len(x), batch_size)
        every = train_kw.get("record_every")
        kw = {**train_kw, "record_every": min(every, epochs) if every else None}
        out[r] = theorem1.train_grid(
            x,
            y,
            configs,
            seeds,
            cache=None if cache is None else f"{cache}/{r}",
            epochs=epochs,
            lr=lr,
            batch_size=bs,
            activation=READINGS[r].activation,
            **kw,
        )
    return out


def changes(records_by_reading):
    """:func:`cepaper.sections.theorem1.changes` of every reading, with a ``reading`` column."""
    frames = [theorem1.changes(recs).assign(reading=r) for r, recs in records_by_reading.items()]
    return pd.concat(frames, ignore_index=True)


def exponents(change, configs, max_rel_change=PERTURBATIVE, level=0.95):
    """The exponents of ``n`` and of ``m``, per reading and entry, on the perturbative configurations.

    A configuration enters when the mean over seeds of the relative change of the probe-mean kernel
    (``offdiag_mean``) is below ``max_rel_change``; the same configurations enter every entry's fit.
    Returns a DataFrame with columns ``reading, fit, entry, slope, lo, hi, points, used, excluded, note``;
    ``slope`` is NaN (and ``note`` says why) where fewer than 3 distinct values remain.
    """
    if not 0 < max_rel_change:
        raise ValueError(f"max_rel_change must be > 0, got {max_rel_change}")
    rows = []
    for reading, c in change.groupby("reading", sort=False):
        rel = c[c.entry == "offdiag_mean"].groupby(["m", "n"]).rel_change.mean()
        for fit, xcol in (("n", "n"), ("m", "m")):
            cfg = configs[configs.fit == fit]
            keys = list(zip(cfg.m, cfg.n))
            used = [k for k in keys if rel.get(k, np.inf) < max_rel_change]
            excluded = [k for k in keys if k not in used]
            for entry in ENTRIES:
                ce = c[(c.entry == entry) & c.set_index(["m", "n"]).index.isin(used)]
                row = dict(
                    reading=reading,
                    fit=fit,
                    entry=entry,
                    used=[int(k[1 if fit == "n" else 0]) for k in used],
                    excluded=[int(k[1 if fit == "n" else 0]) for k in excluded],
                )
                if ce[xcol].nunique() < 3:
                    rows.append(
                        row
                        | dict(
                            slope=np.nan,
                            lo=np.nan,
                            hi=np.nan,
                            points=len(ce),
                            note=f"only {ce[xcol].nunique()} values of {fit} below a relative change of "
                            f"{max_rel_change:g}: too few for a slope",
                        )
                    )
                    continue
                s = theorem1.loglog_slope(ce[xcol], ce["abs_change"], level)
                rows.append(row | {k: s[k] for k in ("slope", "lo", "hi", "points")} | dict(note=""))
    return pd.DataFrame(rows)


def train_and_save(
    run,
    n_train,
    target,
    data_root,
    widths,
    ms,
    n_m,
    seeds,
    readings,
    *,
    steps,
    lr,
    batch_size,
    max_rel_change,
    cache,
    depth,
    n_probe,
    device,
):
    """The page's grid, end to end: the first ``n_train`` MNIST images with ``target`` labels (:func:`mnist`, in
    float64), every configuration of :func:`grid` trained under every reading and seed (:func:`train`, resumed
    from ``cache``), their kernel changes (:func:`changes`) and the two exponents (:func:`exponents`), saved on
    ``run`` as ``runs`` and ``exponents``. Returns Markdown saying what trained."""
    source, x, y = mnist(n_train, target, data_root)
    configs = grid(widths, ms, n_m)
    records = train(
        x,
        y,
        configs,
        seeds,
        readings,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        cache=cache,
        depth=depth,
        n_probe=n_probe,
        device=device,
        dtype=torch.float64,
    )
    change = changes(records)
    fits = exponents(change, configs, max_rel_change)
    run.save("runs", {"source": source, "records": records, "change": change.to_dict("list")}, table=change)
    run.save("exponents", {"fits": fits.to_dict("list"), "configs": configs.to_dict("list"), "primary": PRIMARY})
    return markdown(
        f"{sum(map(len, records.values()))} runs on {source} ({len(x)} images): {len(readings)} readings, "
        f"seeds {seeds}, {steps} steps at lr {lr:g} (training time {steps * lr:g})."
    )


def load_frames(run):
    """``(change, fits, configs)``: the saved kernel changes, exponents and grid of ``run`` as DataFrames."""
    saved = run.load("exponents")
    return pd.DataFrame(run.load("runs")["change"]), pd.DataFrame(saved["fits"]), pd.DataFrame(saved["configs"])


def exponents_sentence(fits):
    """Markdown: how many readings bear out each exponent (probe mean), the exponent of ``n`` against Theorem
    1's -1 and footnote 1's -0.5, the exponent of ``m`` against -1 (:func:`summary`)."""
    return markdown(
        f"**Exponent of n** (probe mean): against Theorem 1's −1 it {summary(fits, 'n')}; against footnote 1's "
        f"−0.5 it {summary(fits, 'n', target='footnote 1')}. **Exponent of m**: against −1 it {summary(fits, 'm')}."
    )


def verdicts(fits):
    """Per fit row and target (:data:`TARGETS`): ``reproduced`` when the target lies in the interval,
    ``differs`` when it lies outside, ``cannot tell`` when the run cannot support a slope. Adds one
    column per target."""
    out = fits.copy()
    for name in ("Theorem 1", "footnote 1"):
        out[name] = [
            "cannot tell" if pd.isna(r.slope) else "reproduced" if r.lo <= TARGETS[r.fit][name] <= r.hi else "differs"
            for r in fits.itertuples()
        ]
    return out


def summary(fits, fit, entry=PRIMARY_ENTRY, target="Theorem 1"):
    """``"holds under k of K readings"`` for one exponent and target (readings that support a slope)."""
    v = verdicts(fits)
    v = v[(v.fit == fit) & (v.entry == entry)]
    told = v[v[target] != "cannot tell"]
    return f"holds under {int((told[target] == 'reproduced').sum())} of {len(told)} readings"


def table(fits):
    """The exponents as a table for people: one row per reading, exponent and entry."""
    v = verdicts(fits)
    entry = {"offdiag_mean": "mean over probe pairs", "offdiag": "one pair (Fig. 9)"}
    return pd.DataFrame(
        {
            "reading": [f"{r}{' (primary)' if r == PRIMARY else ''}" for r in v.reading],
            "exponent of": v.fit,
            "entry": [entry[e] for e in v.entry],
            "slope [95% interval]": [
                "—" if pd.isna(r.slope) else f"{r.slope:.2f} [{r.lo:.2f}, {r.hi:.2f}]" for r in v.itertuples()
            ],
            "values used": [", ".join(map(str, u)) for u in v.used],
            "left out (> 20% change)": [", ".join(map(str, u)) or "none" for u in v.excluded],
            "vs −1 (Theorem 1)": v["Theorem 1"],
            "vs footnote 1 (n: −0.5, m: −1)": v["footnote 1"],
        }
    )


def plot(change, fits, configs, entry=PRIMARY_ENTRY):
    """``|K_T - K_0|`` against ``n`` (single models) and ``m`` (width ``n_m``), one colour per reading,
    seed means with their fitted lines; the perturbative points filled, the others hollow."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    colors = dict(zip(READINGS, ("tab:blue", "tab:orange", "tab:green")))
    for ax, fit in zip(axes, ("n", "m")):
        for reading, c in change[change.entry == entry].groupby("reading", sort=False):
            f = fits[(fits.reading == reading) & (fits.fit == fit) & (fits.entry == entry)].iloc[0]
            cfg = configs[configs.fit == fit]
            q = c.merge(cfg[["m", "n"]], on=["m", "n"])
            means = q.groupby(fit).abs_change.mean()
            used = means[means.index.isin(f.used)]
            out = means[~means.index.isin(f.used)]
            ax.plot(used.index, used.values, "o", color=colors[reading], label=reading)
            ax.plot(out.index, out.values, "o", mfc="none", color=colors[reading])
            if not pd.isna(f.slope):
                xs = np.geomspace(min(f.used), max(f.used), 20)
                ax.plot(
                    xs,
                    np.exp(np.log(used.to_numpy(float)).mean())
                    * (xs / np.exp(np.log(used.index.to_numpy(float)).mean())) ** f.slope,
                    "-",
                    color=colors[reading],
                    lw=1,
                )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=f"{'width n (m = 1)' if fit == 'n' else 'multiplicity m'}",
            ylabel=r"$|K_T - K_0|$, mean over probe pairs",
        )
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
