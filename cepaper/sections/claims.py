"""The claims page: every claim of the paper beside the strongest result the results store holds.

One row per claim: the paper's number, ours with its interval, the scale and run behind it, and a
verdict from one stated rule (:func:`verdict`):

* ``reproduced``: an exact computation gives the printed value (to its printed digits), or the
  paper's number lies inside our ``level`` interval;
* ``consistent``: the paper states a direction, not a number, and our interval lies on its side;
* ``inconclusive``: our interval contains both the claimed direction and its opposite;
* ``differs``: the printed value is outside our interval, or the exact computation differs;
* ``not run``: no committed run at a scale that tests the claim; the row says what it would cost.

Results are looked up in the order of ``scales`` (default :data:`SCALES`: the paper's scale, then the
CPU-evidence profile); the quick profile is never evidence. A row names the profile, commit and date
of the run it reads (:func:`run_of`).
"""

import math

import numpy as np
from scipy import stats

from cepaper.sections import cifar
from cepaper.training import recipes
from cepaper.training import sgd
from cepaper.sections import primal_dual
from cepaper.sections import imagenet
from cepaper.sections import paper
from cepaper.book import results
from cepaper import complexity as cxm

#: Profiles whose committed results count as evidence, best first.
SCALES = ("paper", "cpu-evidence")
VERDICTS = ("reproduced", "consistent", "inconclusive", "differs", "not run")


def best(section, name, scales=SCALES):
    """``(record, profile)`` of the first stored ``section/name`` among ``scales``, or ``(None, None)``."""
    for profile in scales:
        record = results.find(section, name, profiles=(profile,))
        if record is not None:
            return record, profile
    return None, None


def run_of(record):
    """The run behind a record, for a table cell: ``profile @ commit, date``."""
    p = record["provenance"]
    commit = (p.get("git_commit") or "unknown")[:7]
    return f"{p['profile']} @ {commit}, {p['date'][:10]}"


def verdict(paper_value, lo, hi, direction=None):
    """The verdict of an interval ``[lo, hi]`` against a printed number or, with ``direction``
    (``+1``: positive, ``-1``: negative, ``0``: not negative), against a claimed sign."""
    if direction is None:
        return "reproduced" if lo <= paper_value <= hi else "differs"
    if direction == 0:  # "does not improve": a negative correlation would contradict it
        return "differs" if hi < 0 else "consistent"
    side = lo > 0 if direction > 0 else hi < 0
    other = hi < 0 if direction > 0 else lo > 0
    return "consistent" if side else "differs" if other else "inconclusive"


def _row(claim, paper_text, ours, interval, scale, run, verdict_, estimate=None):
    """One claim; ``estimate``: ``(paper, ours, lo, hi)`` numbers where the paper prints one."""
    return {
        "claim": claim,
        "paper": paper_text,
        "ours": ours,
        "interval": interval,
        "scale": scale,
        "run": run,
        "verdict": verdict_,
        "estimate": None if estimate is None else [float(v) for v in estimate],
    }


def _not_run(claim, paper_text, cost):
    return _row(claim, paper_text, "—", "—", "—", "—", "not run") | {"cost": cost}


