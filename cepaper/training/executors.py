"""How the runs of a grid are launched (:class:`Launcher`, built by :func:`launcher`): here, across
torchrun's processes, or each a job of submitit (https://github.com/facebookincubator/submitit).

``executor(kind, folder)``: ``"inprocess"`` (``None``: the runs one after another in this process, the
default and what CI uses), ``"local"`` (submitit's ``LocalExecutor``: one subprocess per run on this
machine, spread over its GPUs, ``gpus_per_job`` each) or ``"slurm"`` (its ``SlurmExecutor``: one SLURM
job per run; needs ``sbatch`` on this machine). :func:`map_runs` submits every run that is not
finished, waits, and gathers the records in order; each job writes its record into the run cache
(:func:`cepaper.runs.cached_run`) and resumes from its own checkpoint when run again. With
``missing_ok`` a job that failed (or, with ``wait=False``, has not finished) is :func:`missing`
instead of an error, so that a page can show the runs that finished and count the others.
"""

import json
import re
import shutil
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cepaper import files
from cepaper._checks import choice, nonneg_int, positive_int

EXECUTORS = ("inprocess", "local", "slurm")


def executor(kind, folder, *, gpus_per_job=1, ranks_per_job=None, timeout_min=60 * 24 * 3, partition=None, **slurm):
    """A submitit executor of ``kind`` writing its logs under ``folder`` (``None`` for ``inprocess``).

    Each job has ``gpus_per_job`` GPUs and runs ``ranks_per_job`` tasks (default: one per GPU, at least
    one); a job of several tasks is one run across them (:class:`Ranked`: DDP, NCCL on GPUs, gloo on
    CPUs), each task a rank with its own GPU."""
    choice("executor", kind, EXECUTORS)
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
    ex.cepaper_ranks, ex.cepaper_kind = ranks_per_job, kind
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
    return {"missing": choice("state", state, MISSING), "why": why, "job": job_id}


#: Why a run has no record: its job failed (or timed out), or it has not finished yet.
MISSING = ("failed", "pending")


