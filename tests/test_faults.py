"""Fault injection: the pipeline and the CLI never lose data, never touch what is not theirs, and
never answer with a traceback (issue 15).

A tiny repository layout (conftest's ``repo``) whose notebook can be held mid-run, made to fail or to
write a large result; `cepaper` runs in a subprocess (conftest's ``cepaper``) so that it can be
killed (SIGKILL, SIGINT, SIGTERM), limited (RLIMIT_FSIZE), or run twice at once. Read-only and full
disks are real tmpfs mounts where ``mount`` works (here: as root in the sandbox); where it does not,
the read-only case simulates ``os.access`` and the full-disk case is skipped.
"""

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from cepaper import cli, files, runs
from cepaper.book import pipeline
from cepaper.cli import common as cli_common
from cepaper.montecarlo import intra_op_threads
from cepaper.training import grids, sgd
from tests import conftest
from tests.conftest import SOURCE_ROOT, cepaper

FAULT_NOTEBOOK = """# %% [markdown]
# A tiny section that can be held, made to fail, or made to write a large result

# %% tags=["parameters"]
profile = "quick"
results_dir = ""
value = 1
files = 3
blob = 0
hold = ""
fail = False
repo = ""
say = 0
die = False

# %%
import os
import time
from pathlib import Path
from IPython.display import display
from cepaper.book import results
if repo:  # plain papermill on this test layout: its store, not the checkout's
    results.REPO = Path(repo)
run = results.Run("SECTION", profile, params=dict(value=value, files=files, blob=blob), results_dir=results_dir)
display(run.header())
for i in range(files):
    run.save(f"part{i}", {"value": value, "i": i})
if blob:
    run.save("blob", {"x": "x" * blob})
if hold:  # say who we are, then wait for the test to let us go on (or to kill us)
    Path(hold + ".pid").write_text(str(os.getpid()))
    while not Path(hold).exists():
        time.sleep(0.05)
if say:  # a large output: the executed notebook papermill writes is large
    print("y" * say)
if die:  # the kernel dies as the out-of-memory killer would end it
    os.kill(os.getpid(), 9)
assert not fail, "asked to fail"
"""

COMPLETE = ["notebook.ipynb", "part0.json", "part1.json", "part2.json"]


def two_sections(root):
    """Give the layout ``root`` (conftest's ``lay_out``) two sections of FAULT_NOTEBOOK, lemma1 and
    theorem1; return ``root``."""
    for i, section in enumerate(("lemma1", "theorem1"), 1):
        (root / "notebooks" / f"0{i}_{section}.py").write_text(FAULT_NOTEBOOK.replace("SECTION", section))
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n"
        "  - file: book/sections/01_lemma1\n  - file: book/sections/02_theorem1\n"
    )
    (root / "profiles" / "quick.yaml").write_text("lemma1: {}\ntheorem1: {}\n")
    return root


@pytest.fixture
def layout(repo):
    """The ``repo`` layout with two sections of FAULT_NOTEBOOK, lemma1 and theorem1."""
    return two_sections(repo)


@pytest.fixture(scope="module")
def ran_once(tmp_path_factory):
    """A ``layout`` in which lemma1 has run once with its default parameters (``run_here()``), made once a
    module for ``ran`` to copy."""
    root = two_sections(conftest.lay_out(tmp_path_factory.mktemp("ran")))
    with pytest.MonkeyPatch.context() as mp:
        conftest.use_layout(root, mp)
        run_here()
    return root


@pytest.fixture
def ran(layout, ran_once):
    """``layout`` as ``run_here()`` leaves it, lemma1's results published and its run cached: a copy of
    ``ran_once`` (files' modification times too, which the cache key reads), an execution fewer a test."""
    shutil.copytree(ran_once, layout, symlinks=True, dirs_exist_ok=True)
    assert state(layout / "results") == (COMPLETE, {1})


@pytest.fixture
def kernels():
    """Pid files of held kernels; any kernel still alive at the end (its `cepaper` was killed) is
    killed too. Only processes this test started."""
    pid_files = []
    yield pid_files
    for path in pid_files:
        if path.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(path.read_text()), signal.SIGKILL)


def state(root, section="lemma1", profile="quick"):
    """``(files, values)`` of a section's published results, or ``None`` when there is no folder."""
    folder = root / profile / section
    if not folder.exists():
        return None
    names = sorted(p.name for p in folder.iterdir())
    values = {json.loads((folder / n).read_text())["data"]["value"] for n in names if n.startswith("part")}
    return names, values