def _ci(lo, hi, digits=2):
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def lemma1_rows(scales=SCALES, level=0.95):
    """Lemma 1: Var(K_e) against m (slope -1 on log-log axes), and the NMK against K_inf."""
    rows = []
    var, profile = best("lemma1", "variance", scales)
    if var is None:
        return [
            _not_run("Lemma 1: Var(K_e) ∝ 1/m", "slope −1", "36 s on a 2-core CPU (paper profile)"),
            _not_run("Lemma 1: NMK = K∞ at every width", "E[K_n] ≈ K∞", "36 s on a 2-core CPU"),
        ]
    f = var["data"]["fit_diag"]
    z = stats.norm.ppf(0.5 + level / 2)
    lo, hi = f["slope"] - z * f["se"], f["slope"] + z * f["se"]
    rows.append(
        _row(
            "Lemma 1: Var(K_e) ∝ 1/m (diagonal entry; log-log slope in m)",
            "−1",
            f"{f['slope']:.3f}",
            _ci(lo, hi, 3),
            profile,
            run_of(var),
            verdict(-1.0, lo, hi),
            (-1.0, f["slope"], lo, hi),
        )
    )
    nmk, profile = best("lemma1", "nmk", scales)
    if nmk is not None:
        d = nmk["data"]
        mean, se, kinf = (np.asarray(d[k], dtype=float) for k in ("mean", "mean_se", "kinf"))
        zs = np.abs(mean - kinf) / se
        crit = stats.norm.ppf(1 - (1 - level) / (2 * zs.size))  # Bonferroni over every entry and width
        dev = float(np.max(np.abs(mean - kinf)) / np.mean(np.abs(kinf)))
        rows.append(
            _row(
                f"Lemma 1: NMK = K∞ at widths {', '.join(map(str, d['widths']))}",
                "“little to no dependence on the widths”",
                f"max |E[K] − K∞| = {100 * dev:.2f}% of |K∞|; max |z| = {zs.max():.2f}",
                f"|z| ≤ {crit:.2f} (Bonferroni, {zs.size} entries)",
                profile,
                run_of(nmk),
                "reproduced" if zs.max() <= crit else "differs",
            )
        )
    return rows


def theorem1_rows(scales=SCALES):
    """Theorem 1: the exponent of mn in |K_T - K_0| (Eq. 7: -1), fitted over every run of Fig. 9."""
    rec, profile = best("theorem1", "slopes", scales)
    if rec is None:
        return [
            _not_run(
                "Theorem 1: |K_T − K_0| ∝ (mn)^−1",
                "exponent −1",
                "about an hour on a 2-core CPU (cpu-evidence profile)",
            )
        ]
    s = rec["data"]
    rows = []
    for i in range(len(s["fit"])):
        if s["fit"][i] == "all" and s["value"][i] == "abs_change" and s["entry"][i] in ("offdiag", "offdiag_mean"):
            what = "one off-diagonal entry (Fig. 9)" if s["entry"][i] == "offdiag" else "mean over probe pairs"
            rows.append(
                _row(
                    f"Theorem 1: exponent of mn, {what}",
                    f"{paper.THEOREM1_EXPONENT_MN:g}",
                    f"{s['slope'][i]:.2f}",
                    _ci(s["lo"][i], s["hi"][i]),
                    profile,
                    run_of(rec),
                    verdict(paper.THEOREM1_EXPONENT_MN, s["lo"][i], s["hi"][i]),
                    (paper.THEOREM1_EXPONENT_MN, s["slope"][i], s["lo"][i], s["hi"][i]),
                )
            )
    return rows


def alpha_rows(scales=SCALES):
    """Sec. 4.2: the bottleneck block's alpha (Algorithm 1)."""
    rec, profile = best("alpha", "fit_bottleneck", scales)
    if rec is None:
        return [
            _not_run(
                "Sec. 4.2: α of the bottleneck block",
                f"{paper.ALPHA_BOTTLENECK:.2f}",
                "about 40 min on a 2-core CPU (paper profile)",
            )
        ]
    d = rec["data"]
    lo, hi = d["alpha_ci"]
    widths = d["widths"]
    # widths whose draws have a tail the bootstrap cannot see (cepaper.fit.KHAT_MAX): there the interval
    # is too narrow, so a value outside it is not evidence of a difference
    heavy = d.get("fits", {}).get(d.get("entry", "diag"), {}).get("heavy_tail_widths", [])
    judged = verdict(paper.ALPHA_BOTTLENECK, lo, hi)
    claim = (
        f"Sec. 4.2: α of the bottleneck block (T = {d['trials']}, {len(widths)} widths {min(widths)}..{max(widths)})"
    )
    if heavy:
        judged = "inconclusive" if judged == "differs" else judged
        claim += f"; interval too narrow: heavy-tailed draws at n = {', '.join(map(str, heavy))}"
    return [
        _row(
            claim,
            f"{paper.ALPHA_BOTTLENECK:.2f}",
            f"{d['alpha']:.3f}",
            _ci(lo, hi, 3),
            profile,
            run_of(rec),
            judged,
            (paper.ALPHA_BOTTLENECK, d["alpha"], lo, hi),
        )
    ]


