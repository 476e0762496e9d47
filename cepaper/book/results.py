"""Results store: JSON (and CSV for tables) under ``results/<profile>/<section>/``, with provenance.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash never leaves a half-written result to be mistaken for a good one. Each JSON file holds::

    {"data": {...}, "provenance": {"section", "name", "profile", "params", "seed", "cepaper",
                                   "git_commit", "device", "wall_s", "date"}}

Where a notebook's results go is decided once: `cepaper run` decides it in its plan (the ``dest`` of a
:class:`~cepaper.book.profiles.Step`) and hands its notebook a staging folder as the parameter
``results_dir`` (under :data:`STAGING`, published to ``dest`` when the notebook succeeds). A notebook
takes it from :func:`destination`, which decides it otherwise: the CLI's own commands (profile ``cli``)
write into the store; a notebook executed any other way (plain papermill, nbval) writes to
``$CEPAPER_RESULTS/<profile>/<section>`` when that is set, else to a scratch folder named after its
parameters, ``_build/scratch/<section>-<hash>/``.

All of these are under :data:`REPO`: the checkout when cepaper runs from one, else (an installed package)
the working directory, so that nothing is ever written into site-packages.
"""

import hashlib
import json
import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

import cepaper
from cepaper.files import checkout, jsonable, move_aside, reason, write_atomic

#: The checkout cepaper runs from (``_toc.yml`` beside ``cepaper/``), or ``None`` for an installed package.
CHECKOUT = checkout()
#: Where the book's files are read (``_toc.yml``, ``notebooks/``, ``profiles/``) and where runs write
#: (``results/``, ``_build/``): the checkout, else the working directory (at import: the command's).
REPO = CHECKOUT or Path.cwd()


def root():
    """The results folder: ``$CEPAPER_RESULTS``, else ``results/`` in the repository (:data:`REPO`)."""
    return Path(os.environ.get("CEPAPER_RESULTS", REPO / "results"))


#: Profiles whose committed runs are evidence (the book shows them beside its own pages), best first.
EVIDENCE = ("paper", "cpu-evidence")


def section_dir(section, profile):
    """``results/<profile>/<section>``; the section must be one of ``SECTIONS``."""
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {', '.join(SECTIONS)}; got {section!r}")
    return root() / profile / section


def in_repo(path):
    """``path`` relative to the repository when inside it (as a notebook and a reader see it), else as
    it is."""
    path = Path(path)
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


#: Where `cepaper run` stages a notebook's results (``results_dir``) until it publishes them.
STAGING = REPO / "_build" / "staging"


def staged(folder):
    """True for a folder under a ``_build/staging/`` (:data:`STAGING` of the checkout that runs the
    notebook, which may be another than the kernel's own): results `cepaper run` publishes on success."""
    parts = Path(folder).parts
    return any(parts[i : i + 2] == STAGING.parts[-2:] for i in range(len(parts) - 1))


def destination(section, profile, results_dir="", params=None, seed=None, device="cpu", store=False):
    """The one answer to "where do this run's results go?" (:class:`Run`): ``results_dir`` when given
    (`cepaper run` hands its notebook a staging folder; relative to :data:`REPO`); with ``store`` (the CLI's
    own commands) or ``$CEPAPER_RESULTS`` set, the store's :func:`section_dir`; else (plain papermill,
    nbval) :func:`scratch_dir`, never the book's published results."""
    if not isinstance(results_dir, (str, os.PathLike)):
        raise ValueError(f"results_dir must be a folder (a string), got {results_dir!r}")
    if str(results_dir):
        return REPO / results_dir  # an absolute results_dir stays itself
    if store or os.environ.get("CEPAPER_RESULTS"):
        return section_dir(section, profile)
    return scratch_dir(section, profile, params, seed, device)


def checkpoint_dir(section, profile):
    """Resumable work of a section: ``_build/checkpoints/<profile>/<section>`` in the repository (:data:`REPO`),
    outside the results store (which a notebook run replaces only when it succeeds)."""
    return REPO / "_build" / "checkpoints" / profile / section