def leftovers(root, profile="quick"):
    return sorted(p.name for p in (root / profile).iterdir() if p.name.startswith("."))


def wait_for(path, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def one_line_error(proc, status, *parts):
    """The command exited with ``status`` and its last stderr line is one clear error with ``parts``."""
    err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.read()
    assert proc.returncode == status, (proc.returncode, err)
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    for part in parts:
        assert part in last, (part, last)
    return last


def run_here(section="lemma1", **params):
    """`cepaper run SECTION -p NAME VALUE...` in this process (the steps around a fault: cheaper)."""
    return pipeline.run([section], "quick", list(params.items()))


def held(root, kernels, *args, **kw):
    """Start `cepaper run ARGS -p hold H`; return ``(proc, H)`` once its kernel waits for ``H``."""
    hold = root / f"hold-{len(kernels)}"
    kernels.append(hold.with_name(hold.name + ".pid"))
    proc = cepaper(root, "run", "--replace", *args, "-p", "hold", str(hold), wait=False, **kw)
    wait_for(kernels[-1], proc)
    return proc, hold


# --------------------------------------------------------------------------- killed runs


@pytest.mark.usefixtures("ran")
def test_sigkill_while_executing_keeps_the_old_results(layout, kernels):
    store = layout / "results"
    old = state(store)
    assert old == (COMPLETE, {1})
    proc, _ = held(layout, kernels, "lemma1", "-p", "value", "2")
    proc.kill()
    proc.wait()
    assert state(store) == old and leftovers(store) == []
    run_here(value=2)
    assert state(store) == (COMPLETE, {2})
    assert list((layout / "_build" / "staging").iterdir()) == [], "the dead run's staging folder is removed"


KILL = (
    "import os, signal\nkill = lambda: os.kill(os.getpid(), signal.SIGKILL)\n"
    "from cepaper.book import pipeline, publish\n"
)
PUBLISH_FAULTS = {
    # half of the new results copied beside the old ones
    "copying": KILL + "import shutil\nreal, n = shutil.copy2, []\n"
    "def copy2(src, dst, **kw):\n"
    "    n.append(dst)\n"
    "    kill() if '.lemma1.new-' in str(dst) and len(n) == 2 else None\n"
    "    return real(src, dst, **kw)\n"
    "shutil.copy2 = copy2\n",
    # the atomic exchange done, the previous results not yet removed
    "swapped": KILL + "real = publish._exchange\npublish._exchange = lambda a, b: (real(a, b), kill())\n",
    # no atomic exchange here (e.g. NFS): the two renames cut between them
    "between-renames": KILL + "publish._exchange = lambda a, b: False\nreal = os.replace\n"
    "def replace(a, b):\n"
    "    real(a, b)\n"
    "    kill() if '.lemma1.old-' in str(b) else None\n"
    "os.replace = replace\n",
}


@pytest.mark.usefixtures("ran")
@pytest.mark.parametrize("point", PUBLISH_FAULTS)
def test_sigkill_while_publishing_leaves_the_old_or_the_new_results(layout, point):
    store = layout / "results"
    killed = cepaper(layout, "run", "lemma1", "--replace", "-p", "value", "2", fault=PUBLISH_FAULTS[point])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if point == "between-renames":  # the previous results sit beside their place until the next run
        assert state(store) is None and len(leftovers(store)) == 2
        with pytest.raises(RuntimeError, match="asked to fail"):  # even a failing next run puts them back
            run_here(fail=True)
        assert leftovers(store) == []
    assert state(store) == (COMPLETE, {2} if point == "swapped" else {1})
    if point == "copying":  # the next run removes what the killed one left beside the results
        run_here(value=3)
        assert state(store) == (COMPLETE, {3}) and leftovers(store) == []


@pytest.mark.usefixtures("ran")
@pytest.mark.parametrize("point", ["copying", "between-renames"])
def test_a_cached_rerun_cleans_what_a_killed_publish_left(layout, point):
    """Issue: hidden .<section>.new-* folders left by a kill while publishing were removed only by a
    run that executed; a cached rerun kept them forever. Every run tidies first, cached or not (and a
    publish cut between its renames is completed, so the rerun is cached)."""
    store = layout / "results"
    killed = cepaper(layout, "run", "lemma1", "--replace", "-p", "value", "2", fault=PUBLISH_FAULTS[point])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert leftovers(store), "the kill left something beside the results"
    (again,) = run_here()
    assert again["cached"] and leftovers(store) == [] and state(store) == (COMPLETE, {1})


@pytest.mark.usefixtures("ran")
@pytest.mark.parametrize(
    "signum, status, said",
    [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_ctrl_c_and_sigterm_stop_cleanly(layout, kernels, signum, status, said):
    store = layout / "results"
    proc, _ = held(layout, kernels, "lemma1", "-p", "value", "2")
    proc.send_signal(signum)
    proc.wait(timeout=60)
    one_line_error(proc, status, f"cepaper run: {said}", "last good results stay")
    assert state(store) == (COMPLETE, {1}) and leftovers(store) == []
    assert list((layout / "_build" / "staging").iterdir()) == [], "its staging folder is removed"
    with pipeline.section_lock("lemma1", "quick"):
        pass  # released


def test_ctrl_c_stops_a_run_started_with_sigint_ignored(layout, kernels):
    """A background job of a shell script (``cepaper run ... &``, ``nohup ... &``) starts with SIGINT
    ignored; a SIGINT sent to it still stops it cleanly (exit 130), as in a terminal."""
    proc, _ = held(layout, kernels, "lemma1", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    one_line_error(proc, 130, "cepaper run: interrupted (Ctrl-C)", "last good results stay")


TRAIN = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
import torch
torch.set_num_threads(1)  # as the comparison in the test process: the same float32 reduction order
from cepaper import runs
from cepaper.training import sgd
from tests.training.test_sgd import TINY, images, tiny_model
point, path = sys.argv[1], sys.argv[2]
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
if point == "after-checkpoint":  # epoch 2's checkpoint written whole
    real = runs.save_checkpoint
    runs.save_checkpoint = lambda p, state: (real(p, state), state["epoch"] == 2 and kill())
else:  # epoch 2's checkpoint half written
    real, n = runs.write_atomic, []  # the name save_checkpoint calls
    def half(p, data):
        n.append(p)
        if len(n) < 2:
            return real(p, data)
        real(p, lambda f: (f.write(data[:len(data) // 2]), f.flush(), kill()))
    runs.write_atomic = half
sgd.train_recipe(tiny_model(), images(n=40), images(n=16, seed=1), TINY, seed=5, checkpoint=path)
"""


@pytest.mark.parametrize("point, epoch", [("after-checkpoint", 2), ("while-checkpointing", 1)])
def test_training_killed_then_resumed_gives_the_same_result(tmp_path, point, epoch):
    from tests.training.test_sgd import TINY, images, tiny_model

    path = tmp_path / "run.pt"
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN, point, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert torch.load(path, weights_only=False)["epoch"] == epoch
    with intra_op_threads(1):  # bit-for-bit comparisons need one reduction order, whatever earlier tests set
        straight = sgd.train_recipe(tiny_model(), images(n=40), images(n=16, seed=1), TINY, seed=5)
        resumed = sgd.train_recipe(
            tiny_model(seed=99), images(n=40), images(n=16, seed=1), TINY, seed=5, checkpoint=path
        )
    for k in ("epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5"):
        assert resumed[k] == straight[k], k


# --------------------------------------------------------------------------- two runs at once


def test_the_same_section_twice_at_once_is_refused(layout, kernels):
    store = layout / "results"
    first, hold = held(layout, kernels, "lemma1", "-p", "value", "2")
    second = cepaper(layout, "run", "lemma1", "--replace", "-p", "value", "3")
    # refused, not failed: status 2, as the CLI's other refusals (a script can tell it from a failed notebook)
    one_line_error(second, 2, "section lemma1 (profile quick) is already running in another process")
    hold.touch()
    assert first.wait(timeout=60) == 0, first.stderr.read()
    assert state(store) == (COMPLETE, {2}), "the first run published everything"


def test_two_sections_at_once_both_succeed(layout, kernels):
    store = layout / "results"
    first, hold = held(layout, kernels, "lemma1", "-p", "value", "2")
    run_here("theorem1", value=3)
    hold.touch()
    assert first.wait(timeout=60) == 0, first.stderr.read()
    assert state(store) == (COMPLETE, {2}) and state(store, "theorem1") == (COMPLETE, {3})


# --------------------------------------------------------------------------- disks


@contextlib.contextmanager
def tmpfs(path, options):
    """A tmpfs mounted at ``path`` (``True``), or ``False`` where ``mount`` is not allowed."""
    path.mkdir()
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def test_read_only_results_root(repo, monkeypatch, capsys):
    ro = repo / "ro"
    with tmpfs(ro, "ro,size=64k") as mounted:
        if not mounted:  # simulated: access(2) says what a read-only mount would
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: not str(p).startswith(str(ro)) and real(p, mode))
        monkeypatch.setenv("CEPAPER_RESULTS", str(ro))
        for argv in (["run", "lemma1"], ["fit-alpha", "--module", "mlp", "--trials", "2", "--widths", "2"]):
            with pytest.raises(SystemExit) as e:
                cli.main(argv)
            err = capsys.readouterr().err
            assert e.value.code == 2 and "Traceback" not in err
            assert f"cannot write results to {ro}: it is not writable" in err.splitlines()[-1]
        assert not (repo / "_build" / "executed").exists(), "refused before executing"
        if mounted:
            with pytest.raises(OSError) as e:
                files.write_atomic(ro / "quick" / "x.json", "{}")
            assert e.value.errno == errno.EROFS and e.value.filename == str(ro / "quick" / "x.json")
            assert cli.os_error_line(e.value).startswith(f"{ro}/quick/x.json: the filesystem is read-only (EROFS)")


LIMIT = (
    "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
)
# the file-size limit set only once the notebook has run: the copy into the results root fails
LIMIT_IN_PUBLISH = (
    "from cepaper.book import publish as module\nreal = module.publish\n"
    "def publish(new, dest):\n"
    + "".join(f"    {line}\n" for line in LIMIT.splitlines())
    + "    return real(new, dest)\nmodule.publish = publish\n"
)


@pytest.mark.usefixtures("ran")
def test_file_size_limit_in_the_notebook_is_one_clear_line(layout):
    store = layout / "results"
    proc = cepaper(layout, "run", "lemma1", "--replace", "-p", "value", "2", "-p", "blob", "1000000", fault=LIMIT)
    one_line_error(
        proc, 2, "blob.json: file too large", "(EFBIG)", "section lemma1 stopped", "the last good results are kept"
    )
    assert state(store) == (COMPLETE, {1})


@pytest.mark.usefixtures("ran")
def test_file_size_limit_on_the_executed_notebook_names_it_and_keeps_no_truncated_copy(layout):
    store = layout / "results"
    proc = cepaper(layout, "run", "lemma1", "--replace", "-p", "value", "2", "-p", "say", "400000", fault=LIMIT)
    one_line_error(
        proc,
        2,
        "_build/executed/quick/01_lemma1.ipynb: file too large (EFBIG)",
        "its notebook was truncated while being written, so none is kept",
        "section lemma1 stopped",
        "the last good results are kept",
    )
    assert not (layout / "_build" / "failed").exists() or not any((layout / "_build" / "failed").rglob("*.ipynb"))
    assert state(store) == (COMPLETE, {1})


@pytest.mark.usefixtures("ran")
def test_a_dead_kernel_names_the_section_the_failed_notebook_and_the_kept_results(layout, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "lemma1", "--replace", "-p", "value", "2", "-p", "die", "true"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 1 and "section lemma1 stopped: its kernel died" in last, last
    assert "its log is _build/logs/quick/01_lemma1.kernel.log" in last, last
    assert "the failed notebook is _build/failed/quick/01_lemma1.ipynb" in last, last
    assert last.endswith("the last good results are kept"), last
    assert state(layout / "results") == (COMPLETE, {1})


@pytest.mark.usefixtures("ran")
def test_a_read_only_parent_of_existing_results_is_found_before_executing(layout, monkeypatch, capsys):
    parent = layout / "results" / "quick"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != parent and real(p, mode))
    log = layout / "_build" / "logs" / "quick" / "01_lemma1.kernel.log"  # rewritten by every execution
    before = log.stat().st_mtime_ns
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "lemma1", "--replace", "-p", "value", "2"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"cannot write results to {parent}: it is not writable" in err, err
    assert log.stat().st_mtime_ns == before, "refused before executing"


@pytest.mark.parametrize("where", ["same filesystem", "/dev/shm"])
def test_publish_across_filesystems_and_its_failure(layout, monkeypatch, where):
    store = layout / "results"
    if where == "/dev/shm":
        if not Path("/dev/shm").is_dir():
            pytest.skip("no /dev/shm here")
        store = Path(os.environ.get("TMPDIR_SHM", "/dev/shm")) / f"cepaper-faults-{os.getpid()}"
    env = {"CEPAPER_RESULTS": str(store)}
    monkeypatch.setenv("CEPAPER_RESULTS", str(store))
    try:
        run_here()
        run_here(value=2)  # replacing results on the other filesystem
        assert state(store) == (COMPLETE, {2})
        proc = cepaper(
            layout,
            "run",
            "lemma1",
            "--replace",
            "-p",
            "value",
            "3",
            "-p",
            "blob",
            "1000000",
            env=env,
            fault=LIMIT_IN_PUBLISH,
        )
        one_line_error(
            proc,
            2,
            f"{store}/quick/lemma1/blob.json: file too large (EFBIG)",
            "could not be published; the last good results are kept",
        )
        assert state(store) == (COMPLETE, {2}) and leftovers(store) == []
    finally:
        if where == "/dev/shm":
            import shutil

            shutil.rmtree(store, ignore_errors=True)


def test_full_disk_is_one_clear_line(layout, monkeypatch):
    full = layout / "full"
    with tmpfs(full, "size=256k") as mounted:
        if not mounted:
            pytest.skip("mount is not allowed here: no small filesystem to fill")
        env = {"CEPAPER_RESULTS": str(full)}
        monkeypatch.setenv("CEPAPER_RESULTS", str(full))
        run_here()
        proc = cepaper(layout, "run", "lemma1", "--replace", "-p", "value", "2", "-p", "blob", "1000000", env=env)
        one_line_error(
            proc,
            2,
            f"{full}/quick/lemma1/blob.json: no space left on the device (ENOSPC)",
            "free some space there",
            "CEPAPER_RESULTS",
            "the last good results are kept",
        )
        assert state(full) == (COMPLETE, {1}) and leftovers(full) == []


# --------------------------------------------------------------------------- damaged files


def test_corrupt_checkpoint_is_moved_aside_and_recomputed(tmp_path, capsys):
    from tests.training.test_sgd import TINY, images, tiny_model

    data = images(n=40), images(n=16, seed=1)
    straight = sgd.train_recipe(tiny_model(), *data, TINY, seed=5)
    good = tmp_path / "good.pt"
    sgd.train_recipe(tiny_model(), *data, TINY.scaled(1), seed=5, checkpoint=good)
    for name, content in (("empty", b""), ("garbage", b"not a checkpoint"), ("truncated", good.read_bytes()[:999])):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        got = sgd.train_recipe(tiny_model(), *data, TINY, seed=5, checkpoint=path)
        assert got["test_top1"] == straight["test_top1"], name
        assert (tmp_path / f"{name}.pt.corrupt").read_bytes() == content
        assert f"{path} is damaged (torch.load failed" in capsys.readouterr().err


def test_corrupt_cache_entries_are_moved_aside_and_recomputed(tmp_path, capsys):
    calls = []

    def compute(checkpoint):
        calls.append(checkpoint)
        assert not checkpoint.exists(), "a damaged checkpoint is never handed on"
        return {"value": 1}

    key = runs.source_key({"a": 1}, ("cepaper.book.results",))
    for content in (b"", b'{"value": ', b"{}", b"[]", b"\xff"):
        (tmp_path / f"{key}.json").write_bytes(content)
        (tmp_path / f"{key}.pt").write_bytes(b"half a checkpoint")
        assert runs.cached_record(tmp_path, {"a": 1}, ("cepaper.book.results",), compute) == {"value": 1}
        err = capsys.readouterr().err
        assert f"{key}.json is damaged" in err and f"{key}.pt is damaged (torch.load failed" in err
        assert (tmp_path / f"{key}.json.corrupt").exists()
        (tmp_path / f"{key}.json").unlink()
    assert len(calls) == 5


class _Planted:
    """A pickle whose loading runs a shell command: what a planted ``.pt`` would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path, how, marker):
    """Write a planted checkpoint to ``path``: torch.save's zip format, or a bare pickle (protocol 2,
    torch.load's legacy format; protocol 4, which torch's safe unpickler cannot even parse)."""
    import pickle

    state = {"epoch": 1, "model": {}, "settings": {"seed": 0}, "x": _Planted(marker)}
    if how == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=int(how[-1])))


@pytest.mark.parametrize("how", ["torch.save", "pickle2"])
def test_a_planted_pickle_checkpoint_is_refused_and_never_run(tmp_path, how):
    """Issue: checkpoints loaded with weights_only=False ran whatever a planted .pt asked for. A pickle
    that names a global beyond tensors and plain containers is refused by name, left where it is, and
    nothing of it runs: not by the loader, the run cache, the grid runner or a trainer's resume."""
    from tests.training.test_sgd import TINY, images, tiny_model

    marker = tmp_path / "pwned"
    key = runs.definition_key({"seed": 0})
    cache = tmp_path / "cache"
    cache.mkdir()
    calls = []
    sites = {
        "load_checkpoint": lambda path: runs.load_checkpoint(path),
        "cached_run": lambda path: runs.cached_run(cache, {"seed": 0}, (), lambda c: calls.append(c) or {"v": 1}),
        "train_recipe": lambda path: sgd.train_recipe(
            tiny_model(), images(n=40), images(n=16, seed=1), TINY.scaled(1), seed=5, checkpoint=path
        ),
    }
    for site, call in sites.items():
        path = cache / f"{key}.pt" if site == "cached_run" else tmp_path / f"{site}.pt"
        _plant(path, how, marker)
        with pytest.raises(ValueError, match=rf"checkpoint {path} refused: not a plain checkpoint .*posix.system"):
            call(path)
        assert not marker.exists(), f"{site}: the planted pickle ran"
        assert path.exists() and not path.with_name(path.name + ".corrupt").exists(), site
    assert calls == [], "nothing is computed over a refused checkpoint"


def test_a_planted_pickle_torch_cannot_parse_is_moved_aside_unrun(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "c.pt"
    _plant(path, "pickle4", marker)
    assert runs.load_checkpoint(path) is None
    assert not marker.exists() and path.with_name("c.pt.corrupt").exists()
    assert f"{path} is damaged (torch.load failed" in capsys.readouterr().err


def test_empty_training_record_is_recomputed_not_a_key_error(tmp_path, monkeypatch, capsys):
    from tests.training.test_sgd import images

    hist = {
        "epoch": [1],
        "lr": [0.1],
        "train_loss": [1.0],
        "train_top1": [50.0],
        "test_loss": [1.0],
        "test_top1": [40.0],
        "test_top5": [10.0],
        "seconds": [0.1],
        "images_per_s": 1.0,
    }
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: hist)
    kw = dict(net=grids.Network("resnext29", 3, (8, 16, 32), 1), cache=tmp_path)
    first = grids.train_recipe_grid(["1x2d"], "toy", images(), images(), [0], **kw)
    (record,) = tmp_path.glob("*.json")
    record.write_text("{}\n")
    again = grids.train_recipe_grid(["1x2d"], "toy", images(), images(), [0], **kw)
    assert f"{record} is damaged (an empty record)" in capsys.readouterr().err
    assert again[0]["final_top1"] == first[0]["final_top1"]
    assert grids.grid_summary(again).top1.tolist() == [40.0]


@pytest.mark.usefixtures("ran")
@pytest.mark.parametrize("content", ["", "{trunc", "[]", '{"key": 1}'])
def test_damaged_run_record_is_a_cache_miss(layout, capsys, content):
    record = pipeline.executed_path("lemma1", "quick").with_suffix(".json")
    record.write_text(content)
    (again,) = pipeline.run(["lemma1"])
    assert not again["cached"] and "01_lemma1.json is damaged" in capsys.readouterr().err
    assert record.with_name(record.name + ".corrupt").read_text() == content


@pytest.mark.parametrize(
    "profile, argv, message",
    [
        ("lemma1: [1, 2\n", [], "profiles/quick.yaml is not valid YAML: expected ',' or ']'"),
        ("- lemma1\n", [], "profiles/quick.yaml must map sections to their parameters"),
        ("lemma1: 3\n", [], "profiles/quick.yaml: section lemma1 must map parameter names to values"),
        ("lemma1: {}\n", ["-p", "value", "[1, 2"], "-p value: '[1, 2' is not a YAML value"),
        ("lemma1: {}\n", ["-p", "value", "{a: }}"], "-p value: '{a: }}' is not a YAML value"),
    ],
)
def test_broken_yaml_is_one_clear_line(layout, capsys, profile, argv, message):
    (layout / "profiles" / "quick.yaml").write_text(profile)
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "lemma1", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


# --------------------------------------------------------------------------- plain papermill


@pytest.mark.usefixtures("ran")
def test_plain_papermill_never_writes_the_books_results(layout, tmp_path):
    store = layout / "results"
    published = state(store)
    bin_dir = Path(sys.executable).parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEPAPER_")}
    env["PYTHONPATH"] = str(SOURCE_ROOT)
    subprocess.run(
        [
            bin_dir / "jupytext",
            "--to",
            "ipynb",
            "--set-kernel",
            "python3",
            "-o",
            "in.ipynb",
            layout / "notebooks" / "01_lemma1.py",
        ],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
    )
    for extra, where in (({}, None), ({"CEPAPER_RESULTS": str(tmp_path / "mine")}, tmp_path / "mine")):
        subprocess.run(
            [
                bin_dir / "papermill",
                "in.ipynb",
                "out.ipynb",
                "-p",
                "value",
                "7",
                "-p",
                "repo",
                str(layout),
                "-k",
                "python3",
            ],
            cwd=elsewhere,
            env={**env, **extra},
            check=True,
            capture_output=True,
        )
        assert state(store) == published, "the book's results are untouched"
        cells = nbformat.read(elsewhere / "out.ipynb", as_version=4).cells
        (header,) = [
            o.data["text/markdown"]
            for c in cells
            for o in c.get("outputs", [])
            if "This run" in o.get("data", {}).get("text/markdown", "")
        ]
        if where is None:
            (scratch,) = (layout / "_build" / "scratch").iterdir()
            assert scratch.name.startswith("lemma1-") and f"results in `_build/scratch/{scratch.name}/`" in header
            assert "not the book's results" in header
            assert json.loads((scratch / "part0.json").read_text())["data"]["value"] == 7
        else:
            assert state(where) == (["part0.json", "part1.json", "part2.json"], {7})
            assert "results in `mine/quick/lemma1/`." in header, "where the user pointed, relative to the repository"


# --------------------------------------------------------------------------- the book's child

CHILD = """
import signal, sys
from pathlib import Path
from cepaper import cli
from cepaper.book import pipeline
signal.signal(signal.SIGTERM, cli._on_sigterm)
try:
    pipeline.run_child(["sh", "-c", "sleep 300 & echo $! > " + sys.argv[1] + "; wait"])
except KeyboardInterrupt:
    sys.exit(143)
"""


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_terminated_child_group_leaves_no_process(tmp_path):
    pid_file = tmp_path / "pid"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(pid_file)],
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(pid_file, proc, timeout=60)
    while not pid_file.read_text().strip():
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert alive(grandchild)
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild), "the child's own child outlived us"


# --------------------------------------------------------------------------- the CLI's messages


def test_os_errors_name_the_file_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    line = cli.os_error_line(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "quick" / "a.json")))
    assert line == (
        f"{tmp_path}/quick/a.json: no space left on the device (ENOSPC); free some space there and "
        "run again, or point CEPAPER_RESULTS at another folder"
    )
    assert "(EXDEV); keep it and its destination on one filesystem" in cli.os_error_line(
        OSError(errno.EXDEV, "Invalid cross-device link", "/a", "/b")
    )
    assert (
        cli.os_error_line(PermissionError("cannot write results to /x: it is not writable"))
        == "cannot write results to /x: it is not writable"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit-alpha", "--module", "mlp", "--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
        (["fit-alpha", "--module", "mlp", "--trials", "1"], "argument --trials: must be an integer >= 2"),
        (
            ["design", "--arch", "resnext29", "--baseline", "8x64d", "--alpha", "1e300"],
            "alpha = 1e+300 is too large: Var(K) of Eq. 9",
        ),
        (["design", "--arch", "resnext29", "--baseline", "8x64d", "--alpha", "1e300", "--json"], "is too large"),
    ],
)
def test_cli_argument_errors_name_the_flag(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize("rank", ["0", "1", "3"])
def test_under_torchrun_every_rank_says_the_error_and_its_rank(monkeypatch, capsys, rank):
    """Whichever rank exits first, its reason is on stderr (torchrun may stop the others before they speak)."""
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "nosuch"])
    err = capsys.readouterr().err
    assert e.value.code == 2, "every rank exits with the same status"
    assert err.startswith(f"cepaper run (rank {rank}): error: section must be one of"), err


