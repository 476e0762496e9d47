"""Tests of the training sections under an executor: `cepaper run --executor/--rerun-stale` reach the
notebooks' parameters (and are an error for a section without them); a grid whose job failed or is
pending keeps its finished runs and counts the others; stale runs are counted with their commit."""

import json

import numpy as np
import pytest

from cepaper import runs
from cepaper.book import profiles
from cepaper.catalog import Dataset
from cepaper.sections import cifar
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
TRAINING = ("cifar", "imagenet")


def images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(
        "toy",
        "train",
        rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 3, n).astype(np.int64),
        source="random",
    )


class Job:
    """A submitit job stand-in: its result computed at submission, or not finished (``done`` False)."""

    def __init__(self, fn, item, job_id, finished):
        self.job_id, self.finished, self.error = job_id, finished, None
        try:
            self.value = fn(item) if finished else None
        except Exception as e:  # kept, raised by result() as submitit does
            self.error = e

    def done(self):
        return self.finished

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class Executor:
    """Submits in this process; the jobs numbered in ``pending`` never finish."""

    folder, cepaper_kind = "jobs", "local"

    def __init__(self, pending=()):
        self.pending, self.submitted = set(pending), 0

    def submit(self, fn, item):
        self.submitted += 1
        return Job(fn, item, str(self.submitted), self.submitted not in self.pending)


@pytest.mark.parametrize("section", TRAINING)
def test_training_notebooks_declare_executor_and_rerun_stale(section):
    path = profiles.notebook_path(section)
    assert {k: v for k, v in profiles.notebook_parameters(path).items() if k in ("executor", "rerun_stale")} == {
        "executor": "inprocess",
        "rerun_stale": False,
    }  # the default: in-process, as CI
    assert profiles.notebook_types(path)["executor"] is str and profiles.notebook_types(path)["rerun_stale"] is bool


def test_cli_run_executor_and_rerun_stale_reach_the_notebook_parameters(monkeypatch):
    from cepaper import cli
    from cepaper.book import pipeline

    seen = {}

    def fake_run(sections, profile, overrides, force=False, reuse_stored=False, apart=False):
        seen.update({s: profiles.resolve_parameters(s, profile, overrides) for s in sections})
        return []

    monkeypatch.setattr(pipeline, "run", fake_run)
    argv = ["run", "cifar", "imagenet", "--profile", "paper", "--executor", "slurm", "--rerun-stale"]
    cli.main(argv + ["--gpus-per-run", "8", "--no-wait"])
    for section in TRAINING:
        assert seen[section]["executor"] == "slurm" and seen[section]["rerun_stale"] is True
        assert seen[section]["gpus_per_run"] == 8 and seen[section]["wait"] is False
        assert seen[section]["profile"] == "paper"
    seen.clear()
    cli.main(["run", "cifar", "-p", "n_runs", "2"])  # no flags: the notebook's defaults
    assert seen["cifar"]["executor"] == "inprocess" and seen["cifar"]["rerun_stale"] is False
    assert seen["cifar"]["gpus_per_run"] == 1 and seen["cifar"]["wait"] is True
    assert seen["cifar"]["n_runs"] == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["run", "mnist", "--executor", "local"],
            "--executor is a parameter (executor) of the sections that train "
            "grids (cifar, imagenet); section mnist has none",
        ),
        (["run", "cifar", "alpha", "--rerun-stale"], "section alpha has none: name only those sections"),
        (["run", "--executor", "slurm"], "--executor is a parameter"),  # all sections: most have none
    ],
)
def test_cli_run_flag_for_a_section_without_it_exits_2(argv, message, monkeypatch, capsys):
    from cepaper import cli
    from cepaper.book import pipeline

    monkeypatch.setattr(pipeline, "run", lambda *a, **k: pytest.fail("executed"))
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_failed_and_a_pending_job_are_missing_and_the_finished_runs_kept(tmp_path, monkeypatch):
    def train(*a, seed, **k):
        if seed == 1:
            raise RuntimeError("CUDA out of memory\n(a long log)\nCUDA out of memory. Tried to allocate 2 GiB")
        return HIST

    monkeypatch.setattr(grids, "train_recipe", train)
    kw = dict(net=grids.Network("resnext29", 3, (8, 16, 32), 1), cache=tmp_path)
    ex = Executor(pending={3})
    records = grids.train_recipe_grid(
        ["1x2d", "2x1d"],
        "toy",
        images(),
        images(seed=1),
        [0, 1],
        **kw,
        launcher=executors.Launcher(ex, missing_ok=True, wait=False),
    )
    assert [(r["config"], r["seed"], r.get("missing")) for r in records] == [
        ("1x2d", 0, None),
        ("1x2d", 1, "failed"),
        ("2x1d", 0, "pending"),
        ("2x1d", 1, "failed"),
    ]
    assert records[1]["why"] == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    assert [m["job"] for m in grids.missing_runs(records)] == ["2", "3", "4"]
    assert grids.finished_runs(records) == records[:1]
    summ = grids.grid_summary(records)
    assert summ.config.tolist() == ["1x2d"] and summ.runs.tolist() == [1]  # 2x1d: no finished run, no row
    assert grids.run_status(records) == (
        "1 of the 4 runs finished. 3 are missing (2 failed, e.g. 1x2d seed 1: RuntimeError: CUDA out of memory. "
        "Tried to allocate 2 GiB; 1 pending): the tables show the finished runs, and running again resumes the "
        "others."
    )
    assert len([p for p in tmp_path.glob("*.json") if not p.name.endswith(".job.json")]) == 1  # the finished run
    (marker,) = tmp_path.glob("*.job.json")  # the pending job's, until it ends
    assert json.loads(marker.read_text())["job"] == "3"

    # run again while that job still runs: it is not submitted a second time, and is still pending
    monkeypatch.setattr(executors, "alive", lambda m: m["job"] == "3")
    ex = Executor(pending={1, 2})
    still = grids.train_recipe_grid(
        ["1x2d", "2x1d"],
        "toy",
        images(),
        images(seed=1),
        [0, 1],
        **kw,
        launcher=executors.Launcher(ex, missing_ok=True, wait=False),
    )
    assert ex.submitted == 2, "the finished run needs no job, the running one is not submitted again"
    assert still[2]["missing"] == "pending" and still[2]["job"] == "3" and "submitted 20" in still[2]["why"]

    # the job ended (without a record: killed), so the run is submitted again and resumes
    monkeypatch.setattr(executors, "alive", lambda m: False)
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: HIST)  # run again: the others finish
    ex = Executor()
    again = grids.train_recipe_grid(
        ["1x2d", "2x1d"],
        "toy",
        images(),
        images(seed=1),
        [0, 1],
        **kw,
        launcher=executors.Launcher(ex, missing_ok=True),
    )
    assert grids.missing_runs(again) == [] and grids.run_status(again) == ""
    assert again[0] == records[0] and ex.submitted == 3
    assert not list(tmp_path.glob("*.job.json")), "a job's marker goes when the job has ended"


