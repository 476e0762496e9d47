"""How a table reads on a page: no index column, "—" where a value is undefined or absent, numbers
rounded to what they mean, data sources named relative to the data root (no machine paths)."""

import html
import math
from numbers import Integral, Real

DASH = "—"


def cell(value, digits=4):
    """One cell as text: ``DASH`` for ``None``/NaN, integers as they are, other reals with at most
    ``digits`` decimals (trailing zeros dropped), anything else ``str``."""
    if value is None or (isinstance(value, Real) and not isinstance(value, Integral) and math.isnan(value)):
        return DASH
    if isinstance(value, bool) or isinstance(value, Integral):
        return str(value)
    if isinstance(value, Real):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return str(value)


def show(df, digits=4):
    """A ``pandas`` Styler of ``df`` (a DataFrame, or rows as dicts) for a page: index hidden, every
    cell :func:`cell` (``digits``: an int for all columns, or a dict column -> int with 4 for the others)."""
    import pandas as pd

    df = pd.DataFrame(df).reset_index(drop=True)
    per = digits if isinstance(digits, dict) else {}
    default = 4 if isinstance(digits, dict) else digits
    fmt = {c: per.get(c, default) for c in df.columns}
    return df.style.hide(axis="index").format({c: (lambda v, d=fmt[c]: cell(v, d)) for c in df.columns})


# ------------------------------------------------------------------------- links between pages


def anchor(text):
    """The HTML id Sphinx gives a heading of this text (docutils' ``make_id``); stable while the text is."""
    from docutils.nodes import make_id

    return make_id(text)


def link(text, href):
    """An HTML link for a table cell or a paragraph."""
    return f'<a href="{html.escape(href, quote=True)}">{html.escape(text, quote=False)}</a>'


def at_scale(section):
    """The profile of the best committed run of ``section`` (``paper``, then ``cpu-evidence``), or ``None``."""
    from cepaper.book import results

    return next((p for p in results.EVIDENCE if (results.section_dir(section, p) / "notebook.ipynb").exists()), None)


def page_href(section, heading=None, scale=True):
    """The page of ``section`` in the built book (its page at scale when ``scale`` and one is committed,
    else its quick page), at ``heading`` when given: a link relative to ``book/sections/``."""
    from cepaper.book.profiles import notebook_path

    stem = notebook_path(section).stem
    page = f"{stem}_scale.html" if scale and at_scale(section) else f"{stem}.html"
    return page + (f"#{anchor(heading)}" if heading else "")


def run_anchor(profile, section):
    """The id of a committed run's row on the runs page."""
    return anchor(f"run {profile} {section}")
