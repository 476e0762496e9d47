"""Tests of cepaper.runs: seeds (derive_seed), checkpoints and resume, the cached grid runner and the run
cache of long runs (a finished run keyed by its definition, reused after a code change and marked stale,
retrained with rerun_stale), and what code a run depends on (dependencies)."""

import json
import sys

import numpy as np
import pytest
import torch

from cepaper import files, runs
from cepaper.training import executors
from tests.training.test_gd import model_of


@pytest.fixture
def code(tmp_path, monkeypatch):
    """A module ``runcode`` of the computation, in a file the test edits (a code change)."""
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "runcode.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("runcode", None)
    yield folder / "runcode.py"
    sys.modules.pop("runcode", None)


def counting():
    calls = []

    def compute(ckpt):
        calls.append(ckpt)
        return {"value": len(calls)}

    return calls, compute


def test_a_finished_run_is_reused_after_a_code_change_and_marked_stale(tmp_path, code):
    calls, compute = counting()
    first = runs.cached_run(tmp_path / "c", {"seed": 0}, ("runcode",), compute)
    assert first["value"] == 1 and first["stale"] is None and first["code"]["files"]
    assert runs.cached_run(tmp_path / "c", {"seed": 0}, ("runcode",), compute) == first and len(calls) == 1
    code.write_text("VALUE = 2\n")  # the code changes
    again = runs.cached_run(tmp_path / "c", {"seed": 0}, ("runcode",), compute)
    assert len(calls) == 1 and again["value"] == 1  # reused, not retrained
    assert again["stale"] == {"commit": first["code"]["commit"], "files": list(first["code"]["files"])}
    assert again["stale"]["files"][0].endswith("runcode.py")
    assert runs.cached_run(tmp_path / "c", {"seed": 1}, ("runcode",), compute)["value"] == 2  # another run


def test_rerun_stale_retrains_and_keeps_the_old_record(tmp_path, code):
    calls, compute = counting()
    runs.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute)
    assert runs.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute, rerun_stale=True)["value"] == 1  # not stale
    code.write_text("VALUE = 2\n")
    new = runs.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute, rerun_stale=True)
    assert new["value"] == 2 and new["stale"] is None and len(calls) == 2
    key = runs.definition_key({"seed": 0})
    kept = [p.name for p in tmp_path.glob(f"{key}.*.json")]
    assert len(kept) == 1 and json.loads((tmp_path / kept[0]).read_text())["value"] == 1
    assert runs.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute)["stale"] is None


def test_code_version_names_the_commit_and_the_files_the_module_depends_on():
    v = runs.code_version(("cepaper.training.sgd",))
    assert list(v["files"]) == list(runs.dependencies(("cepaper.training.sgd",)))
    assert {"cepaper/training/sgd.py", "cepaper/training/loaders.py", "cepaper/runs.py"} <= set(v["files"])
    assert all(len(h) == 16 for h in v["files"].values())
    assert v["commit"] is None or len(v["commit"].split("+")[0]) == 40


# --- the run cache and resume logic, where mutation testing found it untested -------------------


def test_keys_do_not_depend_on_order_and_take_any_value():
    from pathlib import Path

    assert runs.definition_key({"a": 1, "b": 2}) == runs.definition_key({"b": 2, "a": 1})
    assert runs.definition_key({"root": Path("/data"), "stages": (8, 16)}) == runs.definition_key(
        {"root": "/data", "stages": [8, 16]}
    )
    assert len(runs.definition_key({"a": 1})) == 16 and len(runs.source_key({"a": 1}, ())) == 16
    mods = ("cepaper.training.gd",)
    assert runs.source_key({"a": 1, "b": 2}, mods) == runs.source_key({"b": 2, "a": 1}, mods)
    assert runs.source_key({"root": Path("/data")}, mods) == runs.source_key({"root": "/data"}, mods)
    assert runs.source_key({"a": 1}, mods) != runs.source_key({"a": 1}, mods + ("cepaper.training.adam",))


def test_a_run_computes_into_its_own_checkpoint_and_archives_a_stale_record_by_commit(tmp_path, code):
    calls, compute = counting()
    first = runs.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute)
    key = runs.definition_key({"seed": 0})
    assert calls == [tmp_path / f"{key}.pt"], "the computation resumes from cache/<key>.pt"
    assert runs.cached_run(None, {"seed": 0}, ("runcode",), compute) == {
        "value": 2,
        "code": first["code"],
        "stale": None,
    }
    record = json.loads((tmp_path / f"{key}.json").read_text())
    for commit, name in [("0123456789abcdef0123", "0123456789ab"), (None, "unknown")]:
        code.write_text(f"VALUE = {name!r}\n")
        (tmp_path / f"{key}.json").write_text(json.dumps({**record, "code": {**record["code"], "commit": commit}}))
        runs.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute, rerun_stale=True)
        assert (tmp_path / f"{key}.{name}.json").exists(), name
        record = json.loads((tmp_path / f"{key}.json").read_text())


