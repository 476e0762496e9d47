"""How a table reads on a page: no index column, "—" where a value is undefined or absent, numbers
rounded to what they mean, data sources named relative to the data root (no machine paths)."""

import itertools
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