def design_rows():
    """Fig. 3's optimum and every derived model of Tables 1-5: exact computations, no run."""
    fig3 = primal_dual.fig3_data(np.round(np.arange(3.0, 4.5, 0.001), 6))
    p, d = fig3["primal"], fig3["dual"]
    ok = (
        p["n"] == paper.FIG3["n_primal"]
        and round(p["m"]) == paper.FIG3["m_primal"]
        and primal_dual.matches_printed(d["rho"], paper.FIG3["rho_dual"])
    )
    lo, hi = fig3["interval"]
    rows = [
        _row(
            "Fig. 3: primal/dual optimum of the L = 6, ñ = 500 MLP",
            f"n = {paper.FIG3['n_primal']}, m ≈ {paper.FIG3['m_primal']}, ρ ≈ {paper.FIG3['rho_dual']}",
            f"n = {p['n']}, m = {p['m']:.1f}, ρ = {d['rho']:.2f}",
            f"for α ∈ {_ci(lo, hi, 3)}",
            "exact",
            "computed on this page",
            "reproduced" if ok else "differs",
        )
    ]
    seen = set()
    for r in primal_dual.derived_rows():
        key = (r["table"], r["arch"], r["baseline"], r["objective"], r["budget"], r["paper model"])
        if key in seen:
            continue
        seen.add(key)
        classes = next(
            m["classes"] for m in paper.MODELS if m["table"] == r["table"] and m["config"] == r["paper model"]
        )
        printed = cxm.complexity(r["arch"], r["paper model"], classes=classes)["params"] / 1e6
        count_ok = primal_dual.matches_printed(printed, r["paper params (M)"])
        what = "model at its width" if r["role"] != "optimum" else "optimum"
        derived = r["role"] != "vicinity"  # ‡ rows are hand-picked neighbours: only their size is a claim
        ours = f"{r['ours']}, {r['params (M)']:.2f}M" if derived else f"{r['paper model']} counts {printed:.2f}M"
        if derived and not r["match"]:
            ours += f" ({r['paper model']} counts {printed:.2f}M)"
        rows.append(
            _row(
                f"Table {r['table']}: {r['arch']} {r['objective']} {what if derived else 'neighbour ‡'} "
                f"from {r['baseline']}" + ("" if r["budget"] == "params" else f" ({r['budget']} budget)"),
                f"{r['paper model']}, {r['paper params (M)']}M",
                ours,
                "—",
                "exact",
                "computed on this page",
                "reproduced" if count_ok and (r["match"] or not derived) else "differs",
            )
        )
    return rows


def mnist_rows(scales=SCALES):
    """Fig. 4: along the primal the error correlates with Var(K); along the dual a larger beta_e
    does not improve it."""
    rec, profile = best("mnist", "correlations", scales)
    if rec is None:
        return [
            _not_run(
                "Fig. 4: primal, error highly correlated with Var(K_e)",
                "“highly correlated”",
                "about an hour on a 2-core CPU (cpu-evidence profile)",
            ),
            _not_run(
                "Fig. 4: dual, larger β_e does not improve the error",
                "“does not improve”",
                "about an hour on a 2-core CPU (cpu-evidence profile)",
            ),
        ]
    rows = []
    for r in rec["data"]["rows"]:
        if r["curve"] == "primal" and r["against"] == "var" and r["measure"] in ("pearson", "spearman"):
            rows.append(
                _row(
                    f"Fig. 4: primal, {r['measure'].capitalize()}(error, Var(K_e)), {r['models']} models × "
                    f"{r['reps']} repetitions",
                    "“highly correlated” (> 0)",
                    f"{r['value']:.2f}",
                    _ci(r["lo"], r["hi"]),
                    profile,
                    run_of(rec),
                    verdict(None, r["lo"], r["hi"], +1),
                )
            )
        if r["curve"] == "dual" and r["measure"] == "spearman":
            rows.append(
                _row(
                    f"Fig. 4: dual, Spearman(error, β_e), {r['models']} models × {r['reps']} repetitions",
                    "“does not improve” (not < 0)",
                    f"{r['value']:.2f}",
                    _ci(r["lo"], r["hi"]),
                    profile,
                    run_of(rec),
                    verdict(None, r["lo"], r["hi"], 0),
                )
            )
    return rows