def test_a_damaged_checkpoint_is_moved_aside_before_the_run_starts_again(tmp_path, code, capsys):
    calls, compute = counting()
    key = runs.definition_key({"seed": 0})
    (tmp_path / f"{key}.pt").write_bytes(b"not a checkpoint")
    runs.cached_run(tmp_path, {"seed": 0}, ("runcode",), lambda ckpt: (calls.append(ckpt.exists()), {"v": 1})[1])
    assert calls == [False] and (tmp_path / f"{key}.pt.corrupt").exists()
    assert "torch.load failed" in capsys.readouterr().err


def test_stale_marks_name_files_added_and_removed_since():
    record = {"code": {"commit": "abc", "files": {"a.py": "1", "gone.py": "2"}}}
    now = {"commit": "def", "files": {"a.py": "1", "new.py": "3"}}
    assert runs.stale_mark(record, (), now) == {"commit": "abc", "files": ["gone.py", "new.py"]}
    assert runs.stale_mark({"code": now}, (), now) is None
    assert runs.stale_mark({}, (), now) == {"commit": None, "files": ["a.py", "new.py"]}
    version = runs.code_version(("cepaper.training.gd",))
    assert runs.stale_mark({"code": version}, ("cepaper.training.gd",)) is None  # the version computed when not given


def test_finished_runs_need_no_job_unless_stale_and_rerun(tmp_path, code):
    calls, compute = counting()
    assert runs.finished_run(tmp_path, {"seed": 0}, ("runcode",)) is None
    made = runs.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute)
    assert runs.finished_run(tmp_path, {"seed": 0}, ("runcode",)) == made
    assert runs.finished_run(tmp_path, {"seed": 0}, ("runcode",), rerun_stale=True) == made, "not stale: reused"
    code.write_text("VALUE = 2\n")
    stale = runs.finished_run(tmp_path, {"seed": 0}, ("runcode",))
    assert stale["stale"]["files"] and stale["value"] == made["value"]
    assert runs.finished_run(tmp_path, {"seed": 0}, ("runcode",), rerun_stale=True) is None
    assert runs.finished_run(tmp_path, {"seed": 0}, ("runcode",), required=("history",)) is None, "damaged"


def test_a_grid_under_an_executor_reuses_finished_and_stale_runs_without_jobs(tmp_path, code):
    """``run_grid`` with an executor: a finished run, stale or not, is read back with its mark and needs
    no job; ``rerun_stale`` submits the stale ones; each job resumes from its own checkpoint."""
    from tests.sections.test_grid_status import Executor

    seen = []
    compute = lambda job, ckpt: (seen.append((job["seed"], ckpt)), {"seed": job["seed"]})[1]
    kw = dict(cache=tmp_path, modules=("runcode",), by_definition=True)
    launch = lambda ex: executors.Launcher(ex, missing_ok=True)
    jobs = [{"seed": 0}, {"seed": 1}]
    ex = Executor()
    first = runs.run_grid(jobs, compute, launcher=launch(ex), **kw)
    assert [r["seed"] for r in first] == [0, 1] and ex.submitted == 2, "two definitions, two runs"
    assert seen == [(j["seed"], tmp_path / f"{runs.definition_key(j)}.pt") for j in jobs]
    code.write_text("VALUE = 2\n")
    ex = Executor()
    again = runs.run_grid(jobs, compute, launcher=launch(ex), **kw)
    assert ex.submitted == 0 and all(r["stale"]["files"] for r in again)
    ex = Executor()
    rerun = runs.run_grid(jobs, compute, launcher=launch(ex), rerun_stale=True, **kw)
    assert ex.submitted == 2 and all(r["stale"] is None for r in rerun)
    assert [r["seed"] for r in runs.run_grid(jobs, compute, launcher=launch(Executor()), **kw, key=None)] == [0, 1]


def test_the_plain_grid_runner_keys_by_source_checks_records_and_passes_checkpoints(tmp_path):
    seen = []
    compute = lambda job, ckpt: (seen.append(ckpt), {"seed": job["seed"]})[1]
    jobs = [{"seed": 0}, {"seed": 1}]
    out = runs.run_grid(jobs, compute, cache=tmp_path, modules=("cepaper.training.gd",), required=("seed",))
    assert out == [{"seed": 0}, {"seed": 1}], "no code version, no stale mark: the source is in the key"
    keys = [runs.source_key(j, ("cepaper.training.gd",)) for j in jobs]
    assert seen == [tmp_path / f"{k}.pt" for k in keys]
    (tmp_path / f"{keys[0]}.json").write_text(json.dumps({"other": 1}))  # a record without what it needs
    again = runs.run_grid(jobs, compute, cache=tmp_path, modules=("cepaper.training.gd",), required=("seed",))
    assert again == out and len(seen) == 3 and (tmp_path / f"{keys[0]}.json.corrupt").exists()


