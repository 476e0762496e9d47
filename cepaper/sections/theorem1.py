"""Theorem 1 (Eq. 7) and Fig. 9: during training the ensemble NTK moves by ``O_p(1/(mn))``.

Collegial ensembles of ``m`` NTK-parameterized ReLU MLPs of constant width ``n`` and depth ``L``
(hidden layers; Fig. 9 uses ``L = 4``) are trained on MNIST with the L2 loss
(:func:`cepaper.training.gd.train_gd`). For probe inputs ``x_a, x_b`` we compare the ensemble NTK at
initialization ``K_0`` with the one after ``T`` epochs ``K_T``:

    |Delta K| = |K_T(x_a, x_b) - K_0(x_a, x_b)|   (off-diagonal entry; also the diagonal x_a, x_a)

and fit the slope of ``log |Delta K|`` against ``log(mn)``: Theorem 1 says ``-1``; the paper's
footnote 1 notes that the rigorous single-model rate ``O_p(n^{-1/2})`` of its reference [10]
gives ``O_p(n^{-1/2} m^{-1})`` for the ensemble.

The three panels of Fig. 9 (Appendix E), over a list of ``d``:

* (a) single models ``m = 1`` over widths ``n``;
* (b) ensembles ``m = n = d`` against single models ``n = d^2``: equal ``mn``;
* (c) ensembles of constant width ``n_c = 100`` whose ``m`` matches the parameter count of the
  single model ``n = d^2`` (``m = round(beta(d^2) / beta(n_c))``, at least 1).

Every distinct ``(m, n)`` of the three panels is trained once per seed (:func:`train_grid`); finished
runs are kept as JSON files in a cache folder, so an interrupted grid resumes where it stopped.
"""

import math

import numpy as np
import pandas as pd
import torch

from cepaper import complexity, files, runs
from cepaper._checks import positive_int
from cepaper.models.mlp import CollegialMLP
from cepaper.stats import t_quantile
from cepaper.training.gd import train_gd

#: Kernel entries reported, as (row, column) of the probe kernel: ``x_a = probe[0]``, ``x_b = probe[1]``.
ENTRIES = {"offdiag": (0, 1), "diag": (0, 0)}


def mlp_params(n, depth, n_in=784):
    """Parameters ``beta(n)`` of one member: ``n_in n + (L - 1) n^2 + n`` (``L`` hidden layers)."""
    return complexity.mlp(n_in, n, depth + 1)["params"]


def grid(ds, widths_a=(), n_c=100, depth=4, n_in=784):
    """The runs of Fig. 9 as a DataFrame with columns ``panel, role, d, m, n, mn, params``.

    Args:
        ds: the values ``d`` of panels (b) and (c) (single models of width ``d^2``).
        widths_a: widths ``n`` of the single models of panel (a); ``()`` uses ``d^2``.
        n_c: the constant member width of panel (c).
    Returns:
        one row per (panel, curve, point); ``role`` is ``baseline`` (``m = 1``) or ``ensemble``.
        Panel (c) has an ensemble for ``d`` only where an integer ``m >= 1`` matches the baseline's
        parameters, i.e. ``beta(d^2) >= beta(n_c)`` (``d^2 >= n_c``); a smaller ``d`` keeps its
        baseline point alone, so no unmatched pair enters a slope.
    """
    ds = [positive_int("d", d) for d in ds]
    widths_a = [positive_int("width", n) for n in widths_a] or [d * d for d in ds]
    if not widths_a:
        raise ValueError("ds and widths_a are both empty: the grid needs at least one d or width")
    n_c = positive_int("n_c", n_c)
    rows = [("a", "baseline", None, 1, n) for n in widths_a]
    for d in ds:
        rows += [("b", "baseline", d, 1, d * d), ("b", "ensemble", d, d, d)]
        m_exact = mlp_params(d * d, depth, n_in) / mlp_params(n_c, depth, n_in)
        rows += [("c", "baseline", d, 1, d * d)]
        if m_exact >= 1:
            rows += [("c", "ensemble", d, round(m_exact), n_c)]
    df = pd.DataFrame(rows, columns=["panel", "role", "d", "m", "n"])
    df["mn"] = df.m * df.n
    df["params"] = [m * mlp_params(n, depth, n_in) for m, n in zip(df.m, df.n)]
    return df


