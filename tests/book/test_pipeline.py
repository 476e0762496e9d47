"""The notebook pipeline: parameters checked, execution cached on source/params/imports, atomic.

Runs real papermill executions of a tiny notebook in a throw-away repository layout.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from cepaper import files, runs
from cepaper.book import cache, pipeline, profiles, results
from tests.conftest import NOTEBOOK, SOURCE_ROOT, layout_paths


def statuses(records):
    return [("cached" if r["cached"] else "executed") for r in records]


def test_parameters_are_read_and_resolved(repo):
    assert results.book_sections() == ["lemma1"]
    assert profiles.notebook_parameters(repo / "notebooks" / "01_lemma1.py") == {
        "profile": "quick",
        "results_dir": "",
        "value": 1,
        "fail": False,
        "data_root": None,
    }
    params = profiles.resolve_parameters("lemma1", "quick", [("data_root", "/data")])
    assert params == {"profile": "quick", "results_dir": "", "value": 2, "fail": False, "data_root": "/data"}


@pytest.mark.parametrize(
    "section, profile, overrides, message",
    [
        ("nope", "quick", [], "section must be one of lemma1"),
        ("lemma1", "huge", [], "profile must be one of quick"),
        ("lemma1", "quick", [("valu", 3)], "unknown parameter 'valu'"),
        (
            "lemma1",
            "quick",
            [("value", "three")],
            "parameter 'value' of section lemma1 must be an integer, got 'three'",
        ),
        ("lemma1", "quick", [("fail", 1)], "parameter 'fail' of section lemma1 must be a boolean"),
    ],
)
def test_bad_input_is_refused_before_executing(repo, section, profile, overrides, message):
    with pytest.raises(ValueError, match=message):
        pipeline.run([section], profile, overrides)
    assert not (repo / "_build" / "executed").exists()


DEEP = sys.getrecursionlimit()
LAUGHS = "[" + ", ".join([f"&a{i} [" + ", ".join([f"*a{i - 1}" if i else "lol"] * 9) + "]" for i in range(9)]) + "]"


@pytest.mark.parametrize(
    "value, message",
    [
        ("&a [1, 2]", "-p value: YAML anchors and aliases (&a, *a) are not allowed in a parameter value"),
        (LAUGHS, "-p value: YAML anchors and aliases (&a0, *a0) are not allowed"),
        (
            "[" + "1, " * 100_001 + "1]",
            "-p value holds more than 100,000 elements, the most a parameter value may hold",
        ),
        ("x" * 1_000_001, "-p value: the value is 1,000,001 characters long, more than the 1,000,000"),
        # deeper than Python's recursion limit: PyYAML's composer recurses at least once a level
        ("[" * DEEP + "]" * DEEP, "-p value: the value is nested too deeply"),
    ],
    ids=["anchor", "billion laughs", "elements", "characters", "nesting"],
)
def test_a_parameter_value_is_refused_before_it_can_grow(value, message):
    """Issue: `-p NAME VALUE` took YAML anchors and aliases; 600 bytes of them took 6 GB."""
    with pytest.raises(ValueError) as e:
        profiles.parse_overrides([("value", value)])
    assert message in str(e.value)


def test_a_profile_value_is_bounded_too(repo):
    """A profile file's value, anchors and all (the repository's own file), is bounded when resolved."""
    (repo / "profiles" / "quick.yaml").write_text(f"lemma1:\n  value: {LAUGHS}\n")
    with pytest.raises(ValueError, match="parameter 'value' of section lemma1 holds more than 100,000 elements"):
        profiles.resolve_parameters("lemma1", "quick")


def test_dependencies_follow_cepaper_imports(repo):
    deps = runs.dependencies(("cepaper",), NOTEBOOK, root=cache.REPO)
    assert set(deps) == {"cepaper/__init__.py", "cepaper/fake.py"}


def test_run_caches_and_reexecutes_on_changes(repo):
    (first,) = pipeline.run(["lemma1"])
    assert not first["cached"] and first["params"]["value"] == 2
    saved = results.load("lemma1", "quick", "answer")
    assert saved["data"] == {"value": 2}
    assert {"params", "seed", "cepaper", "git_commit", "device", "wall_s", "date"} <= set(saved["provenance"])
    assert pipeline.executed_path("lemma1", "quick").exists()

    assert statuses(pipeline.run(["lemma1"])) == ["cached"]
    (repo / "cepaper" / "other.py").write_text("# not imported by the notebook\n")
    assert statuses(pipeline.run(["lemma1"])) == ["cached"]
    (repo / "cepaper" / "fake.py").write_text("# changed\n")
    assert statuses(pipeline.run(["lemma1"])) == ["executed"]
    os.utime(repo / "cepaper" / "fake.py", ns=(1, 1))  # touched, content unchanged
    assert statuses(pipeline.run(["lemma1"])) == ["executed"]
    assert statuses(pipeline.run(["lemma1"], overrides=[("value", 5)])) == ["executed"]
    assert results.load("lemma1", "quick", "answer")["data"] == {"value": 5}


def test_cache_follows_source_indirect_imports_reads_and_published_results(repo):
    """A section re-executes when its notebook's source, a module imported through another, a results
    file it read, or its published results change; after each, an unchanged second run is cached."""
    (repo / "cepaper" / "fake.py").write_text("from cepaper import deep\n")
    (repo / "cepaper" / "deep.py").write_text("# deep\n")
    read = results.section_dir("alpha", "quick") / "fit.json"
    read.parent.mkdir(parents=True)
    read.write_text(json.dumps({"data": {"alpha": 1.6}, "provenance": {}}))
    notebook = repo / "notebooks" / "01_lemma1.py"
    notebook.write_text(NOTEBOOK + 'assert results.load("alpha", "quick", "fit")["data"]["alpha"] > 0\n')
    answer = results.section_dir("lemma1", "quick") / "answer.json"
    changes = [
        lambda: (repo / "cepaper" / "deep.py").write_text("# deep, changed\n"),
        lambda: notebook.write_text(notebook.read_text() + "# a comment\n"),
        lambda: read.write_text(json.dumps({"data": {"alpha": 1.7}, "provenance": {}})),
        lambda: answer.write_text(answer.read_text().replace('"value": 2', '"value": 3')),
        lambda: (answer.parent / "extra.json").write_text("{}"),
    ]
    assert statuses(pipeline.run(["lemma1"])) == ["executed"]
    for change in changes:
        assert statuses(pipeline.run(["lemma1"])) == ["cached"]
        change()
        assert statuses(pipeline.run(["lemma1"])) == ["executed"]
    assert results.load("lemma1", "quick", "answer")["data"] == {"value": 2}


def test_stored_notebook_is_reused_without_executing(repo):
    with pytest.raises(FileNotFoundError, match="--reuse: no committed quick-profile run of lemma1"):
        pipeline.run(["lemma1"], reuse_stored=True)
    (first,) = pipeline.run(["lemma1"])
    stored = results.section_dir("lemma1", "quick") / pipeline.STORED
    assert stored.exists(), "the executed notebook is kept beside the section's results"
    shutil.rmtree(repo / "_build")  # as on a fresh clone of committed results
    (reused,) = pipeline.run(["lemma1"], reuse_stored=True)
    assert reused["cached"] and reused["key"] == first["key"] and reused["wall_s"] == first["wall_s"]
    assert pipeline.executed_path("lemma1", "quick").read_bytes() == stored.read_bytes()


def test_the_published_notebook_names_no_path_of_this_machine(repo):
    pipeline.run(["lemma1"])
    stored = results.section_dir("lemma1", "quick") / pipeline.STORED
    for text in (stored.read_text(), pipeline.executed_path("lemma1", "quick").read_text()):
        assert str(repo) not in text and "_build/staging" not in text, "a committed notebook names no machine path"


def test_failed_notebook_keeps_the_last_good_run(repo):
    pipeline.run(["lemma1"])
    good = pipeline.executed_path("lemma1", "quick").read_bytes()
    with pytest.raises(RuntimeError, match="section lemma1 raised AssertionError: asked to fail"):
        pipeline.run(["lemma1"], overrides=[("fail", True), ("value", 9)])
    assert pipeline.executed_path("lemma1", "quick").read_bytes() == good, "the last good notebook is kept"
    assert statuses(pipeline.run(["lemma1"])) == ["cached"], "and still serves the unchanged parameters"
    assert results.load("lemma1", "quick", "answer")["data"] == {"value": 2}, "half-written result published"
    assert (repo / "_build" / "failed" / "quick" / "01_lemma1.ipynb").exists()


def test_kernels_started_at_once_talk_over_sockets_of_their_own(tmp_path):
    """The book's kernels (and nbval's, tests/nbval_kernels.py) use Unix sockets named for each kernel,
    not TCP ports another process could take between their choice and the kernel's start: two started
    at once get different sockets, each answers, and each removes its socket files when it stops."""
    import asyncio

    async def two_kernels(log):
        managers = [pipeline._kernel_manager(log)(kernel_name="python3") for _ in range(2)]
        await asyncio.gather(*(km.start_kernel() for km in managers))
        try:
            infos = [km.get_connection_info() for km in managers]
            sockets = [[f"{i['ip']}-{i[p]}" for p in ("shell_port", "iopub_port", "hb_port")] for i in infos]
            for km in managers:
                client = km.client()
                client.start_channels()
                await client.wait_for_ready(timeout=60)
                reply = await client.execute_interactive("6 * 7", timeout=60)
                client.stop_channels()
                assert reply["content"]["status"] == "ok"
            return infos, sockets, [all(os.path.exists(f) for f in s) for s in sockets]
        finally:
            await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers))

    with open(tmp_path / "kernel.log", "w") as log:
        infos, sockets, existed = asyncio.run(two_kernels(log))
    assert [i["transport"] for i in infos] == ["ipc", "ipc"] and infos[0]["ip"] != infos[1]["ip"], infos
    assert existed == [True, True], sockets
    assert not any(os.path.exists(f) for s in sockets for f in s), "socket files left behind"


def test_an_up_to_date_run_imports_no_torch(repo):
    """`cepaper run` of a section that is up to date reads its record and the cache key's sources: no
    torch in its process (its kernels import what the notebooks need)."""
    pipeline.run(["lemma1"])
    paths = json.dumps({k: str(v) for k, v in layout_paths(repo).items()})
    code = f"""
