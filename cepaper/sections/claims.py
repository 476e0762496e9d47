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

import html

from cepaper.book import pages
from cepaper.sections._shared import markdown, show  # noqa: F401 (the notebook's)
from cepaper.sections.claims_design import TABLE_DATASET, cost, design_rows, error_rows, fig3_cause, rounding_cause
from cepaper.sections.claims_rule import (
    HOLDS,
    SCALES,
    VERDICTS,
    best,
    marked_damaged,
    reading,
    run_of,
    summary,
    verdict,
)
from cepaper.sections.claims_theory import (
    alpha_cause,
    alpha_rows,
    exponent_cause,
    lemma1_rows,
    mnist_rows,
    pooled_cause,
    scale_cause,
    theorem1_rows,
)

__all__ = [
    "HOLDS",
    "SCALES",
    "TABLE_DATASET",
    "VERDICTS",
    "alpha_rows",
    "best",
    "causes",
    "cost",
    "counts",
    "design_rows",
    "error_rows",
    "keys",
    "lemma1_rows",
    "mnist_rows",
    "page_table",
    "plot",
    "reading",
    "readings_tables",
    "run_of",
    "summary",
    "table",
    "theorem1_rows",
    "verdict",
]


def table(scales=SCALES, level=0.95):
    """Every row, in the paper's order; ``group`` is ``method`` (theory, design, Fig. 4) or ``training``
    (the errors of Tables 1-5)."""
    method = (
        marked_damaged(lemma1_rows, scales, level)
        + marked_damaged(theorem1_rows, scales)
        + marked_damaged(alpha_rows, scales)
        + marked_damaged(design_rows, scales)
        + marked_damaged(mnist_rows, scales)
    )
    training = marked_damaged(error_rows, scales)
    rows = [{**r, "group": "method"} for r in method] + [{**r, "group": "training"} for r in training]
    for r in rows:
        r.setdefault("cost", "—")
    return rows


def keys(rows):
    """A stable id per row for links within the claims page: the claim up to its first ``;``, as an
    HTML id (a repeat gets ``-2``, ``-3``...)."""
    out, seen = [], {}
    for r in rows:
        k = pages.anchor(r["claim"].split(";")[0].split(" (")[0])
        seen[k] = seen.get(k, 0) + 1
        out.append(k if seen[k] == 1 else f"{k}-{seen[k]}")
    return out


def _run_cell(r):
    """The run behind a row, linked to its line on the runs page."""
    if r["scale"] in ("—", "exact"):
        return r["run"]
    section = (r["evidence"] or [None])[0]
    if section is None:
        return r["run"]
    return pages.link(r["run"], f"runs.html#{pages.run_anchor(r['scale'], section)}")


def page_table(rows, group, causes_=None):
    """The rows of ``group`` as the page shows them: the interval beside our number, the verdict linked
    to its cause (``causes_``: :func:`causes`), the readings' summary linked to their table, the evidence
    (the part of the section page that holds it) and the run (its line on the runs page)."""
    causes_ = causes_ or {}
    ids = keys(rows)
    out = []
    for i, r in enumerate(rows):
        if r["group"] != group:
            continue
        ours = r["ours"] if r["interval"] in ("—", None) else f"{r['ours']} {r['interval']}"
        verdict_ = pages.link(r["verdict"], f"#why-{ids[i]}") if i in causes_ else r["verdict"]
        readings = pages.link(r["summary"], f"#readings-{ids[i]}") if r["readings"] else "—"
        evidence = "—"
        if r["evidence"]:
            section, heading = r["evidence"]
            evidence = pages.link(
                f"{section} page" + (" at scale" if pages.at_scale(section) else ""), pages.page_href(section, heading)
            )
        claim = f'<span id="{ids[i]}"></span>{html.escape(r["claim"], quote=False)}'
        if group == "training":
            row = {
                "claim": claim,
                "paper": r["paper"],
                "ours [interval]": ours,
                "verdict": verdict_,
                "evidence": evidence,
                "what running it would cost": r["cost"],
            }
        else:
            row = {
                "claim": claim,
                "paper": r["paper"],
                "ours [interval]": ours,
                "verdict": verdict_,
                "readings": readings,
                "evidence": evidence,
                "run": f"not run: {r['cost']}" if r["verdict"] == "not run" else _run_cell(r),
            }
        out.append(row)
    return out