def test_waiting_for_a_job_submitted_earlier_reads_its_record_when_it_ends(tmp_path, monkeypatch):
    """A grid run again (``wait=True``) while an earlier call's job still runs waits for that job, and
    takes the record the job wrote; a job that ended without one is a failed run."""
    kw = dict(net=grids.Network("resnext29", 3, (8, 16, 32), 1), cache=tmp_path)
    grid = lambda ex: grids.train_recipe_grid(
        ["1x2d"],
        "toy",
        images(),
        images(seed=1),
        [0, 1],
        **kw,
        launcher=executors.Launcher(ex, missing_ok=True, wait=False),
    )
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: HIST)
    first = grid(Executor(pending={1, 2}))
    assert [r.get("missing") for r in first] == ["pending", "pending"]
    markers = sorted(tmp_path.glob("*.job.json"))
    ends = {"1": iter([False]), "2": iter([True, False, False])}  # seed 0's job has ended; seed 1's runs a while
    monkeypatch.setattr(executors, "alive", lambda m: next(ends[m["job"]]))
    monkeypatch.setattr(executors.time, "sleep", lambda s: None)
    done = grids.train_recipe_grid(
        ["1x2d"], "toy", images(), images(seed=1), [0], **kw, launcher=executors.Launcher(Executor(), missing_ok=True)
    )  # seed 0's job ended without a record: submitted again
    assert done[0].get("missing") is None
    ex = Executor()
    waited = grids.train_recipe_grid(
        ["1x2d"], "toy", images(), images(seed=1), [0, 1], **kw, launcher=executors.Launcher(ex, missing_ok=True)
    )
    assert ex.submitted == 0, "neither is submitted again: seed 0's record is there, seed 1's job was waited for"
    assert waited[0]["final_top1"] == done[0]["final_top1"]
    assert waited[1]["missing"] == "failed" and "ended without a result" in waited[1]["why"]
    assert not any(m.exists() for m in markers)


def test_a_failed_job_without_missing_ok_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        grids.train_recipe_grid(
            ["1x2d"],
            "toy",
            images(),
            images(seed=1),
            [0],
            net=grids.Network("resnext29", 3, (8,), 1),
            cache=tmp_path,
            launcher=executors.Launcher(Executor()),
        )
    with pytest.raises(RuntimeError, match="boom"):  # in this process: an error, missing_ok or not
        grids.train_recipe_grid(
            ["1x2d"],
            "toy",
            images(),
            images(seed=1),
            [0],
            net=grids.Network("resnext29", 3, (8,), 1),
            cache=tmp_path,
            launcher=executors.Launcher(missing_ok=True),
        )
    with pytest.raises(ValueError, match="state must be one of failed, pending, got 'lost'"):
        executors.missing("lost", "?")


