"""Tests of the run cache of long runs (cepaper.training.spine.cached_run, grids.train_recipe_grid): a
finished run is keyed by its definition, reused after a code change and marked stale (which commit
made it, which files changed since), retrained with rerun_stale (the old record kept), and the CLI's
--rerun-stale."""

import json
import sys

import numpy as np
import pytest

from cepaper.catalog import Dataset
from cepaper.training import grids, spine

HIST = {
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
    first = spine.cached_run(tmp_path / "c", {"seed": 0}, ("runcode",), compute)
    assert first["value"] == 1 and first["stale"] is None and first["code"]["files"]
    assert spine.cached_run(tmp_path / "c", {"seed": 0}, ("runcode",), compute) == first and len(calls) == 1
    code.write_text("VALUE = 2\n")  # the code changes
    again = spine.cached_run(tmp_path / "c", {"seed": 0}, ("runcode",), compute)
    assert len(calls) == 1 and again["value"] == 1  # reused, not retrained
    assert again["stale"] == {"commit": first["code"]["commit"], "files": list(first["code"]["files"])}
    assert again["stale"]["files"][0].endswith("runcode.py")
    assert spine.cached_run(tmp_path / "c", {"seed": 1}, ("runcode",), compute)["value"] == 2  # another run


def test_rerun_stale_retrains_and_keeps_the_old_record(tmp_path, code):
    calls, compute = counting()
    spine.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute)
    assert spine.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute, rerun_stale=True)["value"] == 1  # not stale
    code.write_text("VALUE = 2\n")
    new = spine.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute, rerun_stale=True)
    assert new["value"] == 2 and new["stale"] is None and len(calls) == 2
    key = spine.definition_key({"seed": 0})
    kept = [p.name for p in tmp_path.glob(f"{key}.*.json")]
    assert len(kept) == 1 and json.loads((tmp_path / kept[0]).read_text())["value"] == 1
    assert spine.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute)["stale"] is None


def test_code_version_names_the_commit_and_the_files():
    v = spine.code_version(("cepaper.training.sgd",))
    assert list(v["files"]) == ["cepaper/training/sgd.py"] and len(v["files"]["cepaper/training/sgd.py"]) == 16
    assert v["commit"] is None or len(v["commit"].split("+")[0]) == 40


def images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(
        "toy",
        "train",
        rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 3, n).astype(np.int64),
        source="random",
    )


def test_training_grid_is_keyed_by_definition_not_device_or_code(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: calls.append(k) or HIST)
    kw = dict(arch="resnext29", stages=(8, 16, 32), depth=1, classes=3, cache=tmp_path)
    first = grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw)
    assert first[0]["stale"] is None and len(calls) == 1
    grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw, device="meta")  # another device
    assert len(calls) == 1
    real = spine.code_version
    monkeypatch.setattr(
        spine,
        "code_version",
        lambda modules: {"commit": "f" * 40, "files": {**real(modules)["files"], "cepaper/training/sgd.py": "0" * 16}},
    )
    again = grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw)
    assert len(calls) == 1 and again[0]["stale"]["files"] == ["cepaper/training/sgd.py"]
    assert again[0]["stale"]["commit"] == first[0]["code"]["commit"]
    assert grids.stale_runs(again) == [
        {"dataset": "toy", "config": "1x2d", "recipe": "cifar", "seed": 0, **again[0]["stale"]}
    ]
    assert grids.grid_summary(again).stale.tolist() == [1] and grids.grid_summary(first).stale.tolist() == [0]
    grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw, rerun_stale=True)
    assert len(calls) == 2
    grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw, epochs=2)  # another definition
    assert len(calls) == 3


def test_a_changed_recipe_is_another_run(tmp_path, monkeypatch):
    from dataclasses import replace

    from cepaper.training import recipes

    calls = []
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: calls.append(k) or HIST)
    kw = dict(arch="resnext29", stages=(8, 16, 32), depth=1, classes=3, cache=tmp_path)
    grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw)
    monkeypatch.setitem(recipes.RECIPES, "cifar", replace(recipes.RECIPES["cifar"], lr=0.05))
    grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw)
    assert len(calls) == 2


def test_cli_train_rerun_stale_and_stale_report(tmp_path, monkeypatch, capsys):
    from cepaper import cli
    from cepaper.book import results

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "cifar10.npz",
        x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 8),
        x_test=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 4),
    )
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(results, "checkpoint_dir", lambda s, p: tmp_path / "ckpt")
    seen = []
    stale = {"commit": "a" * 40, "files": ["cepaper/training/sgd.py"]}

    def grid(configs, dataset, train, test, seeds, **kw):
        seen.append(kw["rerun_stale"])
        return [
            {
                "dataset": dataset,
                "arch": "resnext29",
                "config": configs[0],
                "recipe": "cifar",
                "seed": 0,
                "params": 1,
                "history": HIST,
                "final_top1": 40.0,
                "final_top5": 10.0,
                "wall_s": 0.1,
                "stale": None if kw["rerun_stale"] else stale,
            }
        ]

    monkeypatch.setattr(grids, "train_recipe_grid", grid)
    argv = ["train", "--arch", "resnext29", "--config", "1x4d", "--dataset", "cifar10", "--data-root", str(tmp_path)]
    cli.main(argv)
    out = capsys.readouterr().out
    assert (
        "stale: seed 0 was trained by older code (commit aaaaaaaaaaaa; changed since: cepaper/training/sgd.py)" in out
    )
    cli.main(argv + ["--rerun-stale", "--json"])
    assert seen == [False, True] and json.loads(capsys.readouterr().out)["stale"] == []