def test_one_process_says_the_error_without_a_rank(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(SystemExit):
        cli.main(["run", "nosuch"])
    assert capsys.readouterr().err.startswith("cepaper run: error: section must be one of")


def test_json_output_is_strict(capsys):
    cli_common.emit(type("A", (), {"json": True})(), {"se": float("nan"), "n": torch.tensor(2.0), "x": [1.5]}, "")
    assert json.loads(capsys.readouterr().out) == {"se": None, "n": 2.0, "x": [1.5]}
    with pytest.raises(ValueError, match=r"result.rho is inf: the computation overflowed"):
        cli_common.emit(type("A", (), {"json": True})(), {"rho": float("inf")}, "")
    cli.main(["design", "--arch", "resnext29", "--baseline", "1x128d", "--json"])
    json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


def test_train_messages_name_the_cli_flags(tmp_path, monkeypatch, capsys):
    from cepaper import data
    from tests.training.test_sgd import images

    base = ["train", "--arch", "resnext29", "--config", "1x2d", "--dataset", "cifar10"]
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("CEPAPER_DATA", raising=False)
    cases = [
        (["--data-root", str(tmp_path)], "pass --download to fetch CIFAR-10"),
        ([], "no data root: no --data-root and CEPAPER_DATA is unset"),
        (["--download"], "--download needs a data root: pass --data-root, or set CEPAPER_DATA"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "torch sees no GPU here; pass --device cpu"))
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            cli.main(base + extra)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and "download=True" not in err and "-p device" not in err, err
    monkeypatch.setattr(data, "load", lambda name, split, root=None, download=False, n=None: images(n=10))
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["--n-train", "50"])
    assert e.value.code == 2 and "--n-train 50 is more than the 10 train images of cifar10" in capsys.readouterr().err