import json, sys
from pathlib import Path
from cepaper.book import cache, pipeline, profiles, results
for module in (cache, pipeline, profiles, results):
    for name, value in json.loads({paths!r}).items():
        if hasattr(module, name):
            setattr(module, name, Path(value))
from cepaper import cli
status = cli.main(["run", "lemma1", "--json"])
print(status, sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(SOURCE_ROOT), "CEPAPER_RESULTS": str(repo / "results")},
    )
    assert p.returncode == 0 and '"cached": true' in p.stdout, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1] == "0 []", p.stdout


def test_results_written_atomically(tmp_path):
    path = files.write_atomic(tmp_path / "a" / "b.json", json.dumps({"x": 1}))
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]
    streamed = files.write_atomic(tmp_path / "c.bin", lambda f: (f.write(b"ab"), f.write(b"c")))
    assert streamed.read_bytes() == b"abc"

    def fails(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(tmp_path / "d.bin", fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.bin"]  # no partial file left


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--profile", "nope"], "profile must be one of"),
        (["run", "nosuchsection"], "section must be one of"),
        (["run", "lemma1", "-p", "no_such_param", "1"], "unknown parameter 'no_such_param'"),
    ],
)
def test_cli_errors_exit_2(argv, message):
    proc = subprocess.run([sys.executable, "-m", "cepaper", *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("device, message", [("tpu", "device must be"), ("cuda", "torch sees no GPU")])
def test_unusable_device_is_a_clear_error(device, message):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=message):
        results.Run("lemma1", "quick", device=device)


def test_git_commit_is_dirty_for_code_not_for_results(tmp_path, monkeypatch):
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "."), git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(results, "REPO", tmp_path)
    head = results.git_commit()
    assert len(head) == 40
    (tmp_path / "results" / "paper").mkdir(parents=True)
    (tmp_path / "results" / "paper" / "a.json").write_text("{}")
    assert results.git_commit() == head, "a run writing its results does not make the code dirty"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results.git_commit() == head + "+dirty"


