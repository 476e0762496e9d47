"""Grids of runs on submitit (https://github.com/facebookincubator/submitit): each run a job.

``executor(kind, folder)``: ``"inprocess"`` (``None``: the runs one after another in this process, the
default and what CI uses), ``"local"`` (submitit's ``LocalExecutor``: one subprocess per run on this
machine, spread over its GPUs, ``gpus_per_job`` each) or ``"slurm"`` (its ``SlurmExecutor``: one SLURM
job per run; needs ``sbatch`` on this machine). :func:`map_runs` submits every run that is not
finished, waits, and gathers the records in order; each job writes its record into the run cache
(:func:`cepaper.training.spine.cached_run`) and resumes from its own checkpoint when run again. With
``missing_ok`` a job that failed (or, with ``wait=False``, has not finished) is :func:`missing`
instead of an error, so that a page can show the runs that finished and count the others.
"""

import re
import shutil
import time
from pathlib import Path

from cepaper._checks import nonneg_int, positive_int

EXECUTORS = ("inprocess", "local", "slurm")


def executor(kind, folder, *, gpus_per_job=1, ranks_per_job=None, timeout_min=60 * 24 * 3, partition=None, **slurm):
    """A submitit executor of ``kind`` writing its logs under ``folder`` (``None`` for ``inprocess``).

    Each job has ``gpus_per_job`` GPUs and runs ``ranks_per_job`` tasks (default: one per GPU, at least
    one); a job of several tasks is one run across them (:class:`Ranked`: DDP, NCCL on GPUs, gloo on
    CPUs), each task a rank with its own GPU."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    gpus_per_job = nonneg_int("gpus_per_job", gpus_per_job)
    ranks_per_job = max(gpus_per_job, 1) if ranks_per_job is None else positive_int("ranks_per_job", ranks_per_job)
    if gpus_per_job > 1 and ranks_per_job != gpus_per_job:
        raise ValueError(
            f"ranks_per_job must be gpus_per_job ({gpus_per_job}: one rank per GPU) when a job has "
            f"several GPUs, got {ranks_per_job}"
        )
    if kind == "inprocess":
        if gpus_per_job > 1:
            raise ValueError(
                f"gpus_per_job is {gpus_per_job}: it gives each job of an executor its GPUs (executor local "
                "or slurm); in one process, spread a run over GPUs with torchrun --nproc-per-node N"
            )
        return None
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise ValueError(
            "executor slurm needs SLURM, and there is no sbatch on this machine's PATH; run on a "
            "cluster's login node, or use --executor local (this machine's GPUs) or inprocess"
        )
    import submitit

    folder = Path(folder)
    if kind == "local":
        import torch

        gpus = torch.cuda.device_count()
        if gpus_per_job > 1 and gpus_per_job > gpus:
            raise ValueError(
                f"gpus_per_job is {gpus_per_job}, and this machine has {gpus} GPU(s): ask for at most "
                f"{gpus}, or run on a machine with more (--executor slurm)"
            )
        gpus_per_job = min(gpus_per_job, gpus)
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus_per_job, tasks_per_node=ranks_per_job)
        ex.cepaper_slots = gpu_slots(gpus, gpus_per_job)
    else:
        ex = submitit.SlurmExecutor(folder)
        ex.update_parameters(
            time=timeout_min,
            gpus_per_node=gpus_per_job,
            ntasks_per_node=ranks_per_job,
            **({"partition": partition} if partition else {}),
            **slurm,
        )
    ex.cepaper_ranks = ranks_per_job
    return ex


class Ranked:
    """``fn`` on every task of a job of several tasks, as one run across them: each task joins the
    job's process group first (its rank, the job's first host and a port from submitit's
    ``TorchDistributedEnvironment``; NCCL and the task's own GPU where the job has GPUs, gloo else),
    calls ``fn(item)``, and leaves the group. A single task calls ``fn`` alone."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, item):
        import submitit
        import torch

        from cepaper.training import distributed

        if submitit.JobEnvironment().num_tasks == 1:
            return self.fn(item)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        distributed.setup("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return self.fn(item)
        finally:
            distributed.shutdown()


def missing(state, why, job_id=None):
    """The stand-in of a run that has no record: ``{"missing": state, "why": why, "job": job_id}``,
    ``state`` ``"failed"`` or ``"pending"``."""
    if state not in MISSING:
        raise ValueError(f"state must be one of {', '.join(MISSING)}, got {state!r}")
    return {"missing": state, "why": why, "job": job_id}


#: Why a run has no record: its job failed (or timed out), or it has not finished yet.
MISSING = ("failed", "pending")


def _failure(e):
    """One line for a job's exception, without the job's log or its paths: the last line of the
    job's traceback (submitit's ``FailedJobError``), the state of a job that ended without a result
    (its ``UncompletedJobError``: killed, timed out), else the exception's last line."""
    text = str(e)
    trace = re.search(r"with trace:\n-+\n(.*?)\n-+\n", text, re.S)
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    if trace and trace.group(1).strip():
        return trace.group(1).strip().splitlines()[-1].strip()
    if state:
        return f"the job ended without a result (state {state.group(1)})"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1]}" if lines else type(e).__name__