def test_train_records_of_other_image_counts_do_not_overwrite_each_other(tmp_path, monkeypatch, capsys):
    """Issue: `cepaper train` named its record without --n-train/--n-test: a 64-image run overwrote a
    256-image run's record. The counts, when given, are in the name; without them it is as before."""
    from cepaper import data
    from tests.training.test_sgd import images

    hist = {k: [1.0] for k in ("epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5")}
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: {**hist, "seconds": [0.1], "images_per_s": 1.0})
    monkeypatch.setattr(data, "load", lambda name, split, root=None, download=False, n=None: images(n=n or 12))
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path / "results"))
    base = ["train", "--arch", "resnext29", "--config", "1x2d", "--dataset", "cifar10", "--data-root", str(tmp_path)]
    saved = {}
    for extra in ([], ["--n-train", "8"], ["--n-train", "10"], ["--n-train", "10", "--n-test", "4"]):
        assert cli.main([*base, *extra, "--json"]) == 0
        saved[" ".join(extra)] = Path(json.loads(capsys.readouterr().out)["saved"]).name
    assert saved == {
        "": "train_cifar10_resnext29_1x2d_cifar_eall_s0-0.json",
        "--n-train 8": "train_cifar10_resnext29_1x2d_cifar_eall_s0-0_ntrain8.json",
        "--n-train 10": "train_cifar10_resnext29_1x2d_cifar_eall_s0-0_ntrain10.json",
        "--n-train 10 --n-test 4": "train_cifar10_resnext29_1x2d_cifar_eall_s0-0_ntrain10_ntest4.json",
    }