@pytest.mark.parametrize(
    "content, why",
    [("{not json", "not JSON"), ("{}", "an empty record"), ('{"a": 1}', "no 'seed', 'history' in the record")],
)
def test_a_damaged_record_is_moved_aside_saying_why(tmp_path, capsys, content, why):
    path = tmp_path / "r.json"
    path.write_text(content)
    assert files.read_cached(path, ("seed", "history")) is None
    assert (tmp_path / "r.json.corrupt").read_text() == content and not path.exists()
    assert f"{path} is damaged ({why}" in capsys.readouterr().err


def test_resume_refuses_other_settings_naming_only_what_differs(tmp_path):
    import torch

    model = torch.nn.Linear(2, 1)
    path = tmp_path / "c.pt"
    runs.save_checkpoint(path, {"model": model.state_dict(), "settings": {"seed": 0, "lr": 0.1}})
    with pytest.raises(ValueError, match=r"other settings \(checkpoint, now\): \{'seed': \(0, 1\)\}; "):
        runs.resume(path, {"seed": 1, "lr": 0.1}, model=model)
    with pytest.raises(ValueError, match=r"\{'lr': \(0\.1, None\)\}"):
        runs.resume(path, {"seed": 0}, model=model)
    runs.save_checkpoint(path, {"model": model.state_dict(), "settings": None})  # settings not a mapping
    with pytest.raises(ValueError, match=r"\{'seed': \(None, 0\)\}"):
        runs.resume(path, {"seed": 0}, model=model)


def test_the_plain_grid_runner_moves_a_damaged_checkpoint_aside_first(tmp_path, capsys):
    key = runs.source_key({"seed": 0}, ("cepaper.training.gd",))
    (tmp_path / f"{key}.pt").write_bytes(b"not a checkpoint")
    seen = []
    compute = lambda job, ckpt: (seen.append(ckpt.exists()), {"seed": 0})[1]
    runs.run_grid([{"seed": 0}], compute, cache=tmp_path, modules=("cepaper.training.gd",))
    assert seen == [False] and (tmp_path / f"{key}.pt.corrupt").exists()


def test_a_checkpoint_that_cannot_be_read_is_an_error_not_damage(tmp_path):
    """An I/O error (here: a folder where the checkpoint should be) is the user's to fix: raised, and
    nothing is moved aside; a damaged file is moved aside and the run starts afresh."""
    path = tmp_path / "c.pt"
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        runs.load_checkpoint(path)
    assert path.is_dir() and not (tmp_path / "c.pt.corrupt").exists()


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    runs.save_checkpoint(path, {"a": 1})

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        runs.save_checkpoint(path, {"a": 2})
    monkeypatch.undo()
    assert torch.load(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# --------------------------------------------------------------------------------- the run cache


def test_derive_seed_is_the_seed_sequence_of_its_parts():
    """derive_seed(parts) is SeedSequence(parts)'s first word, a string entering as its code points, so
    that runs that differ in one part (a seed, a width, a model's name) draw from different streams."""
    want = np.random.SeedSequence([5, *map(ord, "37x10d")]).generate_state(1, np.uint32)[0]
    assert runs.derive_seed(5, "37x10d") == int(want)
    assert runs.derive_seed(3, 7) == int(np.random.SeedSequence([3, 7]).generate_state(1, np.uint32)[0])
    assert runs.derive_seed(3, 7, bits=64) == int(np.random.SeedSequence([3, 7]).generate_state(1, np.uint64)[0])
    assert runs.derive_seed(5, "37x10d") != runs.derive_seed(6, "37x10d") != runs.derive_seed(6, "37x10e")
    assert runs.derive_seed(1, "a", "b") != runs.derive_seed(1, "b", "a")
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="seed parts must be integers >= 0 or strings"):
            runs.derive_seed(bad)


def test_a_checkpoint_without_its_pieces_is_moved_aside_and_the_run_starts_afresh(tmp_path, capsys):
    model = model_of()
    path = tmp_path / "c.pt"
    runs.save_checkpoint(path, {"settings": {"a": 1}, "epoch": 3})  # no "model"
    assert runs.resume(path, {"a": 1}, model=model) is None
    assert not path.exists() and (tmp_path / "c.pt.corrupt").exists()
    assert "moved aside" in capsys.readouterr().err
    runs.save_checkpoint(path, {"settings": {"a": 1}, "model": model.state_dict()})  # no "epoch"
    assert runs.resume(path, {"a": 1}, model=model, required=("epoch",)) is None and not path.exists()


def test_a_checkpoint_the_run_refuses_says_why_and_is_kept(tmp_path):
    model = model_of()
    path = tmp_path / "c.pt"
    runs.save_checkpoint(path, {"settings": {"world": 2}, "model": model.state_dict(), "epoch": 1})
    with pytest.raises(ValueError, match="cannot resume this run: written by 2 processes"):
        runs.resume(path, {"world": 2}, model=model, refuse=lambda s: f"written by {s['world']} processes")
    with pytest.raises(ValueError, match=r"other settings \(checkpoint, now\): \{'world': \(2, 1\)\}"):
        runs.resume(path, {"world": 1}, model=model)
    assert path.exists(), "a refused checkpoint is kept"
    assert runs.resume(path, {"world": 2}, model=model, refuse=lambda s: None)["epoch"] == 1
