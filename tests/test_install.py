"""cepaper installs as a library: its wheel, installed into a fresh virtual environment with the
dependencies it declares and nothing else, runs the `cepaper` command and ``import cepaper`` from a
folder that is no checkout, writes its results under the working directory (or ``$CEPAPER_RESULTS``)
and nothing into site-packages.

Offline: the wheel is built from a copy of the package with this environment's setuptools
(``--no-build-isolation``) and installed with ``--no-deps``; its dependencies are this environment's
installed distributions of its ``Requires-Dist`` (without extras) and theirs, transitively, linked into
one folder that the new environment reaches through a ``.pth`` line. The book's packages (papermill,
jupyter-book, matplotlib, ...) are not among them, so a command that imported one would fail.
``pytest -m "not install"`` leaves these tests out.
"""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.install

SOURCE = Path(__file__).resolve().parents[1]
MISSING = [m for m in ("pip", "setuptools") if importlib.util.find_spec(m) is None]
if MISSING:
    pytest.skip(f"building the wheel offline needs {' and '.join(MISSING)} here", allow_module_level=True)


def declared_closure(requires):
    """The installed distributions that the requirements ``requires`` (strings) need, transitively: the
    requirements' extras followed, markers read for this machine, a requirement under an extra of the
    top level (``extra == "book"``) left out."""
    todo, seen = [(Requirement(r), {""}) for r in requires], {}
    while todo:
        r, extras = todo.pop()
        if r.marker is not None and not any(r.marker.evaluate({"extra": e}) for e in extras):
            continue
        dist = importlib.metadata.distribution(r.name)
        name = dist.metadata["Name"].lower()
        wanted = {""} | set(r.extras)
        if name in seen and wanted <= seen[name][1]:
            continue
        seen[name] = (dist, wanted | (seen[name][1] if name in seen else set()))
        todo += [(Requirement(q), wanted) for q in dist.requires or ()]
    return {name: dist for name, (dist, _) in seen.items()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python, cepaper, package folder, wheel metadata)`` of the wheel installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(SOURCE / name, src / name)
    shutil.copytree(SOURCE / "cepaper", src / "cepaper", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src), "-w", str(tmp / "wheels")],
        capture_output=True,
        text=True,
    )
    if build.returncode:
        pytest.skip(f"the wheel could not be built offline here: {build.stderr.strip()[-400:]}")
    (wheel,) = (tmp / "wheels").glob("cepaper-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "-q", "--no-index", "--no-deps", str(wheel)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    metadata = Parser().parsestr((next(site.glob("cepaper-*.dist-info")) / "METADATA").read_text())
    deps = tmp / "dependencies"  # the declared dependencies alone, as links into this environment
    deps.mkdir()
    for dist in declared_closure(metadata.get_all("Requires-Dist")).values():
        for top in {Path(f).parts[0] for f in dist.files or ()} - {".."}:
            if not (deps / top).exists() and not top.endswith(".pth"):
                (deps / top).symlink_to(dist.locate_file(top))
    (site / "dependencies.pth").write_text(f"{deps}\n")
    return python, venv / "bin" / "cepaper", site / "cepaper", metadata


def _tree(folder):
    """``{path: (size, mtime)}`` of the files under ``folder`` but bytecode (compiled on import, by Python)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".pyc"
    }


@pytest.fixture
def cli(installed, tmp_path):
    """``cli(*args, env=..., code=0)``: the installed ``cepaper ARGS`` (``cli("-c", code)``: its ``python
    -c code``) run in ``tmp_path/work``, a git repository of its own (not cepaper's); the completed process."""
    python, script, _, _ = installed
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)

    def run(*args, env=None, code=0):
        p = subprocess.run(
            [python, *args] if args[0] == "-c" else [script, *args],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
            env={k: v for k, v in os.environ.items() if not k.startswith(("CEPAPER_", "PYTHON"))} | (env or {}),
        )
        assert p.returncode == code, p.stderr[-2000:]
        return p

    run.work = work
    return run


def test_the_wheel_needs_the_library_s_dependencies_not_the_book_s(installed):
    _, _, _, metadata = installed
    plain = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in plain}
    assert {"torch", "torchvision", "numpy", "scipy", "pandas", "pyyaml", "tqdm"} <= names
    assert not names & {"papermill", "jupyter-book", "jupytext", "ipykernel", "matplotlib", "submitit"}
    assert not [r for r in plain if "==" in r], "a library pins nothing: requirements.txt is the book's pinned set"
    assert {"book", "dist", "test"} <= set(metadata.get_all("Provides-Extra"))


def test_the_commands_run_from_another_folder_and_write_only_there(installed, cli, tmp_path):
    python, _, package, _ = installed
    before = _tree(python.parent.parent)

    design = cli(*"design --arch resnext29 --baseline 1x128d --objective primal".split())
    assert "37x10d" in design.stdout
    fit = cli(*"fit-alpha --module bottleneck --trials 20 --widths 4 8 16 --checkpoint".split())
    saved = cli.work / "results" / "cli" / "alpha" / "fit_bottleneck.json"
    assert f"saved to {saved}" in fit.stdout and saved.exists()
    assert list((cli.work / "_build" / "checkpoints" / "cli" / "alpha").rglob("n0016.json")), "checkpoints here"
    provenance = json.loads(saved.read_text())["provenance"]
    assert provenance["git_commit"] is None, "the working directory's repository is not cepaper's"
    fitted = cli(*"design --arch resnext29 --baseline 1x128d --alpha fit".split())
    assert "fitted: alpha/fit_bottleneck" in fitted.stdout
    assert "25,028,904" in cli(*"params --arch resnext50 --config 32x4d".split()).stdout

    elsewhere = tmp_path / "elsewhere"
    saved.unlink()
    cli(*"fit-alpha --module bottleneck --trials 20 --widths 4 8 16".split(), env={"CEPAPER_RESULTS": str(elsewhere)})
    assert (elsewhere / "cli" / "alpha" / "fit_bottleneck.json").exists() and not saved.exists()

    api = cli("-c", "import cepaper; print(cepaper.__file__, [getattr(cepaper, n).__name__ for n in cepaper.__all__])")
    assert api.stdout.startswith(f"{package / '__init__.py'} ['CollegialMLP'"), api.stdout

    run = cli("run", code=2)
    assert "need a checkout of the repository" in run.stderr and "Traceback" not in run.stderr
    absent = cli("-c", "import papermill", code=1)
    assert "No module named 'papermill'" in absent.stderr, "the book's packages are not installed"

    assert _tree(python.parent.parent) == before, "nothing written into the environment (site-packages)"
