"""What several sections share: putting Markdown and tables on a page, and the set-up of a training grid
(``cifar``, ``imagenet``: torch threads, the process group, the launcher of the runs).

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


def training_setup(section, profile, device, executor, gpus_per_run, wait, rerun_stale, threads):
    """``(world, device, launcher)`` of a training section's grid: torch's CPU threads set to ``threads``
    (``None`` or 0: torch's default); ``world`` and this rank's ``device`` (a string) from
    :func:`cepaper.training.distributed.setup`, which joins every rank's kernel into one process group
    under ``cepaper run`` across processes (each run of the grid then trains across them; rank 0
    publishes); ``launcher`` the one :class:`cepaper.training.executors.Launcher` of the runs, built here
    from ``executor`` (``inprocess``: one after another in this process; ``local``/``slurm``: each a job
    with ``gpus_per_run`` GPUs, its files in the section's checkpoint folder, a failed one a missing run),
    ``wait`` and ``rerun_stale``."""
    from cepaper.book import results
    from cepaper.training import distributed, executors

    set_threads(threads)
    world, device = distributed.setup(device)
    launcher = executors.launcher(
        executor,
        results.checkpoint_dir(section, profile) / "jobs",
        gpus_per_run=gpus_per_run,
        wait=wait,
        rerun_stale=rerun_stale,
        missing_ok=True,
    )
    return world, str(device), launcher


def across(world_size):
    """The sentence saying that each run trained across ``world_size`` processes (``""`` for one)."""
    return f"Each run trained across {world_size} processes (torchrun, DDP)." if world_size > 1 else ""


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