def test_a_run_with_other_parameters_publishes_apart():
    """`cepaper run -p NAME VALUE` publishes under <profile>+<overrides>, never over the profile's own
    results (which `cepaper book` would then silently re-execute over); how-to-run flags keep the folder."""
    from cepaper.book.profiles import label, plan

    assert label("quick") == "quick" and label("quick", [("n", 32)]) == "quick+n=32"
    assert label("quick", [("level", 0.01), ("target", "parity")]) == "quick+level=0.01,target=parity"
    assert label("paper", [("executor", "slurm"), ("gpus_per_run", 8)]) == "paper"
    long = label("quick", [("widths", [1, 2, 3])])
    assert re.fullmatch(r"quick\+widths=[0-9a-f]{8}", long) and long != label("quick", [("widths", [1, 2, 4])])
    (step,) = plan(["lemma1"], "quick", [("n", 24)], apart=True)
    assert step.section == "lemma1" and step.profile == "quick+n=24" and step.params["n"] == 24
    assert step.dest == results.section_dir("lemma1", "quick+n=24")  # planned once, read by every later step
    (step,) = plan(["lemma1"], "quick", apart=True)
    assert step.profile == "quick" and step.dest == results.section_dir("lemma1", "quick")
    (step,) = plan(["lemma1"], "quick", [("n", 24)])  # the API (and `cepaper run --replace`): in place
    assert step.profile == "quick"