def check_json_files(folder):
    """Move aside (:func:`move_aside`) every ``*.json`` under ``folder`` that is not valid JSON: the
    per-width files of a checkpointed Monte Carlo sweep (``cepaper.alpha.sweeps.ntk_sweep``), checked before
    the sweep reads them. Returns the paths moved aside."""
    moved = []
    for path in sorted(Path(folder).rglob("*.json")) if Path(folder).is_dir() else []:
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            moved.append(move_aside(path, f"not JSON, {reason(e)}"))
    return moved


class DamagedResult(ValueError):
    """A results file that is not JSON; ``path`` names it. Its message says how to get it back: ``git
    checkout`` for a committed file (a GPU-scale run is not rerun lightly), else running its section."""

    def __init__(self, path, why):
        self.path = Path(path)
        tracked = _tracked(self.path)
        fix = (
            f"`git checkout -- {tracked}` restores the committed file"
            if tracked
            else "delete it and run the section (or command) that writes it again"
        )
        super().__init__(f"results file {path} is damaged ({why}): {fix}")


def _tracked(path):
    """``path`` relative to the checkout when git tracks it there, else ``None``."""
    root = checkout()
    try:
        rel = Path(path).resolve().relative_to(root)
    except (TypeError, ValueError):  # no checkout, or a file outside it
        return None
    found = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "--", str(rel)], cwd=root, capture_output=True, check=False
    )
    return str(rel) if found.returncode == 0 else None


