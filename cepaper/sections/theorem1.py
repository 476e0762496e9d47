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
from cepaper.sections import paper
from cepaper.sections._shared import markdown, set_threads, show  # noqa: F401 (the notebook's)
from cepaper.sections._theorem1_plots import COLORS, plot_fig9, plot_slopes, plot_trajectories  # noqa: F401
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


# ------------------------------------------------------------------------------------ the notebook's steps


def scale_sentence(profile, epochs, n_seeds, n_train):
    """Markdown saying what scale this run is (nothing for the paper's): the CPU-evidence profile trains the
    paper's grid on all of MNIST for fewer epochs; any other profile is a CPU-scale run, not evidence."""
    if profile == "paper":
        return None
    if profile == "cpu-evidence":
        return markdown(
            f"**This is the CPU-evidence scale** (profile `{profile}`): the paper's L = 4, (m, n) grid and all of "
            f"MNIST, trained for {epochs} epochs (the paper: 100) with {n_seeds} seeds."
        )
    return markdown(
        f"**This is a CPU-scale run** (profile `{profile}`): {n_train} MNIST images, {epochs} epochs, "
        f"{n_seeds} seeds and narrower nets than Fig. 9's; it shows the trend, it is not evidence."
    )


def train(run, data_root, n_train, target, ds, widths_a, n_c, seeds, cache, depth, **train_kw):
    """Train the grid (:func:`grid`) on the first ``n_train`` MNIST images with scalar ``target``
    (:func:`train_grid`, ``train_kw``: ``epochs, lr, batch_size, n_probe, record_every, device``) and save
    ``runs``, ``fig9`` (every entry's panels), ``slopes`` and ``trajectories``. Returns a sentence on the runs."""
    from cepaper import data

    mnist = data.load("mnist", "train", root=data_root, n=n_train)
    x, y = data.inputs(mnist), data.scalar_targets(mnist.y, target)
    configs = grid(ds, widths_a, n_c=n_c, depth=depth, n_in=x.shape[1])
    records = train_grid(x, y, configs, seeds, cache=cache, depth=depth, **train_kw)
    change = changes(records)
    fits = slopes(change, configs)
    run.save("runs", {"source": mnist.source, "records": records, "change": change.to_dict("list")}, table=change)
    run.save("fig9", {e: panel_table(configs, change, e).to_dict("list") for e in ALL_ENTRIES})
    run.save("slopes", fits.to_dict("list"), table=fits)
    run.save("trajectories", {"configs": configs.to_dict("list"), "traj": trajectories(records).to_dict("list")})
    distinct = configs[["m", "n"]].drop_duplicates().shape[0]
    return markdown(
        f"{len(records)} runs on {mnist.source} ({len(x)} images); {distinct} distinct (m, n), seeds {seeds}."
    )


def slope_tables(fits):
    """What the page shows of the saved ``slopes``: the slopes of ``log |K_T - K_0|`` and of the relative
    change with their intervals, beside Theorem 1's and footnote 1's exponents, and the power of the main
    fit (off-diagonal entry, all runs): the smallest departure from -1 detected with 80% power at 5%."""
    from scipy import stats

    from cepaper.book import pages

    fits = pd.DataFrame(fits)
    main = fits[(fits.fit == "all") & (fits.entry == "offdiag") & (fits.value == "abs_change")].iloc[0]
    se = (main.hi - main.lo) / 2 / stats.t.ppf(0.975, main.points - 2)
    return [
        markdown(
            f"**Slope of log |K_T − K_0|** with its 95% interval. Theorem 1 predicts {paper.THEOREM1_EXPONENT_MN:g} "
            f"in mn. Footnote 1 (the rigorous result of [10]) gives {paper.THEOREM1_RIGOROUS['n']:g} in n and "
            f"{paper.THEOREM1_RIGOROUS['m']:g} in m."
        ),
        pages.show(slope_table(fits, "abs_change").reset_index()),
        markdown("**Slope of log |K_T − K_0| / |K_0|** (relative change):"),
        pages.show(slope_table(fits, "rel_change").reset_index()),
        markdown(
            f"**Power:** the slope of the off-diagonal entry over all {int(main.points)} runs has standard "
            f"error {se:.3f}, so an exponent that differs from {paper.THEOREM1_EXPONENT_MN:g} by "
            f"{2.8 * se:.2f} or more is detected with 80% power at the 5% level."
        ),
    ]


def check(run):
    """Stop the run unless every run lowered its training loss and moved its kernel; record :func:`checks`."""
    change, fits = pd.DataFrame(run.load("runs")["change"]), pd.DataFrame(run.load("slopes"))
    assert (change.lossT < change.loss0).all(), "every run must lower the training loss"
    assert (change.abs_change > 0).all(), "with lr > 0 the kernel must move"
    for name, holds, detail in checks(fits):
        run.check(name, holds, detail)