#: The dataset each table trains on.
TABLE_DATASET = {"1a": "cifar10", "1b": "cifar10", "5": "cifar10", **imagenet.TABLES}


def _flops(arch, config, classes, resolution):
    return cxm.complexity(arch, config, classes=classes, resolution=resolution)["flops"]


def cost(row, speeds, runs):
    """What training ``row`` (a :data:`cepaper.sections.paper.MODELS` row) ``runs`` times would cost here: the
    recipe's epochs over the training set at a measured speed (``speeds``: throughput rows with
    ``arch, config, resolution, images_per_s``), its own or, for an unmeasured model, that of the
    measured model nearest in resolution, scaled by the FLOP ratio. A sentence."""
    dataset = TABLE_DATASET[row["table"]]
    images = cifar.TRAIN_IMAGES if dataset == "cifar10" else imagenet.TRAIN_IMAGES
    rec = recipes.recipe(recipes.DATASET_RECIPE[dataset])
    epochs, resolution = rec.epochs, rec.resolution
    if not speeds:
        return f"{runs} runs × {epochs} epochs of {dataset}; no training speed measured in this book"
    own = sorted(
        (
            t
            for t in speeds
            if t["arch"] == row["arch"] and t["config"] == row["config"] and t["resolution"] == resolution
        ),
        key=lambda t: t.get("table") != row["table"],
    )
    ref = (
        own[0]
        if own
        else min(speeds, key=lambda t: (abs(math.log(t["resolution"] / resolution)), t["arch"] != row["arch"]))
    )
    ips = ref["images_per_s"]
    if not own:
        ips *= _flops(ref["arch"], ref["config"], row["classes"], ref["resolution"]) / _flops(
            row["arch"], row["config"], row["classes"], resolution
        )
    hours = runs * epochs * sgd.epoch_hours(images, ips)
    how = "measured" if own else f"estimated from {ref['arch']} {ref['config']}'s measured speed by FLOPs"
    return (
        f"{hours:,.0f} CPU-hours on this book's CPU ({runs} runs × {epochs} epochs of {dataset} at "
        f"{ips:.1f} images/s, {how}); GPU time not measured here"
    )


