"""Grids of runs on submitit (https://github.com/facebookincubator/submitit): each run a job.

``executor(kind, folder)``: ``"inprocess"`` (``None``: the runs one after another in this process, the
default and what CI uses), ``"local"`` (submitit's ``LocalExecutor``: one subprocess per run on this
machine, spread over its GPUs, ``gpus_per_job`` each) or ``"slurm"`` (its ``SlurmExecutor``: one SLURM
job per run; needs ``sbatch`` on this machine). :func:`map_runs` submits every run that is not
finished, waits, and gathers the records in order; each job writes its record into the run cache
(:func:`cepaper.training.spine.cached_run`) and resumes from its own checkpoint when run again.
"""

import shutil
from pathlib import Path

EXECUTORS = ("inprocess", "local", "slurm")


def executor(kind, folder, *, gpus_per_job=1, timeout_min=60 * 24 * 3, partition=None, **slurm):
    """A submitit executor of ``kind`` writing its logs under ``folder`` (``None`` for ``inprocess``)."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if kind == "inprocess":
        return None
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("executor slurm needs SLURM, and there is no sbatch on this machine's PATH; run on a "
                         "cluster's login node, or use --executor local (this machine's GPUs) or inprocess")
    import submitit
    folder = Path(folder)
    if kind == "local":
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus_per_job)
    else:
        ex = submitit.SlurmExecutor(folder)
        ex.update_parameters(time=timeout_min, gpus_per_node=gpus_per_job, ntasks_per_node=1,
                             **({"partition": partition} if partition else {}), **slurm)
    return ex


def map_runs(ex, fn, items):
    """``[fn(item) for item in items]``, each call a job of ``ex`` (in this process for ``None``)."""
    items = list(items)
    if ex is None:
        return [fn(item) for item in items]
    jobs = [ex.submit(fn, item) for item in items]
    return [job.result() for job in jobs]
