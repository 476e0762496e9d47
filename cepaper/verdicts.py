"""Whether a design of Algorithm 2 beats its baseline on its own budget, and what the timings resolve
(:func:`judge`, on :func:`cepaper.search.any_module.design_module`'s results): the verdict ``"optimum"`` or
``"no improvement found"``, with notes on the rounding of step 6 and, under latency, on every decision the
spread of the timings leaves open."""

import numpy as np

VERDICTS = ("optimum", "no improvement found")


def _some(items, k=5):
    """``a, b, c`` (at most ``k`` items, then ``and N more``)."""
    items = [str(v) for v in items]
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def judge(d, c, i, module=None):
    """Whether a design beats its baseline on its own budget, and what the timings resolve (latency).

    The primal (Eq. 12) beats the baseline when its ``Var(K)`` at the integer ``m`` is below the baseline's
    (``var_ratio < 1``), the dual (Eq. 14) when it costs less (``rho > 1``); else the search found no
    improvement and the verdict says so, never "optimum". Notes name a budget that the rounding of step 6
    overshoots, and, under latency, every decision that the timings' spread (IQR) does not resolve:

    * the optimum width: another width ``n_j`` whose ``var_k(n_j) x q25(n_j)`` lies below the optimum's
      ``var_k(n) x q75(n)`` (both objectives rank widths by ``var_k(n) beta(n)``);
    * the design against the baseline (the dual's verdict): their latencies' interquartile ranges overlap;
    * the integer ``m`` of step 6 (primal): ``m +- 1`` members' latencies differ from ``m``'s by less than
      the mean of the two IQRs (``module``'s cached timings, measured here if missing);
    * a timing whose IQR exceeds its median.

    Args:
        d: a :func:`cepaper.search.any_module.design_module` result (before this).
        c: its curve (:func:`cepaper.search.equations.curve`).
        i: the optimum's index.
    Returns:
        dict: ``improves`` (bool), ``verdict`` (:data:`VERDICTS`), ``notes`` (sentences), and under latency
        ``timings_resolved`` (``False`` when the spread leaves any decision above open).
    """
    primal, what = d["objective"] == "primal", {"params": "parameters", "flops": "FLOPs"}.get(d["budget"], "latency")
    improves = bool(d["var_ratio"] < 1) if primal else bool(d["rho"] > 1)
    notes = []
    if not improves:
        detail = (
            f"Var(K) is {d['var_ratio']:.3g}x the baseline's at the baseline's {what} (the primal needs < 1)"
            if primal
            else f"the {what} is {1 / d['rho']:.3g}x the baseline's at the baseline's Var(K) (the dual needs < 1)"
        )
        notes.append(f"no width searched beats the baseline {d['baseline']}: at the best, {d['config']}, {detail}")
    rounded = f"m = {d['m_exact']:.2f} rounded to {d['m']}"
    if primal and d["cost"] > d["baseline_cost"]:
        notes.append(
            f"{d['config']} costs {d['cost'] / d['baseline_cost']:.4g}x the baseline's {what} ({rounded}; "
            f"rounding floor stays within it)"
        )
    if not primal and d["var_ratio"] > 1:
        notes.append(
            f"{d['config']} has {d['var_ratio']:.4g}x the baseline's Var(K) ({rounded}; rounding ceil meets it)"
        )
    out = {"improves": improves, "verdict": VERDICTS[0] if improves else VERDICTS[1]}
    if d["budget"] != "latency":
        return out | {"notes": notes}
    noisy = []
    lo, hi = np.asarray(c["var_k"]) * np.asarray(c["beta_q25"]), np.asarray(c["var_k"]) * np.asarray(c["beta_q75"])
    rivals = [int(n) for j, n in enumerate(c["n"]) if j != i and lo[j] <= hi[i]]
    if rivals:
        noisy.append(
            f"the timings' spread exceeds the differences that decide the optimum width: at n = "
            f"{_some(rivals)}, Var(K) x latency (quartiles) overlaps n = {d['n']}'s"
        )
    a, b = d["latency"], d["baseline_latency"]
    same = d["config"] == d["baseline"]  # the baseline itself: one timing, nothing to resolve
    if not primal and not same and a["q25"] <= b["q75"] and b["q25"] <= a["q75"]:  # the dual's verdict
        noisy.append(
            f"the latencies of {d['config']} ({a['median']:.3g} s, IQR {a['iqr']:.3g} s) and of the baseline "
            f"({b['median']:.3g} s, IQR {b['iqr']:.3g} s) overlap: the timings do not resolve which is faster"
        )
    if primal and module is not None:
        n, m = d["n"], d["m"]
        for k in (m - 1, m + 1):
            if k >= 1:
                module.cost(n, "latency", groups=k)
                near, at = module.latencies[(k, n)], module.latencies[(m, n)]
                if abs(near["median"] - at["median"]) < (near["iqr"] + at["iqr"]) / 2:
                    noisy.append(
                        f"step 6's m is not resolved: {k} and {m} members of width {n} differ in latency by "
                        f"less than their spread"
                    )
                    break
    timings = [("the baseline", b), (d["config"], a)] + [
        (f"the member of width {int(n)}", {"median": md, "iqr": q})
        for n, md, q in zip(c["n"], c["beta"], c["beta_iqr"])
    ]
    wild = [name for name, t in timings if t["iqr"] > t["median"]]
    if wild:
        noisy.append(f"the IQR exceeds the median for {_some(wild)}: time with more --repeats or a quieter machine")
    return out | {"notes": notes + noisy, "timings_resolved": not noisy}
