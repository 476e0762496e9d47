"""Sec. 4.2.1 and App. B/C: ResNeXt-29 models derived by Algorithm 2, trained on CIFAR-10/100.

:func:`design_models` derives, for each baseline ``1 x n~ d``, the primal and dual optima (parameter
budget, Tables 1a/1b) and the FLOPs-budget primal optimum (Table 5), and models at given widths on
the primal and dual curves of the first baseline (Figs. 6-7); :func:`cepaper.classify.run_models`
trains them with the recipe of Xie et al. [20] and :func:`cepaper.classify.summary` gives the
paper's statistic (the test error averaged over the last 10 epochs, then mean and standard error
over runs); :func:`paper_table` puts it beside the paper's.

A *scaled-down* network (``stages``/``depth`` other than ResNeXt-29's, e.g. the quick CPU profile)
has its own baseline and its own optima, derived with the bottleneck of its first stage as the
member module (``w_in = w_out = stages[0]``); in the tables its models stand in the rows of the
paper's models with the same role (baseline, primal/dual/FLOPs optimum).
"""

import numpy as np
import pandas as pd

from cepaper import complexity as cxm, paper, search
from cepaper._checks import positive_int

#: The paper's rows each derived role stands in for (baseline 1x128d): Tables 1a, 1b and 5.
ROLE_ROWS = {"baseline": ("1x128d", None), "primal optimum": ("37x10d", "params"),
             "dual optimum": ("10x10d", "params"), "flops optimum": ("44x8d", "flops")}
CLASSES = {"cifar10": 10, "cifar100": 100}
RESNEXT29 = (tuple(cxm.CIFAR_STAGES["resnext29"]), 3)


def check_params(datasets, n_runs, epochs):
    """Check the section's parameters: ``datasets`` among ``CLASSES``, ``n_runs >= 1``, ``epochs``
    ``None`` or ``>= 1``; return ``(datasets, n_runs, epochs)``."""
    if not datasets or any(d not in CLASSES for d in datasets):
        raise ValueError(f"datasets must be a non-empty list among {', '.join(CLASSES)}, got {datasets!r}")
    return list(datasets), positive_int("n_runs", n_runs), None if epochs is None else positive_int("epochs", epochs)


def is_paper_scale(stages, depth):
    """True for ResNeXt-29 itself (stages 256, 512, 1024; 3 blocks each)."""
    return stages is None or (tuple(stages), depth) == RESNEXT29


def _net(stages, depth):
    """``(stages, depth)`` keyword arguments of a network (empty for ResNeXt-29 itself)."""
    return {} if is_paper_scale(stages, depth) else {"stages": tuple(stages), "depth": depth}


def member_module(stages=None):
    """The member of Algorithm 2: the bottleneck of the first stage, ``stages[0] -> [n, n] -> stages[0]``."""
    w = 256 if stages is None else positive_int("stages", stages[0])
    return search.Bottleneck(w_in=w, w_out=w)


def _spec(r, role, baseline, classes, net):
    cx = cxm.complexity("resnext29", r["config"], classes=classes, **net)
    return {"config": r["config"], "role": role, "baseline": baseline, "objective": r["objective"],
            "budget": r["budget"], "n": r["n"], "m": r["m"], "params": cx["params"],
            "gflops": search.flops_of(cx, "2macs+acts+adds") / 1e9, "rho": r["rho_params"],
            "var_ratio": r["var_ratio"]}


def design_models(baselines, primal_ns=(), dual_ns=(), models=(), stages=None, depth=3, alpha=None, classes=10):
    """The models to train, one dict per distinct config (first role wins): ``config, role, baseline,
    objective, budget, n, m, params, gflops, rho`` (params ratio to the baseline), ``var_ratio``.

    Roles: ``baseline``, ``primal optimum``, ``dual optimum``, ``flops optimum`` (per baseline),
    ``primal curve`` / ``dual curve`` (the first baseline at widths ``primal_ns`` / ``dual_ns``),
    ``listed`` (``models``: further configs, e.g. the paper's references).
    """
    if not baselines:
        raise ValueError("baselines must name at least one baseline CxDd, e.g. ['1x128d']")
    net = _net(stages, depth)
    kw = dict(alpha=alpha, classes=classes, module=member_module(stages), **net)
    out = {}

    def add(spec):
        out.setdefault(spec["config"], spec)

    for b in baselines:
        add(_spec(search.design("resnext29", b, "primal", n=cxm.parse_config(b)[1], **kw), "baseline", b, classes, net))
        for role, objective, budget in (("primal optimum", "primal", "params"), ("dual optimum", "dual", "params"),
                                        ("flops optimum", "primal", "flops")):
            add(_spec(search.design("resnext29", b, objective, budget, **kw), role, b, classes, net))
    for ns, objective in ((primal_ns, "primal"), (dual_ns, "dual")):
        for n in ns:
            add(_spec(search.design("resnext29", baselines[0], objective, n=n, **kw), f"{objective} curve",
                      baselines[0], classes, net))
    for config in models:
        c = cxm.format_config(*cxm.parse_config(config))
        if c not in out:
            cx = cxm.complexity("resnext29", c, classes=classes, **net)
            out[c] = {"config": c, "role": "listed", "baseline": None, "objective": None, "budget": None,
                      "n": cxm.parse_config(c)[1], "m": cxm.parse_config(c)[0], "params": cx["params"],
                      "gflops": search.flops_of(cx, "2macs+acts+adds") / 1e9, "rho": None, "var_ratio": None}
    return list(out.values())


