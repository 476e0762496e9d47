"""Tests of cepaper.training.executors: each run of a grid a submitit job (the local executor here),
the records gathered in order into the run cache; a SLURM executor without SLURM is a clear error."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cepaper import runs
from cepaper.training import executors

ROOT = Path(__file__).resolve().parents[2]


def test_local_executor_runs_each_run_as_a_job_and_gathers_the_records(tmp_path):
    ex = executors.executor("local", tmp_path / "jobs", gpus_per_job=0, timeout_min=5)
    jobs = [{"seed": 0}, {"seed": 1}]
    compute = lambda job, ckpt: {"seed": job["seed"], "pid": os.getpid(), "ckpt": str(ckpt)}
    out = runs.run_grid(
        jobs,
        compute,
        cache=tmp_path / "cache",
        modules=("cepaper.runs",),
        by_definition=True,
        launcher=executors.Launcher(ex, poll_s=0.2),  # the second job waits for the first one's slot
    )
    assert [r["seed"] for r in out] == [0, 1] and all(r["pid"] != os.getpid() for r in out)  # in other processes
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    again = runs.run_grid(
        jobs,
        lambda job, ckpt: pytest.fail("trained again"),
        cache=tmp_path / "cache",
        modules=("cepaper.runs",),
        by_definition=True,
    )
    assert [r["pid"] for r in again] == [r["pid"] for r in out]


def test_inprocess_is_no_executor(tmp_path):
    assert executors.executor("inprocess", tmp_path) is None
    assert executors.map_runs(None, lambda x: x + 1, [1, 2]) == [2, 3]
    with pytest.raises(ValueError, match="executor must be one of inprocess, local, slurm, got 'k8s'"):
        executors.executor("k8s", tmp_path)


def test_slurm_without_slurm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(ValueError, match="executor slurm needs SLURM, and there is no sbatch"):
        executors.executor("slurm", tmp_path)


def test_cli_train_executor_slurm_without_slurm(tmp_path, monkeypatch, capsys):
    from cepaper import cli

    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no sbatch
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path / "results"))
    argv = ["train", "--arch", "resnext29", "--config", "1x4d", "--dataset", "cifar10", "--executor", "slurm"]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "executor slurm needs SLURM" in err, err
    assert not (tmp_path / "results").exists()


def test_a_failed_local_job_is_missing_with_its_error_and_the_others_gathered(tmp_path):
    ex = executors.executor("local", tmp_path / "jobs", gpus_per_job=0, timeout_min=5)

    def fn(x):
        if x == 1:
            raise ValueError(f"run {x} diverged")
        return x * 10

    out = executors.map_runs(ex, fn, [0, 1, 2], missing_ok=True, poll_s=0.2)
    assert out[0] == 0 and out[2] == 20
    assert out[1]["missing"] == "failed" and out[1]["why"] == "ValueError: run 1 diverged", out[1]
    assert out[1]["job"] is not None


def test_a_job_that_ended_without_a_result_says_its_state():
    from submitit.core.utils import UncompletedJobError

    e = UncompletedJobError(
        "Job 12 (task: 0) with path /x/12_0_result.pkl\nhas not produced any output "
        "(state: TIMEOUT)\nError stream produced:\n----\nslurmstepd: CANCELLED"
    )
    assert executors._failure(e) == "the job ended without a result (state TIMEOUT)"
    assert executors._failure(RuntimeError("a\nCUDA out of memory")) == "RuntimeError: CUDA out of memory"


def test_a_killed_local_job_reads_as_killed_not_finished(tmp_path, monkeypatch):
    """Issue 24: a job killed by a signal was described as ``state FINISHED``. A local job whose task
    is killed (SIGKILL) is missing, ``failed``, and its reason says it was killed; where the job's own
    process died of a signal, the reason names it."""
    import signal
    import subprocess
    import sys

    from submitit.core import core

    monkeypatch.setattr(core.Job, "_results_timeout_s", 0)  # no 15 s wait for a result a slow shared disk may show late
    ex = executors.executor("local", tmp_path / "jobs", gpus_per_job=0, timeout_min=5)
    (out,) = executors.map_runs(ex, lambda x: os.kill(os.getpid(), signal.SIGKILL), [0], missing_ok=True)
    assert out["missing"] == "failed" and "killed" in out["why"] and "FINISHED" not in out["why"], out

    class Job:  # a job whose controller process died of SIGTERM
        _process = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])

    Job._process.wait()
    e = RuntimeError("Job 3 (task: 0) with path /x\nhas not produced any output (state: INTERRUPTED)")
    assert executors._failure(e, Job()) == "the job was killed by SIGTERM before it made a result"


def test_local_jobs_get_their_own_gpus_and_no_more_run_at_once_than_fit(monkeypatch):
    """On a machine of 8 GPUs with 2 per job, at most 4 jobs run at once and no two share a GPU (submitit's
    LocalExecutor would give every job GPUs 0..1 unless told its visible_gpus)."""
    assert executors.gpu_slots(8, 2) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert executors.gpu_slots(0, 1) == [()] and executors.gpu_slots(3, 2) == [(0, 1)]

    class Job:
        def __init__(self, ex, gpus, value):
            self.ex, self.gpus, self.value, self.polls, self.job_id = ex, gpus, value, 0, str(value)

        def done(self):
            self.polls += 1
            finished = self.polls > 1 + self.value % 3  # jobs end at different times
            if finished and self in self.ex.running:
                self.ex.running.remove(self)
            return finished

        def result(self):
            return self.value * 10

    class FakeLocal:
        def __init__(self):
            self.cepaper_slots, self.params, self.running, self.peak = executors.gpu_slots(8, 2), {}, [], 0

        def update_parameters(self, **kw):
            self.params.update(kw)

        def submit(self, fn, item):
            job = Job(self, self.params["visible_gpus"], fn(item))
            assert all(set(job.gpus).isdisjoint(other.gpus) for other in self.running), "two jobs on one GPU"
            self.running.append(job)
            self.peak = max(self.peak, len(self.running))
            return job

    ex = FakeLocal()
    monkeypatch.setattr(executors.time, "sleep", lambda s: None)
    assert executors.map_runs(ex, lambda x: x, list(range(11))) == [10 * i for i in range(11)]
    assert ex.peak == 4

    # issue 24: with --no-wait, the next grid's jobs wait for the slot the last one still holds
    ex = FakeLocal()
    ex.cepaper_slots = executors.gpu_slots(0, 1)  # no GPU: one job at a time
    for items in ([0, 1], [2, 3], [4]):
        executors.map_runs(ex, lambda x: x, items, missing_ok=True, wait=False)
    assert ex.peak == 1, "two CPU jobs ran at once"


def _two_task_run(seed):
    """One tiny recipe run (tests/training/test_distributed.py's data, model and recipe) in a job's task."""
    import torch

    from cepaper.training import distributed, sgd
    from tests.training import test_distributed as t

    torch.set_num_threads(1)
    w = distributed.world()
    model = t.model()
    hist = sgd.train_recipe(model, *t.data(), t.RECIPE, seed=seed)
    return {"rank": w.rank, "size": w.size, "history": hist, "weights": model.state_dict()}


def test_a_job_of_two_tasks_is_one_run_across_two_gloo_ranks(tmp_path, monkeypatch, one_thread):
    """A local job of 2 tasks (``ranks_per_job``) trains one run across them (gloo, DDP) and reproduces
    the single process with the same micro-batches; the record is rank 0's."""
    import numpy as np
    import torch

    from cepaper.training import sgd
    from tests.training import test_distributed as t

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ex = executors.executor("local", tmp_path / "jobs", gpus_per_job=0, ranks_per_job=2, timeout_min=5)
    (got,) = executors.map_runs(ex, _two_task_run, [3])
    one = t.model()
    want = sgd.train_recipe(one, *t.data(), t.RECIPE, seed=3)
    assert got["rank"] == 0 and got["size"] == 2 and got["history"]["world_size"] == 2
    np.testing.assert_allclose(got["history"]["train_loss"], want["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(got["history"]["test_loss"], want["test_loss"], rtol=1e-5)
    for k, v in one.state_dict().items():  # the parameters and BatchNorm's running statistics
        torch.testing.assert_close(got["weights"][k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"gpus_per_job": -1}, "gpus_per_job must be"),
        ({"ranks_per_job": 0}, "ranks_per_job must be"),
        ({"gpus_per_job": 4, "ranks_per_job": 2}, r"ranks_per_job must be gpus_per_job \(4: one rank per GPU\)"),
        ({"gpus_per_job": 64}, "gpus_per_job is 64, and this machine has"),
    ],
)
def test_bad_jobs_shapes_are_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        executors.executor("local", tmp_path / "jobs", **kw)


def test_gpus_for_a_run_in_process_point_at_torchrun(tmp_path):
    with pytest.raises(ValueError, match="gpus_per_job is 8: it gives each job of an executor its GPUs.*torchrun"):
        executors.executor("inprocess", tmp_path, gpus_per_job=8)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="a local job's liveness is read from /proc")
