"""What several sections share: putting Markdown and tables on a page, and the set-up of a training grid
(``cifar``, ``imagenet``: torch threads, torchrun's process group, the executor of the runs).

A notebook imports only its section, :mod:`cepaper.sections.paper` and the store; the sections put their
sentences on the page through :func:`markdown` and :func:`show`, so no notebook needs ``IPython.display``.
IPython is imported when a page is drawn, not with the module (the CLI imports sections without it).
"""


def markdown(text):
    """``text`` as a Markdown object, shown when it ends a notebook cell."""
    from IPython.display import Markdown

    return Markdown(text)


def show(*objects):
    """Put every one of ``objects`` (Markdown, a table, a run's header) on the page, in order; ``None``s are
    skipped, so a sentence that has nothing to say can be ``None``. Returns nothing."""
    from IPython.display import display

    for obj in objects:
        if obj is not None:
            display(obj)


def set_threads(threads):
    """Set torch's CPU threads to ``threads`` (``None`` or 0: leave torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def training_setup(section, profile, device, executor, gpus_per_run, threads):
    """``(world, device, jobs)`` of a training section's grid: torch's CPU threads set to ``threads`` (``None``
    or 0: torch's default); under ``torchrun --nproc-per-node N -m cepaper run`` every rank's kernel joins one
    process group and each run of the grid trains across them (DDP; rank 0 publishes, the others' copies are
    discarded), so ``world`` is :func:`cepaper.training.distributed.setup`'s and ``device`` this rank's, as a
    string; ``jobs`` the executor of the runs (``None`` for ``inprocess``: one after another in this process;
    ``local``/``slurm``: each a submitit job with ``gpus_per_run`` GPUs, its files in the section's checkpoint
    folder)."""
    from cepaper.book import results
    from cepaper.training import distributed, executors

    set_threads(threads)
    world, device = distributed.setup(device)
    jobs = executors.executor(executor, results.checkpoint_dir(section, profile) / "jobs", gpus_per_job=gpus_per_run)
    return world, str(device), jobs


def quiet_tail_warnings():
    """Silence Algorithm 1's warning about each width whose draws have a heavy tail: a page that lists
    those widths (``heavy_tail_widths``, with their tail index) would only repeat it."""
    import warnings

    warnings.filterwarnings("ignore", message="the draws at width index")


def save_grid(run, records, last, **extra):
    """Save a training grid's ``records`` as the result ``runs`` and their summary
    (:func:`cepaper.training.grids.grid_summary` over each run's ``last`` epochs, with ``extra`` beside its rows)
    as ``summary``; returns the summary (a DataFrame)."""
    from cepaper.training import grids

    summ = grids.grid_summary(records, last=last)
    run.save("runs", {"records": records})
    run.save("summary", {"rows": summ.to_dict("records"), **extra}, table=summ)
    return summ


def runs_sentence(records):
    """Markdown saying how many runs of a grid are missing or stale
    (:func:`cepaper.training.grids.run_status`), or ``None`` when every run finished and none is stale."""
    from cepaper.training import grids

    status = grids.run_status(records)
    return markdown(f"**Runs.** {status}") if status else None
