"""A real browser looks at the built book: every figure loads, no page shows an error output.

Headless Chromium renders each page of ``_build/html``; a script injected into a copy of the page
reports, after load, every image's natural width and any error/traceback output into the DOM, which
``--dump-dom`` returns. Screenshots go to ``_build/screenshots/``. ``make test`` builds the book and
installs Chromium (Debian's ``chromium``) first; without Chromium the test is skipped, saying why.
"""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from cepaper.book.pipeline import BUILD, book_sections

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
  const imgs = [...document.querySelectorAll("main img, article img, .bd-article img")];
  const errors = [...document.querySelectorAll(".output.traceback, .output.error, .output.stderr")]
    .map(e => e.innerText.slice(0, 200));
  const out = document.createElement("pre");
  out.id = "cepaper-probe";
  out.textContent = JSON.stringify({
    images: imgs.map(i => ({src: i.getAttribute("src"), width: i.naturalWidth, complete: i.complete})),
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

pytestmark = [
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="no built book: run `make book` first"),
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)"),
]


def pages():
    """The book's pages: the introduction, one page per section and its page at scale, the runs,
    reproduce and bibliography pages."""
    return ["book/intro.html", "book/reproduce.html", "book/bibliography.html", "book/sections/runs.html"] + [
        f"book/sections/{p.stem}.html" for p in sorted((HTML / "book" / "sections").glob("[0-9][0-9]_*.html"))
    ]


def chromium(*args, profile_dir):
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def probe(page, profile_dir):
    """Render ``page`` and return the probe's report."""
    src = HTML / page
    copy = src.with_name(f".probe-{src.name}")
    copy.write_text(src.read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = chromium("--virtual-time-budget=15000", "--dump-dom", copy.as_uri(), profile_dir=profile_dir)
    finally:
        copy.unlink()
    match = re.search(r'<pre id="cepaper-probe"[^>]*>(.*?)</pre>', dom, re.S)
    assert match, f"the probe did not run on {page}"
    return json.loads(
        match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    )


def test_every_section_has_a_page():
    built = {Path(p).stem.split("_", 1)[1] for p in pages() if "/sections/" in p and not p.endswith("runs.html")}
    assert built == set(book_sections()) | {f"{s}_scale" for s in book_sections() if s != "claims"}


@pytest.mark.parametrize("page", pages())
def test_page_renders_with_figures_and_no_errors(page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile_dir:
        report = probe(page, profile_dir)
        shot = SHOTS / (Path(page).stem + ".png")
        chromium("--window-size=1280,4000", f"--screenshot={shot}", (HTML / page).as_uri(), profile_dir=profile_dir)
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
    paths = re.findall(r"(?:/work|/home|/root|/tmp|/usr)/[\w./-]+", prose)
    assert not paths, f"{page}: machine paths on the page: {paths[:3]}"
    if "/sections/" in page and not page.endswith(("_scale.html", "runs.html")) and "claims" not in page:
        assert report["images"], f"{page} shows no figure"
        assert report["math_rendered"], f"{page} shows no rendered formula"