def test_run_messages_about_missing_data_are_in_cli_terms(repo, tmp_path, capsys, monkeypatch):
    """Issue: `cepaper run` told its users to "pass download=True" (a library argument no notebook
    parameter sets); it names the data root (-p data_root, $CEPAPER_DATA) and `cepaper train --download`."""
    monkeypatch.delenv("CEPAPER_DATA", raising=False)
    (repo / "notebooks" / "01_lemma1.py").write_text(
        '# %% tags=["parameters"]\nprofile = "quick"\ndata_root = None\n\n'
        '# %%\nfrom cepaper import data\ndata.load("cifar10", "train", root=data_root, n=4)\n'
    )
    (repo / "profiles" / "quick.yaml").write_text("lemma1: {}\n")
    for argv, where in (([], "no -p data_root and CEPAPER_DATA is unset"), (["-p", "data_root", str(tmp_path)], "")):
        with pytest.raises(SystemExit) as e:
            cli.main(["run", "lemma1", *argv])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 1 and "download=True" not in err and "root=" not in err, err
        assert where in err and "`cepaper train --arch resnext29 --config 1x4d --dataset cifar10 --data-root DIR" in err
        assert "in the data root (-p data_root DIR, or $CEPAPER_DATA)" in err, err


def test_damaged_results_file_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    path = tmp_path / "cli" / "alpha" / "fit_bottleneck.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"data": {"alpha": 1.')
    with pytest.raises(SystemExit) as e:
        cli.main(["design", "--arch", "resnext29", "--baseline", "1x128d", "--alpha", "fit"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"results file {path} is damaged (JSONDecodeError" in err and "Traceback" not in err
