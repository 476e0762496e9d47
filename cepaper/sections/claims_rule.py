"""The rule of the claims page: where a claim's results are read, one verdict rule for every kind of
claim, and the rows and readings it fills (:mod:`cepaper.sections.claims`)."""

import warnings

from cepaper.book import results

#: Profiles whose committed results count as evidence, best first.
SCALES = ("paper", "cpu-evidence")
VERDICTS = ("reproduced", "consistent", "inconclusive", "differs", "cannot tell", "not run", "result file damaged")


class DamagedWarning(UserWarning):
    """A results file a claim reads is damaged: its claims say so (:func:`marked_damaged`) and the page
    still builds. The message is the :class:`~cepaper.book.results.DamagedResult`'s."""


def best(section, name, scales=SCALES):
    """``(record, profile)`` of the first stored ``section/name`` among ``scales``, or ``(None, None)``."""
    for profile in scales:
        try:
            record = results.find(section, name, profiles=(profile,))
        except results.DamagedResult as e:  # the claims it holds are marked, the rest of the page stands
            warnings.warn(str(e), DamagedWarning, stacklevel=2)
            continue
        if record is not None:
            return record, profile
    return None, None


def marked_damaged(rows_of, *args):
    """``rows_of(*args)``, its claims that found no result marked ``result file damaged`` with the file
    and how to restore it, when a file it read was damaged (:class:`DamagedWarning`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedWarning)
        rows = rows_of(*args)
    damaged = [str(w.message) for w in caught if issubclass(w.category, DamagedWarning)]
    for w in caught:
        if not issubclass(w.category, DamagedWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not damaged:
        return rows
    note = "; ".join(damaged)
    marked = [r | {"verdict": VERDICTS[-1], "ours": note} if r["verdict"] == "not run" else r for r in rows]
    if marked == rows:  # every claim still had a result: the damage is said beside the first one's run
        marked[0] = marked[0] | {"run": f"{marked[0]['run']}; {note}"}
    return marked


def run_of(record):
    """The run behind a record, for a table cell: ``profile @ commit, date``."""
    p = record["provenance"]
    commit = (p.get("git_commit") or "unknown")[:7]
    return f"{p['profile']} @ {commit}, {p['date'][:10]}"


def verdict(paper_value, lo, hi, direction=None):
    """The verdict of an interval ``[lo, hi]`` against a printed number or, with ``direction``
    (``+1``: positive, ``-1``: negative, ``0``: not negative), against a claimed sign.

    One rule for every direction: ``consistent`` when the interval lies on the claimed side,
    ``differs`` when it lies on the other, ``inconclusive`` when it holds both. For ``0`` ("does not
    improve": a negative correlation would contradict it) the claimed side is ``lo >= 0``."""
    if direction is None:
        return "reproduced" if lo <= paper_value <= hi else "differs"
    if direction == 0:
        return "consistent" if lo >= 0 else "differs" if hi < 0 else "inconclusive"
    side = lo > 0 if direction > 0 else hi < 0
    other = hi < 0 if direction > 0 else lo > 0
    return "consistent" if side else "differs" if other else "inconclusive"


def claim_row(claim, paper_text, ours, interval, scale, run, verdict_, estimate=None, readings=None, evidence=None):
    """One claim; ``estimate``: ``(paper, ours, lo, hi)`` numbers where the paper prints one;
    ``readings``: the claim under every declared reading of the paper (:func:`reading`), the primary
    one first (the row's own verdict); ``evidence``: ``(section, heading)`` of the page part that holds
    the evidence (``heading`` ``None``: the page)."""
    return {
        "claim": claim,
        "paper": paper_text,
        "ours": ours,
        "interval": interval,
        "scale": scale,
        "run": run,
        "verdict": verdict_,
        "estimate": None if estimate is None else [float(v) for v in estimate],
        "readings": readings or [],
        "summary": summary(readings) if readings else "",
        "evidence": list(evidence) if evidence else None,
    }


#: Verdicts under which a claim holds.
HOLDS = ("reproduced", "consistent")


def reading(name, ours, interval, verdict_, primary=False, why="", note=""):
    """One reading of a claim: its name, our number and interval under it, its verdict, whether it
    is the primary reading, and why the paper allows it (the paper's words)."""
    return dict(reading=name, ours=ours, interval=interval, verdict=verdict_, primary=primary, why=why, note=note)


def summary(readings):
    """``"holds under k of K readings"``: ``K`` counts the readings the runs can tell (``cannot tell``
    readings are named apart)."""
    told = [r for r in readings if r["verdict"] != "cannot tell"]
    held = sum(r["verdict"] in HOLDS for r in told)
    rest = len(readings) - len(told)
    return f"holds under {held} of {len(told)} readings" + (f" ({rest} cannot tell)" if rest else "")


def not_run(claim, paper_text, cost):
    return claim_row(claim, paper_text, "—", "—", "—", "—", "not run") | {"cost": cost}


def ci(lo, hi, digits=2):
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def primary_of(row):
    return next((r for r in row["readings"] if r["primary"]), None)


def others(row, held=True):
    """The readings of ``row`` other than the primary under which it holds (``held``) or not."""
    return [r for r in row["readings"] if not r["primary"] and (r["verdict"] in HOLDS) == held]


def names(readings):
    return "; ".join(f"{r['reading']} ({r['ours']} {r['interval']})".replace(" —", "") for r in readings)
