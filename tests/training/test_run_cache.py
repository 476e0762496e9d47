"""Tests of the run cache of long runs (cepaper.runs.cached_run, grids.train_recipe_grid): a
finished run is keyed by its definition, reused after a code change and marked stale (which commit
made it, which files changed since), retrained with rerun_stale (the old record kept), and the CLI's
--rerun-stale."""

import json

import numpy as np

from cepaper import runs
from cepaper.catalog import Dataset
from cepaper.training import executors, grids

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
    kw = dict(net=grids.Network("resnext29", 3, (8, 16, 32), 1), cache=tmp_path)
    first = grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw)
    assert first[0]["stale"] is None and len(calls) == 1
    another_device = grids.Hardware("meta")
    grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw, hardware=another_device)
    assert len(calls) == 1
    real = runs.code_version
    monkeypatch.setattr(
        runs,
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
    rerun = executors.Launcher(rerun_stale=True)
    grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw, launcher=rerun)
    assert len(calls) == 2
    grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw, epochs=2)  # another definition
    assert len(calls) == 3


def test_an_edit_of_the_loaders_marks_a_finished_run_stale(tmp_path, monkeypatch):
    """The stale check follows the grid's imports (:func:`cepaper.runs.dependencies`): an edit of
    ``training/loaders.py``, which no list named by hand, marks a finished run stale, naming the file.
    (The code is read from a copy of the package, so that the test edits no file of the checkout.)"""
    import shutil

    from cepaper import runs

    shutil.copytree(runs.ROOT / "cepaper", tmp_path / "src" / "cepaper", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runs, "ROOT", tmp_path / "src")
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: HIST)
    kw = dict(net=grids.Network("resnext29", 3, (8, 16, 32), 1), cache=tmp_path / "cache")
    first = grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw)
    assert first[0]["stale"] is None and "cepaper/training/loaders.py" in first[0]["code"]["files"]
    loaders = tmp_path / "src" / "cepaper" / "training" / "loaders.py"
    loaders.write_text(loaders.read_text() + "# edited\n")
    again = grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0], **kw)
    assert again[0]["stale"]["files"] == ["cepaper/training/loaders.py"]
    assert again[0]["wall_s"] == first[0]["wall_s"], "reused, not trained again"


def test_a_changed_recipe_is_another_run(tmp_path, monkeypatch):
    from dataclasses import replace

    from cepaper.training import recipes

    calls = []
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: calls.append(k) or HIST)
    kw = dict(net=grids.Network("resnext29", 3, (8, 16, 32), 1), cache=tmp_path)
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
        seen.append(kw["launcher"].rerun_stale)
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
                "stale": None if kw["launcher"].rerun_stale else stale,
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


def test_a_finished_run_on_other_data_is_not_reused(tmp_path, monkeypatch):
    """Issue 24 (a held-out mutant): the run cache's key must hold the data. A run's definition changes
    with the images (their digest), where they come from (the source, under the data root) and how
    many there are; a finished run on other data is never reused for this data's rows."""
    from dataclasses import replace

    calls = []
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: calls.append(1) or HIST)
    kw = dict(net=grids.Network("resnext29", 3, (8, 16, 32), 1), cache=tmp_path)
    test = images(seed=1)
    grid = lambda train: grids.train_recipe_grid(["1x2d"], "toy", train, test, [0], **kw)
    grid(images())
    grid(images())
    assert len(calls) == 1, "the same data: reused"
    other_pixels = images()
    other_pixels.x[0, 0, 0, 0] ^= 1
    other_source = replace(images(), source="another data root")
    fewer = images(n=15)
    for i, train in enumerate((other_pixels, other_source, fewer), start=2):
        (record,) = grid(train)
        assert len(calls) == i and record["stale"] is None, "other data: trained, not reused"
    assert len({p.name for p in tmp_path.glob("*.json")}) == 4, "one record per data"
