"""The book: section pages copied from the executed notebooks, the pages *at scale* rendered from
committed runs (``results/{paper,cpu-evidence}/<section>/notebook.ipynb``), the runs page, and the
jupyter-book build."""

import html
import json
import os
import shutil
import sys
from pathlib import Path

from cepaper import files
from cepaper.book import pages, results
from cepaper.book.pipeline import BUILD, REPO, executed_path, run, run_child
from cepaper.book.profiles import SUMMARIES, notebook_path
from cepaper.book.publish import STORED

SECTIONS_DIR = REPO / "book" / "sections"


def runs_page(records, scale_records=()):
    """Markdown of the page that lists, per notebook, profile, device and execution time: the runs
    of the section pages, then the committed runs at scale (``scale_records``)."""
    head = [
        "| section | notebook (`notebooks/`) | profile | device | execution time | executed (UTC) | commit |",
        "|---|---|---|---|---:|---|---|",
    ]
    row = lambda r: (
        f"| {r['section']} | `{Path(r['notebook']).name}` | `{r['profile']}` | {r['device']} | "
        f"{pages.duration(r['wall_s']).replace(' ', chr(0xA0))} | {r['date'][:16].replace('T', ' ')} | "
        f"`{(r['git_commit'] or 'unknown')[:12]}` |"
    )
    lines = [
        "# Runs behind this book",
        "",
        "Every section page was executed by papermill through `cepaper run`; this table is "
        "written from the run records in `_build/executed/<profile>/`.",
        "",
        *head,
        *map(row, records),
    ]
    total = sum(r["wall_s"] for r in records)
    lines += ["", f"Total execution time: {pages.duration(total)}.", ""]
    if scale_records:
        lines += [
            "## Committed runs at scale",
            "",
            "The pages *at scale* show these runs, committed under `results/<profile>/<section>/` "
            "and rendered without re-executing. The execution time is the wall time of the run's last "
            "execution on its machine: a run that resumed from checkpoints of earlier executions (a training "
            "grid) counts only its last session, and its page says how long the work it resumed took.",
            "",
            "| section (profile) | device | execution time | executed (UTC) | commit, results folder |",
            "|---|---|---:|---|---|",
            *(
                f'| <span id="{pages.run_anchor(r["profile"], r["section"])}"></span>{r["section"]} '
                f"(`{r['profile']}`) | {r['device']} | {pages.duration(r['wall_s']).replace(' ', chr(0xA0))} | "
                f"{r['date'][:16].replace('T', ' ')} | `{(r['git_commit'] or 'unknown')[:12]}`, "
                f"results/<wbr>{r['profile']}/<wbr>{r['section']}/ |"
                for r in scale_records
            ),
            "",
        ]
    lines += ["## Parameters of each run", ""]
    for r in [*records, *scale_records]:
        params = ", ".join(f"`{k}={v!r}`" for k, v in r["params"].items())
        lines += [f"- **{r['section']}** (`{r['profile']}`): {params}"]
    return "\n".join(lines) + "\n"


#: Profiles whose committed runs the book shows beside the pages it builds, best first.
EVIDENCE = results.EVIDENCE


def stored_run(section, profiles=EVIDENCE):
    """``(profile, path)`` of the first executed notebook stored with a section's results
    (``results/<profile>/<section>/notebook.ipynb``) among ``profiles``, or ``(None, None)``."""
    profile = pages.at_scale(section, profiles)
    return (None, None) if profile is None else (profile, results.section_dir(section, profile) / STORED)


def _title(section):
    """The first heading of a section's notebook, without the leading ``#``."""
    import jupytext

    for cell in jupytext.read(notebook_path(section)).cells:
        for line in cell.source.splitlines():
            if cell.cell_type == "markdown" and line.startswith("# "):
                return line[2:].strip()
    return section