# --- the spine's cache and resume logic, where mutation testing found it untested -------------------


def test_keys_do_not_depend_on_order_and_take_any_value():
    from pathlib import Path

    assert spine.definition_key({"a": 1, "b": 2}) == spine.definition_key({"b": 2, "a": 1})
    assert spine.definition_key({"root": Path("/data"), "stages": (8, 16)}) == spine.definition_key(
        {"root": "/data", "stages": [8, 16]}
    )
    assert len(spine.definition_key({"a": 1})) == 16 and len(spine.source_key({"a": 1}, ())) == 16
    mods = ("cepaper.training.gd",)
    assert spine.source_key({"a": 1, "b": 2}, mods) == spine.source_key({"b": 2, "a": 1}, mods)
    assert spine.source_key({"root": Path("/data")}, mods) == spine.source_key({"root": "/data"}, mods)
    assert spine.source_key({"a": 1}, mods) != spine.source_key({"a": 1}, mods + ("cepaper.training.adam",))


def test_a_run_computes_into_its_own_checkpoint_and_archives_a_stale_record_by_commit(tmp_path, code):
    calls, compute = counting()
    first = spine.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute)
    key = spine.definition_key({"seed": 0})
    assert calls == [tmp_path / f"{key}.pt"], "the computation resumes from cache/<key>.pt"
    assert spine.cached_run(None, {"seed": 0}, ("runcode",), compute) == {
        "value": 2,
        "code": first["code"],
        "stale": None,
    }
    record = json.loads((tmp_path / f"{key}.json").read_text())
    for commit, name in [("0123456789abcdef0123", "0123456789ab"), (None, "unknown")]:
        code.write_text(f"VALUE = {name!r}\n")
        (tmp_path / f"{key}.json").write_text(json.dumps({**record, "code": {**record["code"], "commit": commit}}))
        spine.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute, rerun_stale=True)
        assert (tmp_path / f"{key}.{name}.json").exists(), name
        record = json.loads((tmp_path / f"{key}.json").read_text())


def test_a_damaged_checkpoint_is_moved_aside_before_the_run_starts_again(tmp_path, code, capsys):
    calls, compute = counting()
    key = spine.definition_key({"seed": 0})
    (tmp_path / f"{key}.pt").write_bytes(b"not a checkpoint")
    spine.cached_run(tmp_path, {"seed": 0}, ("runcode",), lambda ckpt: (calls.append(ckpt.exists()), {"v": 1})[1])
    assert calls == [False] and (tmp_path / f"{key}.pt.corrupt").exists()
    assert "torch.load failed" in capsys.readouterr().err


def test_stale_marks_name_files_added_and_removed_since():
    record = {"code": {"commit": "abc", "files": {"a.py": "1", "gone.py": "2"}}}
    now = {"commit": "def", "files": {"a.py": "1", "new.py": "3"}}
    assert spine.stale_mark(record, (), now) == {"commit": "abc", "files": ["gone.py", "new.py"]}
    assert spine.stale_mark({"code": now}, (), now) is None
    assert spine.stale_mark({}, (), now) == {"commit": None, "files": ["a.py", "new.py"]}
    version = spine.code_version(("cepaper.training.gd",))
    assert spine.stale_mark({"code": version}, ("cepaper.training.gd",)) is None  # the version computed when not given


def test_finished_runs_need_no_job_unless_stale_and_rerun(tmp_path, code):
    calls, compute = counting()
    assert spine.finished_run(tmp_path, {"seed": 0}, ("runcode",)) is None
    made = spine.cached_run(tmp_path, {"seed": 0}, ("runcode",), compute)
    assert spine.finished_run(tmp_path, {"seed": 0}, ("runcode",)) == made
    assert spine.finished_run(tmp_path, {"seed": 0}, ("runcode",), rerun_stale=True) == made, "not stale: reused"
    code.write_text("VALUE = 2\n")
    stale = spine.finished_run(tmp_path, {"seed": 0}, ("runcode",))
    assert stale["stale"]["files"] and stale["value"] == made["value"]
    assert spine.finished_run(tmp_path, {"seed": 0}, ("runcode",), rerun_stale=True) is None
    assert spine.finished_run(tmp_path, {"seed": 0}, ("runcode",), required=("history",)) is None, "damaged"