def read_json(path):
    """The JSON value in the results file ``path``; :class:`DamagedResult` naming it when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedResult(path, reason(e)) from None


def git_commit():
    """The repository's HEAD commit, with ``+dirty`` when the code differs from it (any change outside
    ``results/``: results being written by runs do not make the code that writes them dirty), or ``None``
    (also for an installed package: a repository it runs in is not cepaper's)."""
    if CHECKOUT is None:
        return None
    try:
        run = lambda *a: subprocess.run(
            ["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        return run("rev-parse", "HEAD") + ("+dirty" if run("status", "--porcelain", "--", ".", ":!results") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def check_device(device, fix="run the paper profile on a GPU machine, or pass `-p device cpu`"):
    """Raise a clear ``ValueError`` unless torch can use ``device`` here; ``fix`` says what to do
    when it names a GPU that is not there (the CLI's commands name their ``--device`` flag)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no GPU here; {fix}")
    return device


def device_name(device="cpu"):
    """A readable name of the device a computation ran on, e.g. ``cpu (x86_64, 2 threads)``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def scratch_dir(section, profile, params=None, seed=None, device="cpu"):
    """``_build/scratch/<section>-<hash>``: where a notebook executed outside `cepaper run` (and with
    no ``$CEPAPER_RESULTS``) saves its results; the hash is of its profile, parameters, seed and device,
    so runs with other parameters never mix."""
    what = json.dumps(
        jsonable({"profile": profile, "params": dict(params or {}), "seed": seed, "device": str(device)}),
        sort_keys=True,
        default=str,
    )
    return REPO / "_build" / "scratch" / f"{section}-{hashlib.sha256(what.encode()).hexdigest()[:10]}"


#: The result a run's checks of the paper's claims are saved as (:meth:`Run.check`).
CHECKS = "checks"


_ACTIVE = {}  # (section, profile) -> folder of a Run outside the store, read first by load()


class Run:
    """One notebook's run: collects provenance and saves named results of a section.

    Its results go to ``self.dir``, :func:`destination`: the ``results_dir`` `cepaper run` hands the
    notebook (its staging folder, published to ``results/<profile>/<section>`` only when the notebook
    succeeds), the store (``store=True``, the CLI's own commands; or ``$CEPAPER_RESULTS``), or scratch.

    Example::

        run = Run("lemma1", profile, params=dict(n=n, m_max=m_max), seed=seed, device=device)
        run.save("fig2", {"gamma": gamma, "mean": mean})
        data = run.load("fig2")
        run.check("slope interval contains -1", lo <= -1 <= hi, f"[{lo:.3f}, {hi:.3f}]")
    """

    def __init__(self, section, profile, params=None, seed=None, device="cpu", store=False, results_dir=""):
        check_device(device)
        self.section, self.profile = section, profile
        self.params, self.seed, self.device = dict(params or {}), seed, str(device)
        self.dir = destination(section, profile, results_dir, self.params, seed, device, store)
        self.staged = staged(self.dir)  # a run of `cepaper run`: published only on success
        if self.dir != section_dir(section, profile):
            _ACTIVE[(section, profile)] = self.dir  # the store does not hold it (yet): load() looks here first
        self.started = time.perf_counter()
        self._checks = []

    def where(self):
        """Where this run's results go, as a reader should see it: for a staged run (a book page) the
        store's ``results/<profile>/<section>/``, else the folder, relative to the repository if in it."""
        if self.staged:
            return f"results/{self.profile}/{self.section}/"
        return f"{in_repo(self.dir)}/"

    def header(self):
        """Markdown for the top of a notebook: the profile and device this run uses, and where its
        results go (outside `cepaper run`: a scratch folder, not the book's results)."""
        from IPython.display import Markdown

        commit = (git_commit() or "unknown")[:12]
        where = f"results in `{self.where()}`"
        if not self.staged and self.dir != section_dir(self.section, self.profile):
            where += (
                " (executed outside `cepaper run`, so not the book's results; set CEPAPER_RESULTS to choose the folder)"
            )
        return Markdown(
            f"**This run:** profile `{self.profile}` on {device_name(self.device)}, "
            f"cepaper {cepaper.__version__} @ `{commit}`; {where}."
        )

    def provenance(self, name):
        return {
            "section": self.section,
            "name": name,
            "profile": self.profile,
            "params": jsonable(self.params),
            "seed": self.seed,
            "cepaper": cepaper.__version__,
            "git_commit": git_commit(),
            "device": device_name(self.device),
            "wall_s": round(time.perf_counter() - self.started, 3),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def save(self, name, data, table=None):
        """Save ``data`` (a dict) as ``<name>.json`` and, if given, a DataFrame as ``<name>.csv``,
        in ``self.dir``. Returns nothing, so a notebook cell ending in ``run.save`` shows nothing."""
        record = {"data": jsonable(data), "provenance": self.provenance(name)}
        if table is not None:
            write_atomic(self.dir / f"{name}.csv", table.to_csv(index=False))
        write_atomic(self.dir / f"{name}.json", json.dumps(record, indent=1) + "\n")

    def check(self, name, holds, detail=""):
        """Record a check of the paper's claims on this run: ``name`` says what is checked, ``holds``
        whether this run bears it out, ``detail`` what the run measured. Every check of the run so far
        is saved as the result ``checks`` (:data:`CHECKS`: ``{"checks": [{"name", "holds", "detail"}]}``,
        in the order made; a second check of the same name replaces the first), atomically, so a run
        stopped halfway leaves the checks it made. A check that does not hold ends nothing: the page
        says so at its top (:func:`cepaper.book.render.checks_banner`). What would make the page wrong
        (bad input, a broken invariant) is an error, not a check. Returns nothing."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a check's name must be a non-empty string, got {name!r}")
        holds = jsonable(holds)
        if not isinstance(holds, bool):
            raise TypeError(f"check {name!r}: holds must be True or False, got {holds!r}")
        entry = {"name": name, "holds": holds, "detail": str(detail)}
        names = [c["name"] for c in self._checks]
        if name in names:
            self._checks[names.index(name)] = entry
        else:
            self._checks.append(entry)
        self.save(CHECKS, {"checks": self._checks})

    def load(self, name):
        """The ``data`` dict of a result this section saved (see :func:`load`)."""
        path = self.dir / f"{name}.json"
        if path.exists() or not self.staged:
            if not path.exists():
                raise FileNotFoundError(f"no result {path}: save {name!r} before loading it")
            return read_json(path)["data"]
        return load(self.section, self.profile, name)["data"]


def _locate(section, profile, name):
    """Path of a saved result, looking first in the folder of a :class:`Run` of this process outside the
    store (the staging folder of a notebook `cepaper run` executes, or scratch).

    A read from the store (found or not) is appended to ``$CEPAPER_READS_LOG`` so the pipeline knows which
    results a notebook depends on.
    """
    if (section, profile) in _ACTIVE and (path := _ACTIVE[(section, profile)] / f"{name}.json").exists():
        return path
    path = section_dir(section, profile) / f"{name}.json"
    if os.environ.get("CEPAPER_READS_LOG"):
        rel = in_repo(path)
        with open(os.environ["CEPAPER_READS_LOG"], "a") as log:
            log.write(f"{rel}\n")
    return path


def load(section, profile, name):
    """The saved record ``{"data", "provenance"}`` of ``results/<profile>/<section>/<name>.json``."""
    path = _locate(section, profile, name)
    if not path.exists():
        raise FileNotFoundError(f"no result {path}; run `cepaper run {section} --profile {profile}` first")
    return read_json(path)


def find(section, name, profiles=("paper", "quick")):
    """The first saved record of ``section/name`` among ``profiles`` (in order), or ``None``."""
    for profile in profiles:
        path = _locate(section, profile, name)
        if path.exists():
            return read_json(path)
    return None


def describe(record):
    """One line saying which run produced a record: profile, device, commit, date, wall time."""
    p = record["provenance"]
    commit = (p.get("git_commit") or "unknown")[:12]
    return (
        f"{p['section']}/{p['name']}: profile `{p['profile']}`, {p['device']}, "
        f"cepaper {p['cepaper']} @ {commit}, {p['date']}, {p['wall_s']:.1f} s"
    )


def yaml_file(path):
    """The YAML in ``path``; ``ValueError`` naming the file and the place of a syntax error."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        rel = in_repo(path)
        raise ValueError(f"{rel} is not valid YAML: {what}{at}; fix it and run again") from None


#: What to do where the book's files are not there (an installed package run outside a checkout).
NO_BOOK = (
    "`cepaper run` and `cepaper book` need a checkout of the repository (its _toc.yml, notebooks/ and "
    "profiles/): run them in one"
)


def book_sections():
    """Sections in book order, read from ``_toc.yml`` entries ``book/sections/NN_<section>``; a
    ``FileNotFoundError`` saying what is missing where there is no ``_toc.yml`` (an installed package)."""
    if not (REPO / "_toc.yml").is_file():
        raise FileNotFoundError(f"the book lists its sections in _toc.yml, and there is none in {REPO}; {NO_BOOK}")
    toc = yaml_file(REPO / "_toc.yml")
    if not isinstance(toc, dict):
        raise ValueError("_toc.yml must be a mapping with `chapters` (or `parts` of chapters)")
    files = [e["file"] for part in toc.get("parts", [toc]) for e in part.get("chapters", [])]
    stems = [Path(f).name for f in files if f.startswith("book/sections/") and Path(f).name[:2].isdigit()]
    return [s.split("_", 1)[1] for s in stems]


def known_sections():
    """The sections results may be stored under: :func:`book_sections` where there is a ``_toc.yml``, else
    (an installed package, no book) the notebook sections of ``cepaper/sections/``: every module but
    ``paper``, the claims page's parts ``claims_*`` and the checks ``<section>_checks``."""
    if (REPO / "_toc.yml").is_file():
        return book_sections()
    stems = [p.stem for p in (Path(__file__).resolve().parents[1] / "sections").glob("*.py")]
    return sorted(s for s in stems if not s.startswith(("_", "claims_")) and not s.endswith("_checks") and s != "paper")


#: The sections, in book order (:func:`known_sections`: the repository's ``_toc.yml``, when there is one).
SECTIONS = tuple(known_sections())