def test_where_results_go_is_one_answer(repo, monkeypatch):
    """results.destination: the folder `cepaper run` hands the notebook, else the store (store=True or
    $CEPAPER_RESULTS), else scratch; a run of `cepaper run` is told by its staging folder."""
    staging = results.STAGING / "quick-lemma1-x" / "quick" / "lemma1"
    assert results.destination("lemma1", "quick", str(staging)) == staging
    assert results.Run("lemma1", "quick", results_dir=str(staging)).where() == "results/quick/lemma1/"
    assert results.destination("lemma1", "quick") == results.section_dir("lemma1", "quick")  # $CEPAPER_RESULTS
    monkeypatch.delenv("CEPAPER_RESULTS")
    assert results.destination("lemma1", "quick", store=True) == results.section_dir("lemma1", "quick")
    assert results.destination("lemma1", "quick").parent == repo / "_build" / "scratch"
    with pytest.raises(ValueError, match="results_dir must be a folder"):
        results.destination("lemma1", "quick", 3)
    with pytest.raises(ValueError, match="results_dir of section lemma1 is chosen by `cepaper run`"):
        pipeline.run(["lemma1"], overrides=[("results_dir", "elsewhere")])


def test_where_results_go_is_found_once_per_run(repo, monkeypatch):
    """`cepaper run` resolves a section's destination once, in its plan (a Step's ``dest``); executing,
    checking the cache and publishing read it from there instead of finding it again."""
    calls = []
    found = results.section_dir

    def counted(section, profile):
        calls.append((section, profile))
        return found(section, profile)

    for module in (results, profiles):
        monkeypatch.setattr(module, "section_dir", counted)
    for status in ("executed", "cached"):
        calls.clear()
        (record,) = pipeline.run(["lemma1"], overrides=[("value", 4)], apart=True)
        assert statuses([record]) == [status] and record["results"] == "results/quick+value=4/lemma1/"
        assert calls == [("lemma1", "quick+value=4")], f"{status}: the destination was looked up {len(calls)} times"