def test_a_grid_under_an_executor_reuses_finished_and_stale_runs_without_jobs(tmp_path, code):
    """``run_grid`` with an executor: a finished run, stale or not, is read back with its mark and needs
    no job; ``rerun_stale`` submits the stale ones; each job resumes from its own checkpoint."""
    from tests.sections.test_grid_status import Executor

    seen = []
    compute = lambda job, ckpt: (seen.append((job["seed"], ckpt)), {"seed": job["seed"]})[1]
    kw = dict(cache=tmp_path, modules=("runcode",), by_definition=True, missing_ok=True)
    jobs = [{"seed": 0}, {"seed": 1}]
    ex = Executor()
    first = spine.run_grid(jobs, compute, executor=ex, **kw)
    assert [r["seed"] for r in first] == [0, 1] and ex.submitted == 2, "two definitions, two runs"
    assert seen == [(j["seed"], tmp_path / f"{spine.definition_key(j)}.pt") for j in jobs]
    code.write_text("VALUE = 2\n")
    ex = Executor()
    again = spine.run_grid(jobs, compute, executor=ex, **kw)
    assert ex.submitted == 0 and all(r["stale"]["files"] for r in again)
    ex = Executor()
    rerun = spine.run_grid(jobs, compute, executor=ex, rerun_stale=True, **kw)
    assert ex.submitted == 2 and all(r["stale"] is None for r in rerun)
    assert [r["seed"] for r in spine.run_grid(jobs, compute, executor=Executor(), **kw, key=None)] == [0, 1]


def test_the_plain_grid_runner_keys_by_source_checks_records_and_passes_checkpoints(tmp_path):
    seen = []
    compute = lambda job, ckpt: (seen.append(ckpt), {"seed": job["seed"]})[1]
    jobs = [{"seed": 0}, {"seed": 1}]
    out = spine.run_grid(jobs, compute, cache=tmp_path, modules=("cepaper.training.gd",), required=("seed",))
    assert out == [{"seed": 0}, {"seed": 1}], "no code version, no stale mark: the source is in the key"
    keys = [spine.source_key(j, ("cepaper.training.gd",)) for j in jobs]
    assert seen == [tmp_path / f"{k}.pt" for k in keys]
    (tmp_path / f"{keys[0]}.json").write_text(json.dumps({"other": 1}))  # a record without what it needs
    again = spine.run_grid(jobs, compute, cache=tmp_path, modules=("cepaper.training.gd",), required=("seed",))
    assert again == out and len(seen) == 3 and (tmp_path / f"{keys[0]}.json.corrupt").exists()


@pytest.mark.parametrize(
    "content, why",
    [("{not json", "not JSON"), ("{}", "an empty record"), ('{"a": 1}', "no 'seed', 'history' in the record")],
)
def test_a_damaged_record_is_moved_aside_saying_why(tmp_path, capsys, content, why):
    path = tmp_path / "r.json"
    path.write_text(content)
    assert spine.read_cached(path, ("seed", "history")) is None
    assert (tmp_path / "r.json.corrupt").read_text() == content and not path.exists()
    assert f"{path} is damaged ({why}" in capsys.readouterr().err


def test_resume_refuses_other_settings_naming_only_what_differs(tmp_path):
    import torch

    model = torch.nn.Linear(2, 1)
    path = tmp_path / "c.pt"
    spine.save_checkpoint(path, {"model": model.state_dict(), "settings": {"seed": 0, "lr": 0.1}})
    with pytest.raises(ValueError, match=r"other settings \(checkpoint, now\): \{'seed': \(0, 1\)\}; "):
        spine.resume(path, {"seed": 1, "lr": 0.1}, model=model)
    with pytest.raises(ValueError, match=r"\{'lr': \(0\.1, None\)\}"):
        spine.resume(path, {"seed": 0}, model=model)
    spine.save_checkpoint(path, {"model": model.state_dict(), "settings": None})  # settings not a mapping
    with pytest.raises(ValueError, match=r"\{'seed': \(None, 0\)\}"):
        spine.resume(path, {"seed": 0}, model=model)


def test_the_plain_grid_runner_moves_a_damaged_checkpoint_aside_first(tmp_path, capsys):
    key = spine.source_key({"seed": 0}, ("cepaper.training.gd",))
    (tmp_path / f"{key}.pt").write_bytes(b"not a checkpoint")
    seen = []
    compute = lambda job, ckpt: (seen.append(ckpt.exists()), {"seed": 0})[1]
    spine.run_grid([{"seed": 0}], compute, cache=tmp_path, modules=("cepaper.training.gd",))
    assert seen == [False] and (tmp_path / f"{key}.pt.corrupt").exists()


def test_a_checkpoint_that_cannot_be_read_is_an_error_not_damage(tmp_path):
    """An I/O error (here: a folder where the checkpoint should be) is the user's to fix: raised, and
    nothing is moved aside; a damaged file is moved aside and the run starts afresh."""
    path = tmp_path / "c.pt"
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        spine.load_checkpoint(path)
    assert path.is_dir() and not (tmp_path / "c.pt.corrupt").exists()