def test_a_local_job_is_alive_while_its_controller_runs():
    import time

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit.local._local"])
    time.sleep(1)  # past its exec
    try:
        assert executors.alive({"executor": "local", "job": str(p.pid), "folder": "jobs"})
    finally:
        p.kill()
        p.wait()
    assert not executors.alive({"executor": "local", "job": str(p.pid), "folder": "jobs"}), "ended"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, not a job controller
    try:
        assert not executors.alive({"executor": "local", "job": str(other.pid), "folder": "jobs"})
    finally:
        other.kill()
        other.wait()
    assert not executors.alive({"executor": "local", "job": "not a pid", "folder": "jobs"})


def test_a_real_local_job_left_running_is_waited_for_not_submitted_again(tmp_path):
    """A grid interrupted while its local job runs: running it again finds the job's marker, waits for
    that job, and reads the record it wrote; no second job trains the same run."""
    import time

    ex = executors.executor("local", tmp_path / "jobs", gpus_per_job=0, timeout_min=5)
    compute = lambda job, ckpt: (time.sleep(4), {"seed": job["seed"], "pid": os.getpid()})[1]
    kw = dict(cache=tmp_path / "cache", modules=("cepaper.runs",), by_definition=True)
    first = runs.run_grid([{"seed": 0}], compute, **kw, launcher=executors.Launcher(ex, missing_ok=True, wait=False))
    assert first[0]["missing"] == "pending"
    submitted = list((tmp_path / "jobs").glob("*_submitted.pkl"))
    again = runs.run_grid(
        [{"seed": 0}],
        compute,
        **kw,
        launcher=executors.Launcher(
            executors.executor("local", tmp_path / "jobs", gpus_per_job=0, timeout_min=5), missing_ok=True, poll_s=0.2
        ),
    )
    assert again[0]["seed"] == 0 and again[0]["pid"] != os.getpid()
    assert list((tmp_path / "jobs").glob("*_submitted.pkl")) == submitted, "no second job"
    assert not list((tmp_path / "cache").glob("*.job.json"))


