"""A real browser looks at the built book: every figure loads, once, with its caption; no page shows
an error output; no table is wider than the text column.

Headless Chromium renders each page of ``_build/html`` in a 1400 px wide window; a script injected into
a copy of the page reports, after load, every image (natural width, alt text, caption) and table (its
width and its column's), and any error/traceback output into the DOM, which ``--dump-dom`` returns.
Screenshots go to ``_build/screenshots/``. ``make test`` builds the book and installs Chromium (Debian's
``chromium``) first; without Chromium the test is skipped, saying why. The checks of figures and tables
are shown to fail on small planted pages, which need no built book.
"""

import base64
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from cepaper.book.pipeline import BUILD
from cepaper.book.results import book_sections

HTML = BUILD / "html"
SHOTS = BUILD / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

PROBE = r"""<script>
window.addEventListener("load", () => setTimeout(() => {
  const imgs = [...new Set(document.querySelectorAll("main img, article img, .bd-article img"))];
  const errors = [...document.querySelectorAll(".output.traceback, .output.error, .output.stderr")]
    .map(e => e.innerText.slice(0, 200));
  const out = document.createElement("pre");
  out.id = "cepaper-probe";
  out.textContent = JSON.stringify({
    images: imgs.map(i => ({
      src: i.getAttribute("src"), width: i.naturalWidth, complete: i.complete, alt: i.getAttribute("alt") || "",
      caption: ((i.closest("figure") || {querySelector: () => null}).querySelector("figcaption") || {innerText: ""})
        .innerText.trim(),
    })),
    tables: [...document.querySelectorAll("main table")].map(t => {  // each against the column it sits in
      const column = t.closest(".tag_full-width, .full-width") || t.closest("article, .bd-article, main");
      return {width: Math.max(t.scrollWidth, t.getBoundingClientRect().width), column: column.clientWidth,
              head: [...t.querySelectorAll("th")].slice(0, 3).map(h => h.innerText.trim()).join(" | ")};
    }),
    errors: errors,
    text_has_traceback: document.body.innerText.includes("Traceback (most recent call last)"),
    math_rendered: document.querySelectorAll("mjx-container").length,
    math_raw: document.querySelectorAll(".math:not(:has(mjx-container))").length,
    prose: (() => {  // the page's visible text, less rendered math, code and the sidebar
      const main = (document.querySelector("main") || document.body).cloneNode(true);
      main.querySelectorAll("mjx-container, pre, code, script, style, .cell_input, nav")
        .forEach(e => e.remove());
      return main.innerText;
    })(),
    nav: [...document.querySelectorAll("nav")].map(n => n.innerText).join("\n"),
    index_cells: [...document.querySelectorAll("main table tbody th")].length,
    nan_cells: [...document.querySelectorAll("main table td")]
      .filter(td => /^\s*(nan|NaN|None)\s*$/.test(td.innerText)).length,
  });
  document.body.appendChild(out);
}, 3000));
</script>"""

#: The browser window the pages are checked in (the tables must fit its text column) and shot in.
WINDOW = "--window-size=1400,4000"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")
needs_book = pytest.mark.skipif(not (HTML / "index.html").exists(), reason="no built book: run `make book` first")


def pages():
    """The book's pages: the introduction, one page per section and its page at scale, the runs,
    reproduce and bibliography pages."""
    return ["book/intro.html", "book/reproduce.html", "book/bibliography.html", "book/sections/runs.html"] + [
        f"book/sections/{p.stem}.html" for p in sorted((HTML / "book" / "sections").glob("[0-9][0-9]_*.html"))
    ]


def chromium(*args, profile_dir):
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def probe(src, profile_dir, shot=None):
    """Render the page file ``src`` (``WINDOW`` wide) and return the probe's report; with ``shot``, the
    same rendering's screenshot is saved there too (one start of the browser, not two)."""
    copy = src.with_name(f".probe-{src.name}")
    copy.write_text(src.read_text().replace("</body>", PROBE + "</body>"))
    screenshot = [f"--screenshot={shot}"] if shot else []
    try:
        dom = chromium(
            WINDOW, "--virtual-time-budget=15000", *screenshot, "--dump-dom", copy.as_uri(), profile_dir=profile_dir
        )
    finally:
        copy.unlink()
    match = re.search(r'<pre id="cepaper-probe"[^>]*>(.*?)</pre>', dom, re.S)
    assert match, f"the probe did not run on {src}"
    return json.loads(
        match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    )


def image_bytes(src, page):
    """The bytes of an image of ``page`` (a file): a ``data:`` URI's, or the file its ``src`` names."""
    if src.startswith("data:"):
        return base64.b64decode(src.split(",", 1)[1])
    path = (page.parent / src.split("#")[0].split("?")[0]).resolve()
    return path.read_bytes() if path.is_file() else b""


def figure_and_table_problems(report, page):
    """What a reader would trip on in the probe's ``report`` of ``page`` (a file): the same image shown
    twice, an image without a caption (or whose alt text is not its caption), a table wider than the
    text column it sits in."""
    found = []
    digests = [hashlib.sha256(image_bytes(i["src"], page)).hexdigest() for i in report["images"]]
    twice = sorted({d[:12] for d in digests if digests.count(d) > 1})
    if twice:
        found.append(f"the same image shown more than once ({len(twice)} image(s): {twice})")
    norm = lambda s: " ".join(s.split())
    bare = [i["src"][:60] for i in report["images"] if not i["caption"]]
    if bare:
        found.append(f"{len(bare)} figure(s) without a caption: {bare}")
    alts = [i["alt"][:60] for i in report["images"] if i["caption"] and norm(i["alt"]) != norm(i["caption"])]
    if alts:
        found.append(f"{len(alts)} figure(s) whose alt text is not the caption: {alts}")
    wide = [f"{t['head']!r} ({t['width']:.0f} px in {t['column']} px)" for t in report["tables"]]
    wide = [w for t, w in zip(report["tables"], wide) if t["width"] > t["column"] + 1]
    if wide:
        found.append(f"{len(wide)} table(s) wider than the text column at {WINDOW[14:]}: {wide}")
    return found