def curves(baseline, stages=None, alpha=None):
    """The red curves of Figs. 6-7 for ``baseline``: :func:`cepaper.search.curve` (params budget) as lists."""
    a = search.default_alpha("resnext29")[0] if alpha is None else alpha
    c = search.curve(member_module(stages), cxm.parse_config(baseline)[1], a)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in c.items()}


def _finite(x):
    return x is not None and bool(np.isfinite(float(x)))


def _ours(summ, dataset, config):
    row = summ[(summ.dataset == dataset) & (summ.config == config)]
    if row.empty:
        return None
    r = row.iloc[0]
    sem = "" if not _finite(r.top1_sem) else f" ± {r.top1_sem:.2f}"
    return f"{r.top1:.2f}{sem} ({int(r.runs)})"


def stand_in(row, specs, scaled):
    """Our model for a paper row: the same config at paper scale; for a scaled-down network, our
    derived model of the same role (``ROLE_ROWS``), else ``None``."""
    by_config = {s["config"]: s for s in specs}
    if not scaled:
        return by_config.get(row["config"])
    for s in specs:
        config, budget = ROLE_ROWS.get(s["role"], (None, None))
        if s["baseline"] == specs[0]["baseline"] and config == row["config"] and budget in (None, row["budget"]):
            return s
    return None


def paper_table(table, specs, summ, scaled):
    """Table ``1a``, ``1b`` or ``5``: every paper row (model, params, C10/C100 error) beside ours
    (model, params, error mean ± s.e. (runs) per dataset, "not run" where we trained none)."""
    rows = []
    for row in [r for r in paper.MODELS if r["table"] == table]:
        s = stand_in(row, specs, scaled) if row["config"] else None
        out = {"paper model": row["model"], "paper params (M)": row["params"]}
        if table == "5":
            out["paper GFLOPs"] = row["gflops"]
        if table == "1b":
            out["paper rho"] = row["rho"]
        out.update({"paper C10": row["c10"], "paper C100": row["c100"],
                    "our model": s["config"] if s else "not run",
                    "our params (M)": round(s["params"] / 1e6, 4) if s else None})
        if table == "5":
            out["our GFLOPs"] = round(s["gflops"], 4) if s else None
        for ds, col in (("cifar10", "our C10"), ("cifar100", "our C100")):
            out[col] = (_ours(summ, ds, s["config"]) if s else None) or "not run"
        rows.append(out)
    return pd.DataFrame(rows)


def plot_curve_errors(specs, summ, curve, datasets):
    """Figs. 6-7: one row per dataset (Fig. 7 is CIFAR-10, Fig. 6 CIFAR-100): the test error of the
    models on the primal (left) and dual (right) curves of the first baseline against their width
    ``n``, with s.e. bars, and the red curve (Var(K_e)/Var(K_ñ) at m_p(n); rho(m_d(n), n)) on a twin axis."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.6 * len(datasets)), squeeze=False)
    fig.subplots_adjust(wspace=0.5, hspace=0.5, top=0.9, bottom=0.1, left=0.08, right=0.9)
    base = specs[0]["baseline"]
    for row, ds in zip(axes, datasets):
        for ax, objective, key, label in ((row[0], "primal", "var_ratio_primal", "Var(K_e)/Var(K_ñ) at m_p(n)"),
                                          (row[1], "dual", "rho_dual", "ρ(m_d(n), n)")):
            on = sorted([s for s in specs if s["baseline"] == base and
                         s["role"] in (f"{objective} curve", f"{objective} optimum", "baseline")], key=lambda s: s["n"])
            pts = [(s["n"], summ[(summ.dataset == ds) & (summ.config == s["config"])]) for s in on]
            pts = [(n, r.iloc[0]) for n, r in pts if not r.empty]
            if pts:
                ax.errorbar([n for n, _ in pts], [r.top1 for _, r in pts],
                            yerr=[r.top1_sem if _finite(r.top1_sem) else 0.0 for _, r in pts],
                            fmt="o-", capsize=3, label="test error")
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