def test_the_launcher_is_built_once_from_its_settings(tmp_path, monkeypatch):
    """``executors.launcher``: the one object a grid's runs are launched by, from ``executor``,
    ``gpus_per_run``, ``wait`` and ``rerun_stale``; bad settings are named."""
    from cepaper.training import distributed

    assert executors.launcher() == executors.Launcher(None, missing_ok=False, wait=True, rerun_stale=False)
    got = executors.launcher("local", tmp_path / "jobs", gpus_per_run=0, wait=False, rerun_stale=True, missing_ok=True)
    assert type(got.executor).__name__ == "LocalExecutor" and got.executor.cepaper_ranks == 1
    assert (got.missing_ok, got.wait, got.rerun_stale) == (True, False, True)
    with pytest.raises(ValueError, match="wait must be True or False, got 'no'"):
        executors.launcher(wait="no")
    with pytest.raises(ValueError, match="executor local needs a folder for its jobs' files"):
        executors.launcher("local")
    with pytest.raises(ValueError, match="gpus_per_run must be an integer >= 0, got -1"):
        executors.launcher("local", tmp_path, gpus_per_run=-1)
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2))
    with pytest.raises(ValueError, match="executor must be inprocess under torchrun"):
        executors.launcher("local", tmp_path / "jobs")
    assert executors.launcher("inprocess").executor is None


def test_the_launcher_takes_the_grid_to_its_jobs(tmp_path):
    """``Launcher.run_grid``: the run cache's grid here (``None`` executor) or each run a job of its
    executor, whose markers it alone reads and writes."""
    from tests.sections.test_grid_status import Executor

    compute = lambda job, ckpt: {"seed": job["seed"]}
    kw = dict(cache=tmp_path, modules=("cepaper.runs",))
    here = executors.Launcher().run_grid([{"seed": 0}], compute, **kw)
    ex = Executor(pending={1})
    out = executors.Launcher(ex, missing_ok=True, wait=False).run_grid([{"seed": 0}, {"seed": 1}], compute, **kw)
    assert out[0] == here[0] and out[1]["missing"] == "pending" and ex.submitted == 1, "the finished run: no job"
    assert len(list(tmp_path.glob("*.job.json"))) == 1
