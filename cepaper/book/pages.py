"""How a table reads on a page: no index column, "—" where a value is undefined or absent, numbers
rounded to what they mean, data sources named relative to the data root (no machine paths)."""

import html
import itertools
import math
from numbers import Integral, Real

DASH = "—"


def cell(value, digits=None):
    """One cell as text: ``DASH`` for ``None``/NaN, ✓/✗ for booleans, integers as they are, other reals
    to ``digits`` decimals or, by default (``None``), to 3 significant figures but never fewer than the
    integer digits (trailing zeros dropped; below 1e-4 in scientific notation), anything else ``str``."""
    if value is None or (isinstance(value, Real) and not isinstance(value, Integral) and math.isnan(value)):
        return DASH
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):
        return "✓" if value else "✗"
    if isinstance(value, Integral):
        return str(value)
    if isinstance(value, Real):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if digits is None:
            if value != 0 and abs(value) < 1e-4:
                return f"{value:.2e}"
            digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
        text = f"{value:.{digits}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
        return "0" if text in ("-0", "") else text
    return str(value)


def duration(seconds):
    """Seconds as a person reads a duration: ``4.5 s``, ``26.3 min``, ``1.25 h`` (``DASH`` when unknown)."""
    if seconds is None or seconds != seconds:
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def breakable(text, longest=20):
    """``text`` with a line-break opportunity (``<wbr>``) after each ``.``, ``:``, ``/`` and ``_`` of its
    words longer than ``longest`` characters, so that a long name (``cepaper.sections.design:mixer_channel_block``)
    wraps in a table cell instead of widening the table. Cells are HTML (a cell may hold a link): words with
    markup are left as they are."""
    import re

    words = re.split(r"(\s+)", str(text))
    return "".join(re.sub(r"([.:/_])", r"\1<wbr>", w) if len(w) > longest and "<" not in w else w for w in words)


def show(df, digits=None, headers=None):
    """A ``pandas`` Styler of ``df`` (a DataFrame, or rows as dicts) for a page: index hidden, every
    cell :func:`cell` (``digits``: ``None`` for 3 significant figures, an int of decimals for all
    columns, or a dict column -> either, the others ``None``), and column headers in words: ``headers``
    (a dict code name -> header) first, then :data:`HEADERS`; other names stay as they are."""
    import pandas as pd

    df = pd.DataFrame(df).reset_index(drop=True)
    per = digits if isinstance(digits, dict) else {}
    default = None if isinstance(digits, dict) else digits
    fmt = {c: per.get(c, default) for c in df.columns}
    names = {**HEADERS, **(headers or {})}
    styler = df.style.hide(axis="index").format({c: (lambda v, d=fmt[c]: breakable(cell(v, d))) for c in df.columns})
    return styler.relabel_index([names.get(c, c) if isinstance(c, str) else c for c in df.columns], axis="columns")


def checks(data):
    """The table of a run's checks of the paper's claims (``data``: the ``checks`` result of
    :meth:`cepaper.book.results.Run.check`, or its list of checks): what is checked, ✓/✗, what the run
    measured."""
    rows = [
        {
            "check": html.escape(c["name"], quote=False),
            "holds": c["holds"],
            "detail": html.escape(c["detail"], quote=False),
        }
        for c in (data["checks"] if isinstance(data, dict) else data)
    ]
    return show(rows or {"check": [], "holds": [], "detail": []}, headers=CHECK_HEADERS)


#: The headers of :func:`checks`.
CHECK_HEADERS = {"check": "check of the paper's claims", "holds": "holds", "detail": "what this run measured"}


#: Headers in words for the code names that the book's tables share (a notebook passes its own to :func:`show`).
HEADERS = {
    # intervals and tests
    "lo": "lower end",
    "hi": "upper end",
    "se": "SE",
    "sem": "SE",
    "p_value": "p-value",
    "p_exact": "p-value exact",
    "reps": "repetitions",
    "n_boot": "bootstrap resamples",
    "wall_s": "time (s)",
    "seconds": "time (s)",
    # the NMK against K_inf (lemma1)
    "max_z_diag": "largest |z| on the diagonal (SE)",
    "max_z_off": "largest |z| off the diagonal (SE)",
    "max_dev_off": "largest deviation off the diagonal (× K∞(x, x))",
    "se_off": "its largest SE (× K∞(x, x))",
    # alpha and the optima it gives
    "alpha_large": "α, wider widths",
    "lo_large": "lower end, wider widths",
    "hi_large": "upper end, wider widths",
    "paper_config": "paper's optimum",
    "config_lo": "optimum at the lower end of α",
    "config_hi": "optimum at the upper end of α",
    "config_paper_alpha": "optimum at the paper's α",
    "alpha_min": "same optimum from α",
    "alpha_max": "to α",
    "n_in": "input channels",
    "trials": "draws per width",
    "arch": "architecture",
    # training runs
    "m_exact": "m (continuous)",
    "params_ratio": "parameters / baseline's",
    "var_ratio": "Var(K_e) / baseline's",
    "var": "Var(K_e)",
    "n_tilde": "baseline width ñ",
    "train_images": "training images",
    "test_images": "test images",
    "lr": "step size",
    "change_se": "SE of the change",
    "images_per_s": "images per second",
    "gflops": "GFLOPs",
    "top1": "top-1 error (%)",
    "top1_sem": "SE of top-1 (points)",
    "top5": "top-5 error (%)",
    # fits of Theorem 1's exponent
    "all": "all runs (in mn)",
    "single": "single models (in n)",
    "ensemble_b": "ensembles m = n = d (in mn)",
    "width_c": "constant width n_c (in m)",
}