def init_seed(seed, m, n):
    """Seed of the initial weights of run ``(m, n, seed)``: distinct streams for distinct runs."""
    return runs.derive_seed(seed, m, n)


def run_one(
    x,
    y,
    m,
    n,
    seed,
    *,
    depth=4,
    epochs,
    lr,
    batch_size=None,
    activation="relu",
    n_probe=2,
    record_every=None,
    device="cpu",
    dtype=torch.float32,
    checkpoint=None,
    checkpoint_every=10,
    progress=False,
):
    """Train one ensemble ``(m, n)`` from seed ``seed``; return its record (a JSON-able dict).

    ``activation`` is the members' ``phi`` (:data:`cepaper.models.mlp.ACTIVATIONS`; Fig. 9: ReLU).
    The probe inputs are the first ``n_probe`` training inputs. The record holds ``m, n, seed``,
    the recorded ``epoch`` list, ``loss`` there, and ``ntk``: ``(R, P, P)`` nested lists.
    With ``checkpoint`` (a path), the run saves its state every ``checkpoint_every`` epochs and
    resumes from it (:func:`cepaper.training.gd.train_gd`).
    """
    m, n = positive_int("m", m), positive_int("n", n)
    if not 2 <= positive_int("n_probe", n_probe) <= len(x):
        raise ValueError(f"n_probe must be in [2, {len(x)}] (an off-diagonal entry needs two inputs), got {n_probe}")
    gen = torch.Generator().manual_seed(init_seed(seed, m, n))
    model = CollegialMLP(
        x.shape[1], n, m=m, depth=depth, generator=gen, dtype=dtype, device=device, activation=activation
    )
    x, y = x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)
    hist = train_gd(
        model,
        x,
        y,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        probe=x[:n_probe],
        record_every=record_every,
        seed=seed,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        progress=progress,
    )
    return {"m": m, "n": n, "seed": seed, "epoch": hist["epoch"], "loss": hist["loss"], "ntk": hist["ntk"].tolist()}


def train_grid(x, y, configs, seeds, *, cache=None, progress=False, **train_kw):
    """Train every distinct ``(m, n)`` of ``configs`` once per seed; return one record per run.

    Args:
        x, y: training inputs ``(N, D)`` and targets ``(N,)``.
        configs: a DataFrame with columns ``m`` and ``n`` (e.g. :func:`grid`).
        seeds: the seeds (each gives new initial weights and mini-batch order).
        cache: folder of finished runs (``<key>.json``) and checkpoints (``<key>.pt``), or ``None``.
        train_kw: ``depth, epochs, lr, batch_size, activation, n_probe, record_every, device, dtype,
            checkpoint_every`` of :func:`run_one`.
    Returns:
        a list of run records (see :func:`run_one`), in the order ``(m, n)`` then seed.
    """
    pairs = sorted({(int(m), int(n)) for m, n in zip(configs["m"], configs["n"])})
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed, got []")
    data = None if cache is None else files.digest(x, y)
    options = {k: str(v) if k in ("device", "dtype") else v for k, v in train_kw.items()}
    jobs = [dict(m=m, n=n, seed=s, data=data, **options) for m, n in pairs for s in seeds]
    return runs.run_grid(
        jobs,
        lambda job, ckpt: run_one(x, y, job["m"], job["n"], job["seed"], checkpoint=ckpt, **train_kw),
        cache=cache,
        modules=(__name__,),  # and all it imports
        progress=progress,
        desc="theorem1 runs",
    )


def _entry_values(ntk, entry):
    """``(|K_t - K_0|, |K_0|)`` of one entry along the recorded epochs: ``ntk`` is ``(R, P, P)``.

    ``entry`` is a key of ``ENTRIES`` or ``offdiag_mean`` / ``diag_mean``: the mean over the
    ``P (P - 1) / 2`` off-diagonal (or ``P`` diagonal) probe entries of ``|K_t - K_0|`` and of ``|K_0|``.
    Returns two arrays ``(R,)``.
    """
    delta = np.abs(ntk - ntk[:1])
    if entry in ENTRIES:
        i, j = ENTRIES[entry]
        return delta[:, i, j], np.abs(ntk[0, i, j]) * np.ones(len(ntk))
    p = ntk.shape[1]
    rows, cols = np.triu_indices(p, 1) if entry == "offdiag_mean" else np.diag_indices(p)
    return delta[:, rows, cols].mean(1), np.abs(ntk[0, rows, cols]).mean() * np.ones(len(ntk))