@needs_book
def test_every_section_has_a_page():
    built = {Path(p).stem.split("_", 1)[1] for p in pages() if "/sections/" in p and not p.endswith("runs.html")}
    assert built == set(book_sections()) | {f"{s}_scale" for s in book_sections() if s != "claims"}


@needs_book
@pytest.mark.parametrize("page", pages())
def test_page_renders_with_figures_and_no_errors(page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / (Path(page).stem + ".png")
    shot.unlink(missing_ok=True)  # this run's, not an earlier one's
    with tempfile.TemporaryDirectory() as profile_dir:
        report = probe(HTML / page, profile_dir, shot)
    assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot of {page}"
    broken = [i["src"] for i in report["images"] if not i["width"]]
    assert not broken, f"{page}: images that did not load: {broken}"
    assert not report["errors"] and not report["text_has_traceback"], f"{page}: error output {report['errors']}"
    assert not report["math_raw"], f"{page}: {report['math_raw']} formulas left as raw TeX (MathJax not loaded)"
    prose = report["prose"]
    raw_tex = re.findall(r"\$[^$\s][^$\n]{0,60}\$|\\\(|\\\[|\\(?:alpha|frac|mathrm|infty)\b", prose)
    assert not raw_tex, f"{page}: raw TeX in the visible text: {raw_tex[:5]}"
    assert not re.findall(r"\\\(|\$", report["nav"]), f"{page}: raw TeX in the navigation: {report['nav'][:200]}"
    assert not report["index_cells"], f"{page}: {report['index_cells']} pandas index cells in its tables"
    assert not report["nan_cells"], f"{page}: {report['nan_cells']} table cells read NaN/None"
    assert not (found := figure_and_table_problems(report, HTML / page)), f"{page}: " + "; ".join(found)
    paths = re.findall(r"(?:/work|/home|/root|/tmp|/usr)/[\w./-]+", prose)
    assert not paths, f"{page}: machine paths on the page: {paths[:3]}"
    if "/sections/" in page and not page.endswith(("_scale.html", "runs.html")) and "claims" not in page:
        assert report["images"], f"{page} shows no figure"
        assert report["math_rendered"], f"{page} shows no rendered formula"


# ---------------------------------------------------------------------------------------------
# The checks have teeth: small planted pages, laid out like the book's (no built book needed)
# ---------------------------------------------------------------------------------------------


def _png(color):
    """A small PNG of one colour."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 20), color).save(buf, format="PNG")
    return buf.getvalue()


def _figure(png, caption):
    src = "data:image/png;base64," + base64.b64encode(png).decode()
    return f'<figure><img src="{src}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _table(columns):
    head = "".join(f"<th>column {k}</th>" for k in range(columns))
    return f"<table><thead><tr>{head}</tr></thead><tbody><tr>{'<td>0.123</td>' * columns}</tr></tbody></table>"


GOOD = _figure(_png("red"), "Figure 1. A red square.") + _figure(_png("blue"), "Figure 2. A blue one.") + _table(4)
PLANTS = {
    "the same image shown more than once": GOOD + _figure(_png("red"), "Figure 3. The red square again."),
    "without a caption": GOOD.replace("<figcaption>Figure 2. A blue one.</figcaption>", ""),
    "alt text is not the caption": GOOD.replace('alt="Figure 1. A red square."', 'alt="_images/ab12.png"'),
    "wider than the text column": GOOD + _table(40),
}


def _page(folder, body):
    """A page with the book's frame: the text column is an ``article`` 700 px wide (the book's is about
    that at 1400 px), whose outputs scroll sideways as the book's do."""
    page = folder / "page.html"
    page.write_text(
        "<html><head><style>article { width: 700px; } .output { overflow-x: auto; } th, td { padding: 0 0.7em; "
        f"white-space: nowrap; }}</style></head><body><main><article class='bd-article'><div class='output'>{body}"
        "</div></article></main></body></html>"
    )
    return page


def test_a_good_page_has_no_figure_or_table_problem(tmp_path):
    with tempfile.TemporaryDirectory() as profile_dir:
        report = probe(_page(tmp_path, GOOD), profile_dir)
    assert len(report["images"]) == 2 and all(i["width"] for i in report["images"])
    assert figure_and_table_problems(report, tmp_path / "page.html") == []


@pytest.mark.parametrize("problem", PLANTS)
def test_the_checks_see_a_planted_problem(problem, tmp_path):
    with tempfile.TemporaryDirectory() as profile_dir:
        report = probe(_page(tmp_path, PLANTS[problem]), profile_dir)
    found = figure_and_table_problems(report, tmp_path / "page.html")
    assert len(found) == 1 and problem in found[0], found


def test_the_same_image_as_two_files_is_seen(tmp_path):
    """Built pages name images by file (``_images/<hash>.png``): the same picture under two names counts."""
    (tmp_path / "a.png").write_bytes(_png("green"))
    (tmp_path / "b.png").write_bytes(_png("green"))
    body = '<figure><img src="a.png" alt="Figure 1. x"><figcaption>Figure 1. x</figcaption></figure>'
    body += body.replace("a.png", "b.png").replace("1.", "2.")
    with tempfile.TemporaryDirectory() as profile_dir:
        report = probe(_page(tmp_path, body), profile_dir)
    assert ["the same image" in f for f in figure_and_table_problems(report, tmp_path / "page.html")] == [True]
