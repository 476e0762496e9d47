"""What notebook ``06_cifar`` shows beside the paper's tables: Figs. 6–7, what CIFAR training costs on this
machine, and the invariants a grid of training runs must keep; :mod:`cepaper.sections.cifar` exposes them."""

import numpy as np
import pandas as pd

from cepaper.sections import paper
from cepaper.sections._shared import markdown
from cepaper.training import recipes, sgd

#: CIFAR-10's (and CIFAR-100's) training images.
TRAIN_IMAGES = 50_000


def throughput_rows(configs=("1x128d", "37x10d"), batch_size=8, steps=1, device="cpu", channels_last=True):
    """Training images/s of the paper's ResNeXt-29 ``configs`` at CIFAR's 32x32 (10 classes) on
    ``device`` (:func:`cepaper.training.sgd.throughput`), and what one epoch of CIFAR-10 and the paper's
    runs (10 runs x the recipe's 300 epochs) cost at that speed. A list of dicts ``table, arch, config,
    resolution, batch, images_per_s, hours per epoch, hours for the paper's runs``."""
    from cepaper.models.resnext import resnext

    rec = recipes.recipe("cifar")
    rows = []
    for config in configs:
        ips = sgd.throughput(
            resnext("resnext29", config, 10), batch_size, rec.resolution, 10, device, steps, 1, channels_last
        )
        epoch_h = sgd.epoch_hours(TRAIN_IMAGES, ips)
        rows.append(
            {
                "table": "1a",
                "arch": "resnext29",
                "config": config,
                "resolution": rec.resolution,
                "batch": batch_size,
                "images_per_s": ips,
                "hours per epoch": epoch_h,
                "hours for the paper's runs": epoch_h * rec.epochs * paper.STATISTICS["cifar"]["runs"],
            }
        )
    return rows


def save_throughput(run, device, channels_last):
    """:func:`throughput_rows`, saved as ``throughput``; returns the rows."""
    speed = throughput_rows(device=device, channels_last=channels_last)
    run.save("throughput", {"rows": speed}, table=pd.DataFrame(speed))
    return speed


def throughput_table(speed):
    keep = ["config", "batch", "images_per_s", "hours per epoch", "hours for the paper's runs"]
    return [{k: r[k] for k in keep} for r in speed]


def throughput_sentence(speed, device_name):
    """Markdown: what CIFAR-10 costs for the primal optimum 37×10d at the measured speed."""
    opt = next(r for r in speed if r["config"] == "37x10d")
    paper_hours = opt["hours for the paper's runs"]
    return markdown(
        f"At {opt['images_per_s']:.1f} images/s on {device_name}, one epoch of CIFAR-10 for 37×10d takes "
        f"{opt['hours per epoch']:.1f} h; 30 epochs of one run, {30 * opt['hours per epoch']:.0f} h; the paper's "
        f"10 runs of 300 epochs, {paper_hours:,.0f} h."
    )


def check_grid(records, runs, datasets, n_runs, epochs, in_process):
    """Raise ``AssertionError`` unless every finished run trained all ``epochs`` (``None``: 300) with finite
    losses and errors in percent, there is one record per model, dataset and run, every run names a known
    recipe, and (``in_process``: no executor) none failed. What would make the page wrong stops the run."""
    from cepaper.training import grids

    done = grids.finished_runs(records)
    assert all(len(r["history"]["epoch"]) == (epochs or 300) for r in done), "a finished run must train every epoch"
    assert all(0 <= e <= 100 for r in done for e in r["history"]["test_top1"]), "top-1 errors must be percentages"
    assert all(pd.notna(r["history"]["train_loss"]).all() for r in done), "training losses must not be NaN"
    assert len(records) == len(runs) * len(datasets) * n_runs, "one record per model, dataset and run"
    assert not in_process or len(done) == len(records), "in this process a failed run is an error"
    assert {r["recipe"] for r in runs} <= set(recipes.RECIPES), "every run names a known recipe"


def finite(x):
    return x is not None and bool(np.isfinite(float(x)))


def by_recipe(summ):
    """``summ`` with a ``recipe`` column (a summary older than the recipes matches no row)."""
    return summ if "recipe" in summ else summ.iloc[0:0].assign(recipe=pd.Series(dtype=object))


def plot_curve_errors(specs, summ, curve, datasets, recipe="cifar"):
    """Figs. 6-7: one row per dataset (Fig. 7 is CIFAR-10, Fig. 6 CIFAR-100): the test error (8-GPU
    recipe) of the models on the primal (left) and dual (right) curves of the first baseline against
    their width ``n``, with s.e. bars, and the red curve (Var(K_e)/Var(K_ñ) at m_p(n); rho(m_d(n), n)) on a
    twin axis; ``recipe``: the runs' recipe (the 8-GPU one, :data:`cepaper.sections.cifar.RECIPE`)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.6 * len(datasets)), squeeze=False)
    fig.subplots_adjust(wspace=0.5, hspace=0.5, top=0.9, bottom=0.1, left=0.08, right=0.9)
    base = specs[0]["baseline"]
    summ = by_recipe(pd.DataFrame(summ))
    summ = summ[summ.recipe == recipe]
    for row, ds in zip(axes, datasets):
        for ax, objective, key, label in (
            (row[0], "primal", "var_ratio_primal", "Var(K_e)/Var(K_ñ) at m_p(n)"),
            (row[1], "dual", "rho_dual", "ρ(m_d(n), n)"),
        ):
            on = sorted(
                [
                    s
                    for s in specs
                    if s["baseline"] == base and s["role"] in (f"{objective} curve", f"{objective} optimum", "baseline")
                ],
                key=lambda s: s["n"],
            )
            pts = [(s["n"], summ[(summ.dataset == ds) & (summ.config == s["config"])]) for s in on]
            pts = [(n, r.iloc[0]) for n, r in pts if not r.empty]
            if pts:
                ax.errorbar(
                    [n for n, _ in pts],
                    [r.top1 for _, r in pts],
                    yerr=[r.top1_sem if finite(r.top1_sem) else 0.0 for _, r in pts],
                    fmt="o-",
                    capsize=3,
                    label="test error",
                )
                for n, r in pts:
                    ax.annotate(r.config, (n, r.top1), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xscale("log")
            ax.set_xlabel("width n")
            ax.set_ylabel("test error (%)")
            ax.set_title(f"{ds}: ({'a' if objective == 'primal' else 'b'}) {objective} curve of {base}", fontsize=10)
            ax.legend(fontsize=8, loc="upper left")
            twin = ax.twinx()
            twin.plot(curve["n"], curve[key], color="tab:red", lw=1.5)
            twin.set_ylabel(label, color="tab:red")
            if objective == "primal":
                twin.set_yscale("log")
    return fig


# ------------------------------------------------------------------------------------ the notebook's steps