#: Every entry :func:`changes` reports: the chosen probe entries, then probe averages.
ALL_ENTRIES = tuple(ENTRIES) + ("offdiag_mean", "diag_mean")


def changes(records, entries=ALL_ENTRIES):
    """Per run and entry: ``K_0``, ``K_T``-side change ``|K_T - K_0|`` and ``|K_T - K_0| / |K_0|``.

    For the ``*_mean`` entries ``k0`` is the mean ``|K_0|`` over the probe entries and
    ``rel_change`` the ratio of the two means. ``T`` is the last recorded epoch.
    Returns a DataFrame with columns ``m, n, mn, seed, entry, k0, abs_change, rel_change, loss0, lossT``.
    """
    rows = []
    for r in records:
        ntk = np.asarray(r["ntk"], dtype=float)
        for name in entries:
            delta, k0 = _entry_values(ntk, name)
            rows.append(
                dict(
                    m=r["m"],
                    n=r["n"],
                    mn=r["m"] * r["n"],
                    seed=r["seed"],
                    entry=name,
                    k0=k0[-1],
                    abs_change=delta[-1],
                    rel_change=delta[-1] / k0[-1],
                    loss0=r["loss"][0],
                    lossT=r["loss"][-1],
                )
            )
    return pd.DataFrame(rows)


def trajectories(records, entries=ALL_ENTRIES):
    """Per run, entry and recorded epoch ``t``: ``|K_t - K_0|``; columns ``m, n, mn, seed, entry,
    epoch, abs_change``."""
    rows = []
    for r in records:
        ntk = np.asarray(r["ntk"], dtype=float)
        for name in entries:
            delta, _ = _entry_values(ntk, name)
            rows += [
                dict(m=r["m"], n=r["n"], mn=r["m"] * r["n"], seed=r["seed"], entry=name, epoch=e, abs_change=d)
                for e, d in zip(r["epoch"], delta)
            ]
    return pd.DataFrame(rows)


def panel_table(configs, change, entry="offdiag", value="abs_change"):
    """Fig. 9 points: ``configs`` rows joined with the mean, std and count of ``value`` over seeds
    for ``entry``; columns ``panel, role, d, m, n, mn, params, mean, std, sem, seeds``."""
    c = change[change.entry == entry]
    stats = c.groupby(["m", "n"])[value].agg(["mean", "std", "count"]).reset_index()
    out = configs.merge(stats, on=["m", "n"], how="left").rename(columns={"count": "seeds"})
    out["sem"] = out["std"] / np.sqrt(out["seeds"])
    return out