def _failure(e, job=None):
    """One line for a job's exception, without the job's log or its paths: the last line of the
    job's traceback (submitit's ``FailedJobError``); for a job that ended without a result (its
    ``UncompletedJobError``) the signal that killed it where known (``job``'s process), that it was
    killed where its process ended with neither a result nor an error (submitit's state ``FINISHED``:
    a task killed by SIGKILL, e.g. out of memory), else its state (``TIMEOUT``, ``CANCELLED``, ...);
    else the exception's last line."""
    text = str(e)
    trace = re.search(r"with trace:\n-+\n(.*?)\n-+\n", text, re.S)
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    if trace and trace.group(1).strip():
        return trace.group(1).strip().splitlines()[-1].strip()
    if state:
        code = getattr(getattr(job, "_process", None), "returncode", None)
        if code is not None and code < 0:
            return f"the job was killed by {_signal_name(-code)} before it made a result"
        if state.group(1) in ("FINISHED", "COMPLETED"):
            return (
                "the job was killed before it made a result (its process ended with neither a result nor an "
                "error: a signal such as SIGKILL, e.g. out of memory)"
            )
        return f"the job ended without a result (state {state.group(1)})"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1]}" if lines else type(e).__name__


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def gpu_slots(gpus, gpus_per_job):
    """The GPUs of each job that may run at once on one machine: ``gpus // gpus_per_job`` disjoint
    groups (one CPU job at a time when there is no GPU, or ``gpus_per_job`` is 0)."""
    if gpus_per_job <= 0 or gpus <= 0:
        return [()]
    return [tuple(range(i * gpus_per_job, (i + 1) * gpus_per_job)) for i in range(gpus // gpus_per_job)]


#: At most this many seconds pass between looks at the running jobs while the next job waits for a slot.
SLOT_POLL_S = 5.0


def _submit_in_slots(ex, fn, items, poll_s=SLOT_POLL_S, on_submit=None, held=()):
    """Submit every item as a job of the local executor ``ex``, at most one job per slot of
    ``ex.cepaper_slots`` at a time, each on its own GPUs (``visible_gpus``): the jobs, in order; the
    running jobs are looked at every ``poll_s`` seconds while one waits for a slot.
    ``on_submit(i, job)`` is called as each is submitted. The jobs an earlier call left running
    (``wait=False``: remembered on ``ex``) and ``held`` (jobs with ``done()`` that another call
    submitted) keep their slots until they end: on a machine without a GPU, one job at a time, across
    calls too (issue 24: with ``--no-wait`` the next grid's first job started beside the last one's)."""
    running = [r for r in getattr(ex, "cepaper_running", []) if not r[0].done()]
    free = [slot for slot in ex.cepaper_slots if slot not in {r[1] for r in running}]
    for job in held:
        if free:
            running.append((job, free.pop(0)))
    jobs = [None] * len(items)
    queue = list(enumerate(items))
    while queue:  # the last jobs go on running: map_runs waits for them, or with wait=False not
        while queue and free:
            i, item = queue.pop(0)
            slot = free.pop(0)
            ex.update_parameters(visible_gpus=slot)
            jobs[i] = ex.submit(fn, item)
            if on_submit:
                on_submit(i, jobs[i])
            running.append((jobs[i], slot))
        done = [r for r in running if r[0].done()]
        if queue and not done:
            time.sleep(poll_s)
        for r in done:
            running.remove(r)
            free.append(r[1])
    ex.cepaper_running = running
    return jobs


def _result(job):
    """A job's result: its first task's (rank 0's) for a job of several tasks, which raises the
    error of any task that failed."""
    return job.results()[0] if getattr(job, "num_tasks", 1) > 1 else job.result()


# --- submitted jobs, remembered: running again never submits a second job for a run still running --


def _write_marker(path, ex, job):
    files.write_atomic(
        path,
        json.dumps(
            {
                "executor": getattr(ex, "cepaper_kind", "local"),
                "job": str(job.job_id),
                "folder": str(ex.folder),
                "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        ),
    )


def _read_marker(path):
    """The marker of a job submitted for a run (``None``: none, or unreadable)."""
    try:
        marker = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and {"executor", "job", "folder"} <= set(marker) else None


def alive(marker):
    """True while the job a marker names is queued or running: SLURM's word for it, or, for a local
    job, its controller process still running (``/proc``; elsewhere a local job counts as ended)."""
    if marker["executor"] == "slurm":
        import submitit

        return not submitit.SlurmJob(marker["folder"], marker["job"]).done()
    try:
        return b"submitit" in Path(f"/proc/{int(marker['job'])}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


class _Marked:
    """A job an earlier call submitted, known by its marker: done when it is no longer :func:`alive`."""

    def __init__(self, marker):
        self.marker = marker

    def done(self):
        return not alive(self.marker)


def map_runs(ex, fn, items, *, missing_ok=False, wait=True, finished=None, markers=None, poll_s=30.0):
    """``[fn(item) for item in items]``, each call a job of ``ex`` (in this process for ``None``).

    ``missing_ok`` (an executor only: in this process an error is raised as ever): the result of a
    job that raised or was killed is :func:`missing` ``"failed"`` with the last line of its error;
    ``wait=False``: a job not finished yet is :func:`missing` ``"pending"`` (it goes on running). A local
    executor runs as many jobs at once as its machine has GPU groups (:func:`gpu_slots`), each on its
    own GPUs, and so returns only when every job has been submitted. ``poll_s``: how often a job
    submitted by an earlier call is looked at while waiting for it; a job waiting for a slot looks at
    the running ones as often, and at least every :data:`SLOT_POLL_S` seconds.

    ``finished(item)``: the result of an item that needs no job (a finished run), else ``None``.
    ``markers``: a path per item, where the job submitted for it is remembered (executor, id, folder)
    until it ends: an item whose job, submitted by an earlier call, is still running (:func:`alive`)
    is not submitted again but waited for (its result is then ``finished(item)``), or with
    ``wait=False`` is pending; on a local executor such a job holds a slot until it ends."""
    items = list(items)
    if ex is None:
        return [fn(item) for item in items]
    if getattr(ex, "cepaper_ranks", 1) > 1:  # each job one run across its tasks
        fn = Ranked(fn)
    out, earlier, todo = [None] * len(items), {}, []
    for i, item in enumerate(items):
        out[i] = finished(item) if finished else None
        if out[i] is not None:
            continue
        marker = _read_marker(markers[i]) if markers else None
        if marker is not None and alive(marker):
            earlier[i] = marker
        else:
            todo.append(i)
    on_submit = (lambda k, job: _write_marker(markers[todo[k]], ex, job)) if markers else None
    if getattr(ex, "cepaper_slots", None):  # one machine: each job on its own GPUs, as many at once as fit
        held = [_Marked(marker) for marker in earlier.values()]
        slot_poll_s = min(poll_s, SLOT_POLL_S)
        jobs = _submit_in_slots(ex, fn, [items[i] for i in todo], slot_poll_s, on_submit=on_submit, held=held)
    else:
        jobs = [ex.submit(fn, items[i]) for i in todo]
        for k, job in enumerate(jobs if on_submit else ()):
            on_submit(k, job)
    for i, job in zip(todo, jobs):
        if not wait and not job.done():
            out[i] = missing("pending", f"job {job.job_id} has not finished", job.job_id)
            continue
        try:
            out[i] = _result(job)
        except Exception as e:  # the job's own error, or submitit's for a job killed or timed out
            if not missing_ok:
                raise
            out[i] = missing("failed", _failure(e, job), job.job_id)
        if markers:
            Path(markers[i]).unlink(missing_ok=True)
    for i, marker in earlier.items():
        while wait and alive(marker):
            time.sleep(poll_s)
        if alive(marker):
            since = f"submitted {marker['submitted']}" if marker.get("submitted") else "submitted earlier"
            out[i] = missing("pending", f"job {marker['job']} ({since}) has not finished", marker["job"])
            continue
        out[i] = finished(items[i]) if finished else None
        Path(markers[i]).unlink(missing_ok=True)
        if out[i] is None:
            why = f"job {marker['job']}, submitted earlier, ended without a result; running again resumes it"
            if not missing_ok:
                raise RuntimeError(why)
            out[i] = missing("failed", why, marker["job"])
    return out


@dataclass(frozen=True)
class Launcher:
    """How the runs of a grid are launched: the one object that knows torchrun's process group, submitit
    and the job markers, built once where its settings are known (:func:`launcher`: a section's
    ``training_setup``, `cepaper train`) and passed down to the grids.

    ``executor``: a submitit executor (:func:`executor`; ``None``: the runs here, one after another, or
    under torchrun each across the ranks); ``missing_ok`` and ``wait`` of :func:`map_runs`;
    ``rerun_stale``: train again the finished runs older code made (:func:`cepaper.runs.cached_run`);
    ``poll_s``: how often a job submitted by an earlier call (or, at least every 5 s, a job holding the
    slot the next one waits for) is looked at while waiting for it (:func:`map_runs`).
    The job submitted for a run is remembered in a marker beside its record (``<record>.job.json``)
    until it ends."""

    executor: object = None
    missing_ok: bool = False
    wait: bool = True
    rerun_stale: bool = False
    poll_s: float = 30.0

    def map(self, fn, jobs, finished=None, records=None):
        """``[fn(job) for job in jobs]`` (:func:`map_runs`); ``finished(job)``: the record of a run that
        needs no job; ``records``: each run's record path, beside which its job's marker is kept."""
        markers = None if records is None else [Path(r).with_suffix(".job.json") for r in records]
        return map_runs(
            self.executor,
            fn,
            jobs,
            missing_ok=self.missing_ok,
            wait=self.wait,
            finished=finished,
            markers=markers,
            poll_s=self.poll_s,
        )

    def run_grid(self, jobs, compute, *, shared=True, **kw):
        """The records of ``jobs`` (:func:`cepaper.runs.run_grid`, the run cache of long runs: ``kw`` its
        ``cache, key, modules, required, progress, desc``), each run launched here: one after another, or
        each a job of the executor (:meth:`Launcher.map`). In a process group (torchrun) every rank calls this
        alike: each run trains across the ranks (``shared``), or else the runs are dealt over the ranks,
        each trained whole by one of them (:func:`cepaper.training.distributed.deal`)."""
        from cepaper import runs
        from cepaper.training import distributed

        grid = lambda jobs: runs.run_grid(
            jobs,
            compute,
            by_definition=True,
            rerun_stale=self.rerun_stale,
            launcher=self if self.executor is not None else None,  # None: here, with the progress bar
            world=distributed.world(),  # inside deal: this rank alone
            **kw,
        )
        return grid(jobs) if shared else distributed.deal(jobs, grid, distributed.world())


def launcher(kind="inprocess", folder=None, *, gpus_per_run=1, wait=True, rerun_stale=False, missing_ok=False):
    """The :class:`Launcher` of a grid's runs: each run here (``kind`` ``"inprocess"``; under torchrun
    across the ranks), or each a submitit job of :func:`executor` ``kind`` with ``gpus_per_run`` GPUs,
    its logs under ``folder``; ``wait``, ``missing_ok``: :func:`map_runs`'s; ``rerun_stale``: train again
    the runs older code made. Under torchrun the runs train across the ranks, so ``kind`` must be
    ``inprocess`` there."""
    from cepaper.training import distributed

    for name, value in (("wait", wait), ("rerun_stale", rerun_stale), ("missing_ok", missing_ok)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    if kind != "inprocess" and folder is None and kind in EXECUTORS:
        raise ValueError(f"executor {kind} needs a folder for its jobs' files, got folder=None")
    if kind != "inprocess" and kind in EXECUTORS and distributed.world().size > 1:
        raise ValueError(
            f"executor must be inprocess under torchrun (each run trains across its processes), got {kind!r}; "
            "run without torchrun to make each run a submitit job"
        )
    ex = executor(kind, folder, gpus_per_job=nonneg_int("gpus_per_run", gpus_per_run))
    return Launcher(ex, missing_ok=missing_ok, wait=wait, rerun_stale=rerun_stale)