#: How a caption names the scale of each profile's run.
SCALE = {
    "quick": "the quick profile (reduced scale, never evidence)",
    "cpu-evidence": "the CPU-evidence scale (profile cpu-evidence)",
    "paper": "the paper's scale (profile paper)",
}

_number = itertools.count(1)


def caption_text(caption, number, paper=None, profile=None, where=None):
    """The full caption of figure ``number``: ``Figure 3. Fig. 8 of the paper: <caption> At <scale>,
    from the run in <where>.`` (``paper``, ``profile`` and ``where`` are optional)."""
    text = caption.strip()
    if paper is not None:
        text = f"Fig. {paper} of the paper: {text}"
    if not text.endswith("."):
        text += "."
    if profile is not None:
        scale = SCALE.get(profile, f"profile {profile}")
        text += f" At {scale}" + (f", from the run in {where}" if where else "") + "."
    return f"Figure {number}. {text}"


def figure_html(png, caption):
    """``<figure>`` HTML of PNG bytes with ``caption`` as its alt text and its ``<figcaption>``."""
    import base64
    import html

    alt = html.escape(caption, quote=True)
    number, _, rest = caption.partition(". ")
    return (
        f'<figure class="cepaper-figure"><img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
        f'alt="{alt}"><figcaption><strong>{html.escape(number)}.</strong> {html.escape(rest)}</figcaption></figure>'
    )


def _figure_of(obj):
    """The matplotlib Figure of a Figure, an Axes, or an array/list of Axes."""
    import numpy as np

    if hasattr(obj, "savefig"):
        return obj
    if hasattr(obj, "figure"):
        return obj.figure
    first = np.ravel(np.asarray(obj, dtype=object))[:1]
    if len(first) and hasattr(first[0], "figure"):
        return first[0].figure
    raise TypeError(f"figure needs a matplotlib Figure, Axes or array of Axes, got {type(obj).__name__}")


def thin_tick_labels(fig, pad=2.0):
    """Hide tick labels that overlap a label drawn before them (major ticks first, left to right), so
    close log ticks such as 400 and 576 do not print as "400576". Returns how many were hidden."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    hidden = 0
    for ax in fig.axes:
        if ax.name != "rectilinear":
            continue
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            kept = []
            for ticks in (axis.get_major_ticks(), axis.get_minor_ticks()):
                for tick in sorted(ticks, key=lambda t: t.get_loc()):
                    label = tick.label1
                    if not (label.get_visible() and label.get_text() and lo <= tick.get_loc() <= hi):
                        continue
                    box = label.get_window_extent(renderer).expanded(1, 1).padded(pad)
                    if any(box.overlaps(k) for k in kept):
                        label.set_visible(False)
                        hidden += 1
                    else:
                        kept.append(box)
    return hidden


def _legends_outside(fig):
    """Move every axes' legend to the right of its axes, off the data."""
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            handles, labels = ax.get_legend_handles_labels()
            size = legend.get_texts()[0].get_fontsize() if legend.get_texts() else None
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=size)


def figure(fig, caption, paper=None, run=None, legend=None, dpi=110):
    """Show ``fig`` once on a page, numbered and captioned, and close it (so the inline backend does
    not show it again); returns nothing, so a cell ending in it shows nothing more.

    ``fig``: a matplotlib Figure, Axes or array of Axes. ``caption``: what is drawn (plain text, no TeX).
    ``paper``: the number of the paper's figure it reproduces (``"8"`` reads "Fig. 8 of the paper: ...").
    ``run``: the :class:`cepaper.book.results.Run` it is drawn from: the caption names its scale (profile)
    and results folder. ``legend="outside"`` moves legends off the data. Figures are numbered 1, 2, ...
    in the order a kernel shows them (one notebook, one page). Overlapping tick labels are hidden
    (:func:`thin_tick_labels`); a figure whose layout was not set is laid out tight.
    """
    import io
    import warnings

    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    fig = _figure_of(fig)
    if legend == "outside":
        _legends_outside(fig)
    elif legend is not None:
        raise ValueError(f"legend must be None or 'outside', got {legend!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fig.get_layout_engine() is None and vars(fig.subplotpars) == vars(type(fig.subplotpars)()):
            fig.tight_layout()
        thin_tick_labels(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    where = run.where() if run is not None else None
    text = caption_text(caption, next(_number), paper, run.profile if run is not None else None, where)
    display(HTML(figure_html(buf.getvalue(), text)))


# ------------------------------------------------------------------------- links between pages


def anchor(text):
    """The HTML id Sphinx gives a heading of this text (docutils' ``make_id``); stable while the text is."""
    from docutils.nodes import make_id

    return make_id(text)


def link(text, href):
    """An HTML link for a table cell or a paragraph."""
    return f'<a href="{html.escape(href, quote=True)}">{html.escape(text, quote=False)}</a>'


def at_scale(section, profiles=None):
    """The profile of the best committed run of ``section`` among ``profiles`` (default ``paper``, then
    ``cpu-evidence``): the first whose executed notebook is stored with its results, or ``None``."""
    from cepaper.book import results
    from cepaper.book.publish import STORED

    profiles = results.EVIDENCE if profiles is None else profiles
    return next((p for p in profiles if (results.section_dir(section, p) / STORED).exists()), None)


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