def changed_since(commit, section):
    """The files a section's page depends on (its notebook, the cepaper modules it imports
    transitively, the profiles) that changed between ``commit`` and the working tree, or ``None``
    when git cannot tell (no repository, an unknown commit)."""
    import subprocess

    from cepaper import runs

    path = notebook_path(section)
    deps = {str(path.relative_to(REPO)), *runs.dependencies(source=path.read_text(), root=REPO)}
    deps |= {f"profiles/{p}.yaml" for p in EVIDENCE}
    try:
        out = subprocess.run(
            ["git", "diff", "--name-only", commit.split("+")[0], "--", *sorted(deps)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return sorted(line for line in out.splitlines() if line)


def claims_banner(section, claims_record):
    """A line for a section's pages that links each claim the claims page reads from this section to
    its row there (``claims_record``: the claims page's stored ``claims`` data), or ``None``."""
    if not claims_record:
        return None
    data = claims_record["data"]
    mine = [
        (k, r) for k, r in zip(data.get("keys", []), data["rows"]) if r.get("evidence") and r["evidence"][0] == section
    ]
    if not mine:
        return None
    items = "; ".join(
        f'<a href="00_claims.html#{k}">{html.escape(r["claim"].split(";")[0], quote=False)}</a> ({r["verdict"]})'
        for k, r in mine
    )
    return f"**The claims this page is evidence for** ([claims page](00_claims.ipynb)): {items}."


def _plain(text):
    """``text`` with markdown's punctuation escaped, so it reads as written (``K_inf``, ``*``, ``$``)."""
    import re

    return re.sub(r"([\\`*_$<>\[\]#|~])", r"\\\1", str(text))


def checks_banner(checks_record):
    """A line for the top of a section's page that says whether the run's checks of the paper's claims
    (``checks_record``: its stored ``checks`` result, :meth:`cepaper.book.results.Run.check`) hold: "All N
    checks ... hold", or the ones that do not, with what the run measured; ``None`` without checks."""
    if not checks_record:
        return None
    checks = checks_record["data"].get("checks", [])
    if not checks:
        return None
    failing = [c for c in checks if not c["holds"]]
    table = '<a href="#checks">its table of checks</a>'
    if not failing:
        return f"✓ **All {len(checks)} checks of the paper's claims hold** on this run ({table})."
    items = "; ".join(f"{_plain(c['name'])}" + (f" ({_plain(c['detail'])})" if c["detail"] else "") for c in failing)
    return (
        f"✗ **{len(failing)} of {len(checks)} checks of the paper's claims do not hold on this run:** {items}. "
        f"The page shows what this run measured; {table} lists every check."
    )


def _under_title(nb, banner):
    """``nb`` with a markdown cell ``banner`` right under its title line (the title's cell split after
    its first line when prose follows it)."""
    import nbformat

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown")
    title, _, rest = nb.cells[first].source.partition("\n")
    nb.cells[first].source = title
    cells = [nbformat.v4.new_markdown_cell(banner)]
    if rest.strip():
        cells.append(nbformat.v4.new_markdown_cell(rest.strip("\n"), metadata=nb.cells[first].metadata))
    nb.cells[first + 1 : first + 1] = cells
    return _with_cell_ids(nb)


def with_checks(nb, section, profile):
    """``nb`` with :func:`checks_banner` of the stored checks of ``section`` at ``profile`` under its title
    (``nb`` unchanged when that run stored no checks: a run made before runs stored them)."""
    try:
        banner = checks_banner(results.find(section, results.CHECKS, profiles=(profile,)))
    except results.DamagedResult as e:  # the page still builds, and says so
        banner = f"⚠ **The run's checks cannot be read**: {e}."
    return _under_title(nb, banner) if banner else nb


def _with_banner(nb, banner, suffix=None, after=1):
    """``nb`` with a markdown cell ``banner`` ``after`` cells past its title cell (and `` — suffix`` on
    the title)."""
    import nbformat

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown")
    if suffix:
        lines = nb.cells[first].source.split("\n")
        lines[0] = f"{lines[0]} — {suffix}"
        nb.cells[first].source = "\n".join(lines)
    nb.cells.insert(first + after, nbformat.v4.new_markdown_cell(banner))
    return _with_cell_ids(nb)


def _with_cell_ids(nb):
    """``nb`` as nbformat 4.5, each cell with an id of its own: the cells just added have theirs, those
    of a run stored as nbformat 4.4 get one (none missing, none repeated: nothing for nbformat to
    repair, or warn of, when the page is written)."""
    from nbformat.corpus.words import generate_corpus_id

    seen = set()
    for cell in nb.cells:
        if "id" not in cell or cell["id"] in seen:
            cell["id"] = generate_corpus_id()
        seen.add(cell["id"])
    nb.nbformat_minor = max(nb.nbformat_minor, 5)
    return nb


#: Text outputs that are matplotlib's return values, not something to read.
_PLOT_REPRS = ("<Axes", "array([<Axes", "<Figure size", "Text(", "[<matplotlib")


def _heading(source):
    """The last heading of a markdown cell, as plain text (no ``#``, emphasis, code marks or ``$``)."""
    heads = [line.lstrip("#").strip() for line in source.splitlines() if line.startswith("#")]
    return heads[-1].replace("*", "").replace("`", "").replace("$", "") if heads else None


def caption_figures(nb, profile, where):
    """``nb`` with every figure of a committed notebook shown once and captioned: a notebook executed
    before figures carried captions shows an image as both an ``execute_result`` and a ``display_data``,
    and sometimes an ``<Axes ...>`` repr. Each cell keeps one output per distinct image, as a numbered
    figure (:func:`cepaper.book.pages.figure_html`) captioned with the heading above it, the scale of
    ``profile`` and the run's folder ``where``; plot reprs are dropped. Figures already captioned count."""
    import base64

    import nbformat

    heading, number = None, 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heading = _heading(cell.source) or heading
            continue
        if cell.cell_type != "code":
            continue
        outputs, seen = [], set()
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "cepaper-figure" in data.get("text/html", ""):
                number += 1
            elif "image/png" in data:
                png = data["image/png"]
                if png in seen:
                    continue
                seen.add(png)
                number += 1
                text = pages.caption_text(heading or "Figure of this run", number, profile=profile, where=where)
                html = pages.figure_html(base64.b64decode(png), text)
                out = nbformat.v4.new_output("display_data", data={"text/html": html, "text/plain": text})
            elif set(data) == {"text/plain"} and data["text/plain"].startswith(_PLOT_REPRS):
                continue
            outputs.append(out)
        if "outputs" in cell:
            cell.outputs = outputs
    return nb


def _readable_cell(text):
    """A committed table cell's text as :func:`cepaper.book.pages.show` writes it now."""
    import re

    if text in ("True", "False"):
        return "✓" if text == "True" else "✗"
    return re.sub(r"(?<=[.:/_])(?=\w)", "<wbr>", text) if len(text) > 20 and " " not in text else text


def readable_tables(nb):
    """``nb`` with the tables of a committed notebook read as :func:`cepaper.book.pages.show` writes them
    now: code names in headers in words (:data:`cepaper.book.pages.HEADERS`), ✓/✗ for True/False, and
    break opportunities in long names, for notebooks executed before it did."""
    import re

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html")
            if html and "<table" in html:
                html = "".join(html) if isinstance(html, list) else html
                html = re.sub(
                    r"(<th [^>]*>)([^<]*)</th>", lambda m: m[1] + pages.HEADERS.get(m[2], m[2]) + "</th>", html
                )
                out["data"]["text/html"] = re.sub(
                    r"(<td [^>]*>)([^<]*)</td>", lambda m: m[1] + _readable_cell(m[2]) + "</td>", html
                )
    return nb


def scale_page(section, built_profile, head=None):
    """The page *at scale* of a section: the best committed run at a profile other than
    ``built_profile`` with a banner saying which run it is (and whether it is older than ``head``,
    the commit the book is built at: default :func:`cepaper.book.results.git_commit`), or a page saying
    none is committed. Returns ``(notebook, record or None)``."""
    import nbformat

    profile, path = stored_run(section, [p for p in EVIDENCE if p != built_profile])
    stem = notebook_path(section).stem
    if path is None:
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_markdown_cell(
                f"# {_title(section)} — at scale\n\n**Not run.** No run of this section at the paper's scale "
                f"(profile `paper`) or at the CPU-evidence scale (profile `cpu-evidence`) is committed, so the "
                f"[section page]({stem}.ipynb) shows only its quick run. The [claims page](00_claims.ipynb) says "
                f"what running each of its experiments would cost, from the speeds measured in this book."
            )
        ]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        return nb, None
    nb = nbformat.read(path, as_version=4)
    rec = {**nb.metadata["cepaper"], "cached": True}
    commit = (rec.get("git_commit") or "unknown")[:12]
    head = ((results.git_commit() if head is None else head) or "unknown")[:12]
    old = ""
    if commit != head:
        changed = changed_since(rec.get("git_commit") or "", section)
        old = f" The book is built at `{head}`: this run is from older code" + (
            "; git cannot tell what changed since."
            if changed is None
            else "; none of the files this page depends on has changed since."
            if not changed
            else f"; changed since: {', '.join(f'`{c}`' for c in changed)}."
        )
    what = {
        "paper": "the paper's scale",
        "cpu-evidence": "the CPU-evidence scale (the paper's models, "
        "optimizer and data; fewer repetitions, epochs and seeds, as the page says)",
    }[profile]
    banner = (
        f"**At {what}**: profile `{profile}`, executed on {rec['device']} at commit `{commit}` on "
        f"{rec['date'][:10]} (its last execution took {rec['wall_s'] / 60:.1f} min; work it resumed from "
        f"checkpoints of earlier executions is not counted); committed in "
        f"`results/{profile}/{section}/` and shown here without re-executing.{old} "
        f"[The quick run of this section]({stem}.ipynb)."
    )
    nb = readable_tables(caption_figures(nb, profile, f"results/{profile}/{section}/"))
    return _with_banner(nb, banner, f"at scale ({profile})"), rec


def _write_if_changed(path, text):
    """Write ``text`` to ``path`` only when it differs, so Sphinx rebuilds only changed pages."""
    if not path.exists() or path.read_text() != text:
        files.write_atomic(path, text)


def vendor_mathjax():
    """Copy MathJax 3 (pip package django-static-mathjax) to ``book/_static/mathjax``: the book's
    math then renders without a network (``mathjax_path`` in ``_config.yml``)."""
    import mathjax

    src = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dst = REPO / "book" / "_static" / "mathjax"
    if not (dst / "tex-chtml.js").exists():  # copied whole, then renamed: never half there
        tmp = dst.with_name(".mathjax.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)


def book(profile="quick", force=False, reuse_stored=False):
    """Run every section of the book with ``profile``, then build the HTML book; return index.html.

    Each section page is followed by its page *at scale* (:func:`scale_page`): the committed run of
    the section at the best other profile of :data:`EVIDENCE`, rendered without executing. Right under
    its title each page says whether its run's checks of the paper's claims hold (:func:`with_checks`)."""
    import nbformat

    records = run([], profile, force=force, reuse_stored=reuse_stored)
    vendor_mathjax()
    SECTIONS_DIR.mkdir(parents=True, exist_ok=True)
    pages, scale_records, head = {}, [], results.git_commit()
    try:
        claims_record = results.find("claims", "claims", profiles=(profile,))
    except results.DamagedResult:  # its own page says so; the other pages lose their back-links only
        claims_record = None
    for r in records:
        src = executed_path(r["section"], profile)
        nb = nbformat.read(src, as_version=4)
        backlinks = claims_banner(r["section"], claims_record)
        if backlinks:
            nb = _with_banner(nb, backlinks)
        if r["section"] not in SUMMARIES:
            scale, rec = scale_page(r["section"], profile, head)
            if rec is not None and backlinks:
                scale = _with_banner(scale, backlinks, after=2)
            if rec is not None:
                scale = with_checks(scale, r["section"], rec["profile"])  # last: right under the title
            pages[f"{src.stem}_scale.ipynb"] = nbformat.writes(scale)
            if rec is not None:
                scale_records.append(rec)
                nb = _with_banner(
                    nb,
                    f"**Results at scale:** this page is the `{profile}` run; the same section "
                    f"at profile `{rec['profile']}` is on "
                    f"[its page at scale]({src.stem}_scale.ipynb).",
                )
        nb = with_checks(nb, r["section"], profile)  # last: right under the title
        pages[src.name] = nbformat.writes(nb)
    for old in set(SECTIONS_DIR.glob("*.ipynb")) - {SECTIONS_DIR / name for name in pages}:
        old.unlink()
    for name, text in pages.items():
        _write_if_changed(SECTIONS_DIR / name, text)
    _write_if_changed(SECTIONS_DIR / "runs.md", runs_page(records, scale_records))
    cmd = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(REPO),
        "--warningiserror",
        "--nitpick",
        "--keep-going",
        "--quiet",
    ]
    print("[cepaper] building the book", file=sys.stderr, flush=True)
    if run_child(cmd, cwd=REPO):
        raise RuntimeError("jupyter-book could not build the book; its messages above say why")
    return BUILD / "html" / "index.html"