def gpu_slots(gpus, gpus_per_job):
    """The GPUs of each job that may run at once on one machine: ``gpus // gpus_per_job`` disjoint
    groups (one CPU job at a time when there is no GPU, or ``gpus_per_job`` is 0)."""
    if gpus_per_job <= 0 or gpus <= 0:
        return [()]
    return [tuple(range(i * gpus_per_job, (i + 1) * gpus_per_job)) for i in range(gpus // gpus_per_job)]


def _submit_in_slots(ex, fn, items, poll_s=5.0):
    """Submit every item as a job of the local executor ``ex``, at most one job per slot of
    ``ex.cepaper_slots`` at a time, each on its own GPUs (``visible_gpus``): the jobs, in order."""
    free, running, jobs = list(ex.cepaper_slots), [], [None] * len(items)
    queue = list(enumerate(items))
    while queue or running:
        while queue and free:
            i, item = queue.pop(0)
            slot = free.pop(0)
            ex.update_parameters(visible_gpus=slot)
            jobs[i] = ex.submit(fn, item)
            running.append((jobs[i], slot))
        done = [r for r in running if r[0].done()]
        if not done and running:
            time.sleep(poll_s)
        for r in done:
            running.remove(r)
            free.append(r[1])
    return jobs


def _result(job):
    """A job's result: its first task's (rank 0's) for a job of several tasks, which raises the
    error of any task that failed."""
    return job.results()[0] if getattr(job, "num_tasks", 1) > 1 else job.result()


def map_runs(ex, fn, items, *, missing_ok=False, wait=True):
    """``[fn(item) for item in items]``, each call a job of ``ex`` (in this process for ``None``).

    ``missing_ok`` (an executor only: in this process an error is raised as ever): the result of a
    job that raised or was killed is :func:`missing` ``"failed"`` with the last line of its error;
    ``wait=False``: a job not finished yet is :func:`missing` ``"pending"`` (it goes on running). A local
    executor runs as many jobs at once as its machine has GPU groups (:func:`gpu_slots`), each on its
    own GPUs, and so returns only when every job has ended."""
    items = list(items)
    if ex is None:
        return [fn(item) for item in items]
    if getattr(ex, "cepaper_ranks", 1) > 1:  # each job one run across its tasks
        fn = Ranked(fn)
    if getattr(ex, "cepaper_slots", None):  # one machine: each job on its own GPUs, as many at once as fit
        jobs = _submit_in_slots(ex, fn, items)
    else:
        jobs = [ex.submit(fn, item) for item in items]
    if not missing_ok:
        return [_result(job) for job in jobs]
    out = []
    for job in jobs:
        if not wait and not job.done():
            out.append(missing("pending", f"job {job.job_id} has not finished", job.job_id))
            continue
        try:
            out.append(_result(job))
        except Exception as e:  # the job's own error, or submitit's for a job killed or timed out
            out.append(missing("failed", _failure(e), job.job_id))
    return out