def loglog_slope(x, y, level=0.95):
    """Least-squares slope of ``log y`` on ``log x`` with a ``level`` confidence interval.

    Args:
        x, y: positive arrays ``(K,)``, ``K >= 3`` (e.g. ``mn`` and ``|Delta K|`` of every run).
    Returns:
        ``{"slope", "lo", "hi", "intercept", "points"}``; the interval is ``slope +- t s.e.``
        with Student's t on ``K - 2`` degrees of freedom (log base cancels in the slope).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"x and y must be 1-d of equal length >= 3, got shapes {x.shape} and {y.shape}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("x and y must be > 0 for a log-log fit")
    if np.ptp(x) == 0:
        raise ValueError("x must take at least two distinct values")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    se = math.sqrt((resid**2).sum() / (len(x) - 2) / ((lx - lx.mean()) ** 2).sum())
    half = t_quantile(0.5 + level / 2, len(x) - 2) * se
    return {"slope": slope, "lo": slope - half, "hi": slope + half, "intercept": intercept, "points": len(x)}


def slopes(change, configs, level=0.95):
    """The log-log slopes of Fig. 9, per entry and quantity (``abs_change``, ``rel_change``),
    fitted on every run (all seeds, not seed means) of

    * ``all``: every distinct ``(m, n)`` of the grid, against ``mn`` (Theorem 1: -1);
    * ``single``: the single models ``m = 1`` (panel a), against ``n``;
    * ``ensemble_b``: the ensembles ``m = n = d`` of panel (b), against ``mn``;
    * ``width_c``: the runs of constant width ``n_c`` (panel c), against ``m``.

    Fits with fewer than two distinct abscissae are left out. Returns a DataFrame with columns
    ``fit, entry, value, x, slope, lo, hi, intercept, points``.
    """
    ens_b = configs[(configs.panel == "b") & (configs.role == "ensemble")][["m", "n"]].drop_duplicates()
    n_c = configs[(configs.panel == "c") & (configs.role == "ensemble")].n.unique()
    subsets = {
        "all": (change, "mn"),
        "single": (change[change.m == 1], "n"),
        "ensemble_b": (change.merge(ens_b, on=["m", "n"]), "mn"),
        "width_c": (change[change.n.isin(n_c)], "m"),
    }
    rows = []
    for fit, (c, xcol) in subsets.items():
        for entry in change.entry.unique():
            ce = c[c.entry == entry]
            if ce[xcol].nunique() < 2 or len(ce) < 3:
                continue
            for value in ("abs_change", "rel_change"):
                s = loglog_slope(ce[xcol], ce[value], level)
                rows.append(dict(fit=fit, entry=entry, value=value, x=xcol, **s))
    return pd.DataFrame(rows)


def slope_table(fits, value="abs_change"):
    """:func:`slopes` as a readable table: one row per entry, one column per fit, cells
    ``"slope [lo, hi]"``."""
    f = fits[fits.value == value]
    cols = [c for c in ("all", "single", "ensemble_b", "width_c") if c in set(f.fit)]
    cell = {(r.entry, r.fit): f"{r.slope:.2f} [{r.lo:.2f}, {r.hi:.2f}]" for r in f.itertuples()}
    entries = [e for e in ALL_ENTRIES if e in set(f.entry)]
    return pd.DataFrame(
        {c: [cell.get((e, c), "") for e in entries] for c in cols}, index=pd.Index(entries, name="entry")
    )


# ---------------------------------------------------------------------------------------------
# Figures, drawn from saved tables (DataFrames as written by the notebook)
# ---------------------------------------------------------------------------------------------

COLORS = {"baseline": "tab:red", "ensemble": "tab:blue"}


def plot_fig9(points, axes=None, ylabel=r"$|K_T - K_0|$"):
    """Fig. 9 (a)-(c): mean ``|Delta K|`` over seeds with standard-error bars, log-log.

    Args:
        points: :func:`panel_table` output (one entry). axes: three matplotlib axes or ``None``.
    Returns:
        the figure.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    a = points[points.panel == "a"].sort_values("n")
    axes[0].errorbar(a.n, a["mean"], yerr=a["sem"], fmt="o-", color=COLORS["baseline"], capsize=3, label="m = 1")
    axes[0].set(xlabel="width n", ylabel=ylabel, title="(a) single model")
    for ax, panel, title in (
        (axes[1], "b", "(b) ensemble m = n = d vs n = d$^2$"),
        (axes[2], "c", "(c) ensemble of constant width vs n = d$^2$"),
    ):
        p = points[points.panel == panel].sort_values("d")
        for role, q in p.groupby("role"):
            if panel == "b":
                label = "m = 1, n = d$^2$" if role == "baseline" else "m = n = d"
            else:
                label = "m = 1, n = d$^2$" if role == "baseline" else f"n = {q.n.iloc[0]}, m matched"
            ax.errorbar(
                q.d,
                q["mean"],
                yerr=q["sem"],
                fmt="o-" if role == "baseline" else "s--",
                color=COLORS[role],
                capsize=3,
                label=label,
            )
        if panel == "c":
            for d, m, v in zip(p[p.role == "ensemble"].d, p[p.role == "ensemble"].m, p[p.role == "ensemble"]["mean"]):
                ax.annotate(
                    f"m={m}", (d, v), textcoords="offset points", xytext=(4, -12), fontsize=8, color=COLORS["ensemble"]
                )
        ax.set(xlabel="d", title=title)
    _log_ticks(axes[0], a.n)
    for ax in axes[1:]:
        _log_ticks(ax, points[points.panel != "a"].d.dropna())
    for ax in axes:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig = axes[0].figure
    fig.tight_layout()
    return fig