def error_rows(scales=SCALES, runs=None):
    """Each error of Tables 1-5: ours from a committed training run (the paper's statistic, the recipe
    of the row: single-GPU for § rows), else "not run" with the cost of ``runs`` runs (default: the
    paper's, :data:`cepaper.sections.paper.STATISTICS`) at the training speed this book measured
    (``cifar/throughput``, ``imagenet/throughput``)."""
    runs = runs or {k: v["runs"] for k, v in paper.STATISTICS.items()}
    speeds = []
    for section in ("cifar", "imagenet"):
        rec, _ = best(section, "throughput", (*scales, "quick"))
        speeds += (rec or {}).get("data", {}).get("rows", [])
    trained = {}
    for section in ("cifar", "imagenet"):
        rec, profile = best(section, "summary", scales)
        if rec is not None and not rec["data"].get("scaled", False):
            for t in rec["data"]["rows"]:
                trained[(t["dataset"], t["arch"], t["config"], t.get("recipe"))] = (t, profile, rec)
    z = stats.norm.ppf(0.975)
    rows = []
    for r in paper.MODELS:
        if r["config"] is None:
            continue
        section = "cifar" if r["table"] in ("1a", "1b", "5") else "imagenet"
        printed = (
            f"C10 {r['c10']}, C100 {r['c100'] if r['c100'] is not None else '—'}"
            if section == "cifar"
            else f"top-1 {r['top1']}, top-5 {r['top5']}"
        )
        dataset = TABLE_DATASET[r["table"]]
        value = r["c10"] if section == "cifar" else r["top1"]
        recipe = (
            ("cifar_1gpu" if "§" in r["model"] else "cifar") if section == "cifar" else recipes.DATASET_RECIPE[dataset]
        )
        hit = trained.get((dataset, r["arch"], r["config"], recipe))  # a § row stands beside its single-GPU runs
        if hit is not None and hit[0]["runs"] >= 2 and hit[0]["top1_sem"] is not None:
            t, profile, rec = hit
            lo, hi = t["top1"] - z * t["top1_sem"], t["top1"] + z * t["top1_sem"]
            rows.append(
                _row(
                    f"Table {r['table']}: {r['model']} ({dataset} top-1 error, %)",
                    f"{value}",
                    f"{t['top1']:.2f} ({t['runs']} runs)",
                    _ci(lo, hi),
                    profile,
                    run_of(rec),
                    verdict(value, lo, hi),
                    (value, t["top1"], lo, hi),
                )
            )
            continue
        rows.append(_not_run(f"Table {r['table']}: {r['model']}", printed, cost(r, speeds, runs[section])))
    return rows


def table(scales=SCALES, level=0.95):
    """Every row, in the paper's order; ``group`` is ``method`` (theory, design, Fig. 4) or ``training``
    (the errors of Tables 1-5)."""
    method = (
        lemma1_rows(scales, level) + theorem1_rows(scales) + alpha_rows(scales) + design_rows() + mnist_rows(scales)
    )
    rows = [{**r, "group": "method"} for r in method] + [{**r, "group": "training"} for r in error_rows(scales)]
    for r in rows:
        r.setdefault("cost", "—")
    return rows


def page_table(rows, group):
    """The rows of ``group`` as the page shows them: the interval beside our number, the scale with the run."""
    out = []
    for r in rows:
        if r["group"] != group:
            continue
        ours = r["ours"] if r["interval"] in ("—", None) else f"{r['ours']} {r['interval']}"
        run = "—" if r["scale"] == "—" else r["run"] if r["scale"] == "exact" else f"{r['run']}"
        row = {"claim": r["claim"], "paper": r["paper"], "ours [interval]": ours, "run": run, "verdict": r["verdict"]}
        if group == "training":
            row = {
                "claim": r["claim"],
                "paper": r["paper"],
                "ours [interval]": ours,
                "verdict": r["verdict"],
                "what running it would cost": r["cost"],
            }
        elif r["verdict"] == "not run":
            row["run"] = f"not run: {r['cost']}"
        out.append(row)
    return out


#: Colours of the verdicts in :func:`plot`.
COLORS = {"reproduced": "tab:green", "consistent": "tab:olive", "inconclusive": "tab:orange", "differs": "tab:red"}


def plot(rows):
    """Every claim with a printed number and our interval, as ours over the paper's (1: the paper's
    value), coloured by verdict; ``None`` when no row has one."""
    import matplotlib.pyplot as plt

    est = [r for r in rows if r.get("estimate")]
    if not est:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(est) + 1.2))
    for i, r in enumerate(est):
        p, v, lo, hi = r["estimate"]
        a, b = sorted((lo / p, hi / p))
        ax.errorbar(v / p, i, xerr=[[v / p - a], [b - v / p]], fmt="o", capsize=3, color=COLORS[r["verdict"]])
    ax.axvline(1, color="k", ls=":", lw=1)
    ax.set_yticks(range(len(est)), [r["claim"].split(" (")[0] for r in est], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ours / the paper's value (95% interval)")
    for verdict_, color in COLORS.items():
        ax.plot([], [], "o", color=color, label=verdict_)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def counts(rows):
    """``{verdict: count}`` over ``rows``, in :data:`VERDICTS` order."""
    return {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
