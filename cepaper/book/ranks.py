"""``torchrun --nproc-per-node N -m cepaper run SECTION ...``: the sections' training across processes.

Every process torchrun starts runs the same ``cepaper run``. They join a small gloo group of their
own (the command's processes, on the CPU), through which rank 0 decides what executes: the sections
that are up to date are cached, as in one process, and each section that executes on every rank gets
a port free on rank 0's host, picked as it starts, for its kernels' process group.

A section that trains grids (one with an ``executor`` parameter: cifar, imagenet) executes on every
rank. Each rank's kernel inherits torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``MASTER_ADDR``, with that port; the notebook joins the kernels' group
(:func:`cepaper.training.distributed.setup`: NCCL on GPUs, gloo on CPUs) and every run of its grid
trains across the ranks, each rank on its share of every batch (DDP). Rank 0's kernel writes the run
cache (``_build/checkpoints``, which every node must see: a shared filesystem), and rank 0 alone
publishes the section's results and its executed notebook; what the other ranks' kernels wrote is
discarded. Any other section executes on rank 0 alone.
"""

import os
import shutil
import socket
from datetime import timedelta

import torch.distributed as dist

from cepaper.book import pipeline, profiles, results
from cepaper.training import distributed

#: How long the command's processes wait for one another (rank 0 may execute hours of other sections
#: before the next one that trains on every rank).
WAIT = timedelta(days=7)


def ranked(step):
    """True for a planned section that trains grids (its notebook has an ``executor`` parameter): it
    executes on every rank."""
    return "executor" in profiles.notebook_parameters(step.notebook)


def _free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _decide(steps, force):
    """Rank 0's decisions, one per planned step: ``(key, record)`` (:func:`pipeline.up_to_date`)
    and whether it executes on every rank."""
    out = []
    for step in steps:
        key, record = pipeline.up_to_date(step, force)
        out.append((key, record, record is None and ranked(step)))
    return out


def _port(w):
    """A port free on rank 0's host now, for the next section's kernels, the same on every rank."""
    port = [_free_port() if w.writer else None]
    dist.broadcast_object_list(port, src=0)
    return port[0]


def _check(steps):
    for step in steps:
        if ranked(step) and step.params.get("executor", "inprocess") != "inprocess":
            raise ValueError(
                f"section {step.section}: under torchrun every run of its grid trains across the processes; "
                f"executor must be inprocess, got {step.params['executor']!r} (leave --executor out, or run "
                "without torchrun to make each run a submitit job)"
            )


def run(sections, profile="quick", overrides=(), force=False):
    """:func:`cepaper.book.pipeline.run` on every process torchrun started; the records on rank 0
    (``[]`` on the others)."""
    steps = profiles.plan(sections, profile, overrides)  # the same checks, and errors, on every rank
    _check(steps)
    dist.init_process_group("gloo", timeout=WAIT)
    try:
        w = distributed.world()
        decided = [None]
        if w.writer:
            try:
                decided[0] = _decide(steps, force)
            except Exception as e:  # the others must not wait for a broadcast that never comes
                decided[0] = f"{type(e).__name__}: {e}"
                dist.broadcast_object_list(decided, src=0)
                raise
        dist.broadcast_object_list(decided, src=0)
        if isinstance(decided[0], str):
            raise RuntimeError(f"rank 0 could not plan the run: {decided[0]}")
        records = []
        for step, (key, record, everywhere) in zip(steps, decided[0]):
            if record is not None:
                records.append(pipeline.shown(step, {**record, "cached": True}))
                continue
            if not everywhere:  # a section that does not train across ranks: rank 0 alone
                if w.writer:
                    records.append(pipeline.shown(step, pipeline.execute_locked(step, key)))
                continue
            if w.writer:  # what followers killed in an earlier run left (none of this run's exists yet)
                for folder in results.STAGING.glob(f"rank*-{step.profile}-{step.section}-*"):
                    shutil.rmtree(folder, ignore_errors=True)
            port = _port(w)  # and every rank waits here until all have reached this section
            env = {"MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "False"}
            if w.writer:
                records.append(pipeline.shown(step, pipeline.execute_locked(step, key, env=env)))
            else:
                pipeline.execute(step, key, rank=w.rank, env=env)
        return records if w.writer else []
    finally:
        dist.destroy_process_group()


def launched():
    """True when torchrun (or a launcher like it) started more than one process of this command."""
    return distributed.launched() and int(os.environ["WORLD_SIZE"]) > 1