def test_a_missing_model_reads_not_run_in_the_paper_table():
    records = [
        {
            "dataset": "cifar10",
            "arch": "resnext29",
            "config": "37x10d",
            "recipe": "cifar",
            "seed": 0,
            "params": 1,
            "history": HIST,
            "stale": None,
        },
        {
            "dataset": "cifar10",
            "arch": "resnext29",
            "config": "1x128d",
            "recipe": "cifar",
            "seed": 0,
            "missing": "failed",
            "why": "killed",
            "job": "7",
        },
    ]
    specs = cifar.design_models(["1x128d"])
    t = cifar.paper_table("1a", specs, grids.grid_summary(records, last=1), scaled=False).set_index("paper model")
    assert t.loc["1x128d", "our C10"] == "not run" and t.loc["37x10d", "our C10"] == "40.00 (1)"


def test_stale_runs_are_counted_with_the_commit_that_made_them(tmp_path, monkeypatch):
    monkeypatch.setattr(grids, "train_recipe", lambda *a, **k: HIST)
    kw = dict(net=grids.Network("resnext29", 3, (8, 16, 32), 1), cache=tmp_path)
    first = grids.train_recipe_grid(["1x2d"], "toy", images(), images(seed=1), [0, 1], **kw)
    assert grids.run_status(first) == ""
    real = runs.code_version
    monkeypatch.setattr(
        runs,
        "code_version",
        lambda modules: {"commit": "e" * 40, "files": {**real(modules)["files"], "cepaper/training/sgd.py": "0" * 16}},
    )
    again = grids.train_recipe_grid(["1x2d", "2x1d"], "toy", images(), images(seed=1), [0, 1], **kw)
    made = (first[0]["code"]["commit"] or "unknown")[:12]
    assert grids.grid_summary(again).stale.tolist() == [2, 0]
    assert grids.run_status(again) == (
        f"4 of the 4 runs finished. 2 runs are stale, trained by older code (commit {made}, changed since: "
        "cepaper/training/sgd.py): reused as they are, and --rerun-stale trains them again."
    )


@pytest.mark.parametrize("section", TRAINING)
def test_the_section_builds_one_launcher_and_every_grid_gets_it(section, tmp_path, monkeypatch):
    """``training_setup`` builds the launcher once from the notebook's ``executor, gpus_per_run, wait,
    rerun_stale``; ``section.train`` hands that same object to every grid it trains."""
    import pandas as pd

    from cepaper import data
    from cepaper.book import results
    from cepaper.sections import imagenet

    monkeypatch.setattr(results, "checkpoint_dir", lambda s, p: tmp_path / s)
    _, device, launcher = cifar.training_setup(section, "quick", "cpu", "local", 0, False, True, None)
    assert device == "cpu" and (launcher.wait, launcher.rerun_stale, launcher.missing_ok) == (False, True, True)
    assert launcher.executor.folder == (tmp_path / section / "jobs").resolve()
    seen = []
    monkeypatch.setattr(grids, "train_recipe_grid", lambda *a, **kw: seen.append(kw) or [])
    monkeypatch.setattr(data, "load", lambda name, split, root=None, n=None: images())
    kw = dict(epochs=1, cache=tmp_path, launcher=launcher, device="cpu", channels_last=True, bf16=False)
    if section == "cifar":
        runs_ = [{"config": "1x2d", "recipe": "cifar"}, {"config": "1x2d", "recipe": "cifar_1gpu"}]
        cifar.train(runs_, ["cifar10", "cifar100"], [0], None, 8, 8, (8,), 1, **kw)
    else:
        models = pd.DataFrame(
            {"dataset": ["imagenet32", "imagenet64"], "arch": ["resnext29", "resnext38"], "config": ["2x2d"] * 2}
        ).assign(table=["3", "4"])
        status = pd.DataFrame({"dataset": models.dataset, "found": True, "source or reason": ""})
        monkeypatch.setattr(imagenet, "save_grid", lambda run, records, last: pd.DataFrame())
        imagenet.train(None, True, models, status, None, [0], **kw, workers=0)
    assert len(seen) == (4 if section == "cifar" else 2)
    assert all(k["launcher"] is launcher for k in seen)
    assert all(k["hardware"] == grids.Hardware("cpu", True, False, 0) for k in seen)


def test_a_grid_takes_about_a_dozen_parameters():
    """Issue 23: the launch settings travel as one launcher, the model's and the hardware's as one object
    each, so ``train_recipe_grid`` takes 12 parameters (it took 21)."""
    import inspect

    assert len(inspect.signature(grids.train_recipe_grid).parameters) <= 12
    with pytest.raises(ValueError, match="net must be a grids.Network, got 'resnext29'"):
        grids.train_recipe_grid(["1x2d"], "toy", images(), images(), [0], net="resnext29")