def _log_ticks(ax, xs):
    """Log-scale x axis labelled at the values ``xs`` (plain numbers, no minor labels)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(sorted({int(v) for v in xs}))
    ax.set_xticklabels([str(int(v)) for v in sorted({int(v) for v in xs})])
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_slopes(change, fits, entries=("offdiag", "offdiag_mean"), exponent=-1.0):
    """Every run's ``|Delta K|`` against ``mn`` (log-log), one panel per entry, with the line fitted
    by :func:`slopes` (fit ``all``) and a reference line of slope ``exponent`` (Theorem 1: -1)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(entries), figsize=(5 * len(entries), 3.8), squeeze=False)
    for ax, entry in zip(axes[0], entries):
        c = change[change.entry == entry]
        for single, q in c.groupby(c.m == 1):
            ax.scatter(
                q.mn,
                q.abs_change,
                s=12,
                alpha=0.6,
                color=COLORS["baseline" if single else "ensemble"],
                label="single models" if single else "ensembles (m > 1)",
            )
        f = fits[(fits.fit == "all") & (fits.entry == entry) & (fits.value == "abs_change")].iloc[0]
        xs = np.geomspace(c.mn.min(), c.mn.max(), 50)
        ax.plot(xs, np.exp(f.intercept) * xs**f.slope, "k-", label=f"fit: slope {f.slope:.2f} [{f.lo:.2f}, {f.hi:.2f}]")
        ref = np.exp(np.log(c.abs_change).mean()) * (xs / np.exp(np.log(c.mn).mean())) ** exponent
        ax.plot(xs, ref, "k:", label=f"slope {exponent:g} (Theorem 1)")
        ax.set(yscale="log", xlabel="mn", ylabel=r"$|K_T - K_0|$", title=entry)
        _log_ticks(ax, [v for v in sorted(c.mn.unique())][::2])
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_trajectories(traj, configs, entry, ax=None):
    """``|K_t - K_0|`` of ``entry`` (mean over seeds) along training for the pairs of panel (b):
    single models ``n = d^2`` (solid) and ensembles ``m = n = d`` (dashed), one colour per ``d``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.8))
    b = configs[configs.panel == "b"]
    t = traj[(traj.entry == entry) & (traj.epoch > 0)].groupby(["m", "n", "epoch"]).abs_change.mean().reset_index()
    cmap = plt.get_cmap("viridis")
    ds = sorted(b.d.unique())
    for k, d in enumerate(ds):
        for role, style in (("baseline", "-"), ("ensemble", "--")):
            row = b[(b.d == d) & (b.role == role)].iloc[0]
            q = t[(t.m == row.m) & (t.n == row.n)]
            ax.plot(
                q.epoch,
                q.abs_change,
                style,
                color=cmap(k / max(1, len(ds) - 1)),
                label=f"d = {int(d)}" if role == "baseline" else None,
            )
    ax.plot([], [], "k-", label="m = 1, n = d$^2$")
    ax.plot([], [], "k--", label="m = n = d")
    ax.set(yscale="log", xlabel="epoch t", ylabel=r"$|K_t - K_0|$", title=f"{entry}, panel (b) pairs")
    ax.legend(fontsize=7, ncol=2)
    return ax.figure


def checks(fits, entries=("offdiag_mean", "diag_mean")):
    """Theorem 1 checked on a run: ``[(name, holds, detail)]`` for :meth:`cepaper.book.results.Run.check`.

    ``fits``: :func:`slopes`. Checked, for each of ``entries``: pooled over the grid, ``|K_T - K_0|`` shrinks
    as ``mn`` grows (the interval of the ``all`` slope lies below 0). The value -1 is not checked: at
    small scale the narrow widths are far from the asymptotic regime.
    """
    words = {"offdiag_mean": "probe-mean off-diagonal", "diag_mean": "probe-mean diagonal"}
    out = []
    for entry in entries:
        f = fits[(fits.fit == "all") & (fits.entry == entry) & (fits.value == "abs_change")].iloc[0]
        out.append(
            (
                f"|K_T - K_0| shrinks as mn grows (Theorem 1), {words.get(entry, entry)} entries: "
                "the slope's interval lies below 0",
                bool(f.hi < 0),
                f"slope {f.slope:.2f}, interval [{f.lo:.2f}, {f.hi:.2f}] over {int(f.points)} runs",
            )
        )
    return out