def readings_tables(rows):
    """``[(id, claim, summary, table)]`` for every row with readings: one table row per reading."""
    ids = keys(rows)
    out = []
    for i, r in enumerate(rows):
        if not r["readings"]:
            continue
        table = [
            {
                "reading": ("primary: " if x["primary"] else "") + x["reading"],
                "ours [interval]": x["ours"] if x["interval"] in ("—", None) else f"{x['ours']} {x['interval']}",
                "verdict": x["verdict"],
                "why the paper allows it": x["why"],
                "note": x["note"] or "—",
            }
            for x in r["readings"]
        ]
        out.append((ids[i], r["claim"], r["summary"], table))
    return out


def _short(claim, width=60):
    """A claim's label for a figure: up to its first ``;`` or ``(``, at most ``width`` characters."""
    text = claim.split(";")[0].split(" (")[0].strip()
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


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
    ax.set_yticks(range(len(est)), [_short(r["claim"]) for r in est], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ours / the paper's value (95% interval)")
    for verdict_, color in COLORS.items():
        ax.plot([], [], "o", color=color, label=verdict_)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def counts(rows):
    """``{verdict: count}`` over ``rows``, in :data:`VERDICTS` order (damaged files only when there are any)."""
    n = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return {v: k for v, k in n.items() if k or v != "result file damaged"}


# ------------------------------------------------------------------------ causes of a "differs"


def causes(rows, scales=SCALES):
    """``{index: paragraph}``: for every row that differs or is inconclusive, the cause found or the
    candidate causes, each with the run that rules it in or out, computed from the records."""
    out = {}
    for i, r in enumerate(rows):
        if r["verdict"] not in ("differs", "inconclusive"):
            continue
        section = (r["evidence"] or [None])[0]
        if section == "alpha":
            out[i] = alpha_cause(r, scales)
        elif section == "theorem1_flow":
            out[i] = exponent_cause(r)
        elif section == "theorem1":
            out[i] = pooled_cause(rows)
        elif r["claim"].startswith("Fig. 3"):
            out[i] = fig3_cause(r)
        elif section == "primal_dual":
            out[i] = rounding_cause(r)
        elif section == "mnist":
            out[i] = scale_cause(r)
        elif section == "lemma1":
            out[i] = "The interval excludes the claimed value; the section page shows every width and entry."
    return out


# ------------------------------------------------------------------------ the page


def check_level(level):
    """``level``, the confidence level of the verdicts' intervals, checked to lie in (0, 1)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return level


def save(run, scales, level):
    """The claims (:func:`table` over the committed runs of ``scales``, best first, at ``level``), their keys,
    counts and causes, saved on ``run`` as ``claims``."""
    import pandas as pd

    rows = table(tuple(scales), level)
    data = {"rows": rows, "keys": keys(rows), "counts": counts(rows), "causes": causes(rows, tuple(scales))}
    run.save("claims", data | {"scales": scales, "level": level}, table=pd.DataFrame(rows))


def saved_causes(saved):
    """The saved ``claims``' causes, ``{row index: paragraph}`` (JSON keeps the indices as strings)."""
    return {int(i): text for i, text in saved["causes"].items()}


def counts_sentence(saved):
    """Markdown: how many of the saved ``claims`` each verdict has."""
    return markdown(
        " · ".join(f"**{v}**: {n}" for v, n in saved["counts"].items()) + f" (of {len(saved['rows'])} claims)."
    )


#: The caption of the figure of :func:`plot`.
PLOT_CAPTION = (
    "Every claim with a printed number, our estimate over the paper's value with its 95% interval, from the "
    "best committed run of each claim (its scale is in the tables below); green reproduced, red differs"
)


def plot_page(rows):
    """Show :func:`plot` of ``rows`` captioned (:func:`cepaper.book.pages.figure`) and return ``None``, or, when no
    row has an interval, return a sentence saying so."""
    fig = plot(rows)
    if fig is None:
        return markdown("No committed run has an interval yet: every such claim reads “not run” below.")
    pages.figure(fig, PLOT_CAPTION)


def readings_page(rows):
    """What the page shows of the readings: for each claim with readings (:func:`readings_tables`), an anchor
    ``readings-<key>``, the claim and its summary, then its table."""
    shown = []
    for key, claim, summary_, table_ in readings_tables(rows):
        shown += [markdown(f'<span id="readings-{key}"></span>\n\n**{claim}**: {summary_}.'), pages.show(table_)]
    return shown


def causes_page(saved):
    """Markdown for every row of the saved ``claims`` that differs or is inconclusive: an anchor ``why-<key>``,
    the claim and its verdict, then its cause."""
    ids, rows = saved["keys"], saved["rows"]
    return [
        markdown(f'<span id="why-{ids[i]}"></span>\n\n**{rows[i]["claim"]}** ({rows[i]["verdict"]}). {text}')
        for i, text in saved_causes(saved).items()
    ]
