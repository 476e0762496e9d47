"""The recipe SGD loop of Sec. 4.2 and App. A: one model trained with a :class:`~cepaper.training.recipes.Recipe`.

Two data paths: an in-memory :class:`cepaper.catalog.Dataset` (uint8 ``(N, H, W, C)``: CIFAR, ImageNet32/64)
is copied to the device once and augmented there in whole batches
(:func:`cepaper.training.recipes.augment`: no per-image Python); a folder dataset of PIL images (full
ImageNet) goes through a ``DataLoader`` with torchvision transforms
(:func:`cepaper.training.loaders.folder_transforms`). :func:`train_recipe` trains one model, evaluates
the top-1 and top-5 test error after every epoch, and with ``checkpoint=path`` saves model, optimizer, scheduler, RNG
states and history atomically after every epoch; calling it again resumes exactly where it stopped
(bit for bit on a CPU: every epoch's random numbers are drawn from ``(seed, epoch)``).
:func:`cepaper.training.grids.train_recipe_grid` trains a grid of ResNeXts x seeds with one recipe
(finished runs cached, so a grid resumes) and :func:`cepaper.training.grids.grid_summary` gives the
paper's statistic (``cepaper.sections.paper.STATISTICS``): each run's test error averaged over its
last ``last`` epochs (CIFAR: 10; ImageNet: 1, the final error), then the mean and standard error over runs.
"""

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cepaper import runs
from cepaper._checks import nonneg_int, positive_int
from cepaper.training import distributed
from cepaper.training.loaders import device_data, topk_errors
from cepaper.training.recipes import DATASET_RECIPE, data_digest, input_stats, is_folder, recipe

# ---------------------------------------------------------------------------------------------
# Data on the device: normalization, batched augmentation, top-k error
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Batches of one epoch: in-memory arrays (device augmentation) or a folder (DataLoader)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train_epoch(model, data, opt, rec, seed, epoch, amp=None, channels_last=False):
    """One epoch of recipe ``rec`` (Sec. 4.2, App. A) on a device dataset ``data``: ``(loss, top1)``, the
    mean training loss and error (%) over its images, all ranks.

    Each global batch of ``n`` images (every rank's share: ``data``'s) is cut into the recipe's per-GPU
    micro-batches, whose losses, each divided by ``n``, are back-propagated in turn; the gradients are
    summed over the ranks and BatchNorm's running statistics composed as one process running every
    micro-batch in turn (:func:`distributed.sequential_bn`) before each step. The epoch's data order
    and augmentation are drawn from ``(seed, epoch)``."""
    model.train()
    w = getattr(data, "world", None) or distributed.World()
    device = next(model.parameters()).device
    micro = rec.micro_batch or rec.batch_size
    loss_sum, wrong, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    for (x, y), n in zip(data.train_batches(rec, seed, epoch), data.batch_sizes(rec)):
        opt.zero_grad(set_to_none=True)
        bn0 = distributed.bn_snapshot(model, w)
        for xm, ym in zip(x.split(micro), y.split(micro)):  # the paper's per-GPU batches
            xm = xm.contiguous(memory_format=torch.channels_last) if channels_last else xm
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = model(xm)
                loss = F.cross_entropy(out.float(), ym, reduction="sum")
            (loss / n).backward()  # n: the global batch, all ranks
            loss_sum += loss.detach()
            wrong += (out.detach().argmax(1) != ym).sum()
        distributed.all_reduce_grads(model.parameters(), w)
        distributed.sequential_bn(model, bn0, len(x.split(micro)) if len(x) else 0, w)
        opt.step()
        seen += n
    loss_sum, wrong = distributed.all_reduce_sum(torch.stack([loss_sum, wrong.to(loss_sum.dtype)]), w).tolist()
    distributed.average_buffers(model, w)
    return loss_sum / seen, 100.0 * wrong / seen


@torch.no_grad()
def test_epoch(model, data, batch_size=1000, amp=None, channels_last=False):
    """``{"loss", "top1", "top5"}`` of ``model`` on a device dataset (errors in %, mean loss); across
    ranks each evaluates its shard of the test set and the sums are reduced over the ranks."""
    model.eval()
    w = getattr(data, "world", None) or distributed.World()
    device = next(model.parameters()).device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 and top-5 errors, images
    for x, y in data.test_batches(batch_size):
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            out = model(x)
        sums += torch.tensor(
            [F.cross_entropy(out.float(), y, reduction="sum").item(), *topk_errors(out, y), len(y)],
            dtype=torch.float64,
            device=device,
        )
    loss, e1, e5, n = distributed.all_reduce_sum(sums, w).tolist()
    return {"loss": loss / n, "top1": 100.0 * e1 / n, "top5": 100.0 * e5 / n}


test_epoch.__test__ = False  # a library function, never a test, if pytest meets it by name


def _optimizer(model, rec):
    opt = torch.optim.SGD(model.parameters(), lr=rec.lr, momentum=rec.momentum, weight_decay=rec.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(rec.milestones), gamma=rec.gamma)
    return opt, sched


#: The lists of a run's history, one entry per epoch.
HISTORY = ("epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "seconds")


def train_recipe(
    model,
    train,
    test,
    recipe_name="cifar",
    *,
    epochs=None,
    seed=0,
    device="cpu",
    checkpoint=None,
    channels_last=False,
    bf16=False,
    eval_batch=1000,
    workers=0,
    progress=False,
):
    """Train ``model`` on ``train`` with a recipe, evaluating on ``test`` after every epoch: the outer
    loop over :func:`train_epoch` and :func:`test_epoch`, resumed from and saved to ``checkpoint``.

    Args:
        model: a classifier ``(B, C, H, W) -> (B, classes)`` (its initial weights are the caller's).
        train, test: :class:`cepaper.catalog.Dataset` (uint8 in memory) or folder datasets of PIL images.
        recipe_name: a key of ``RECIPES`` or a :class:`~cepaper.training.recipes.Recipe`.
        epochs: train this many epochs with the milestones scaled (:meth:`~cepaper.training.recipes.Recipe.scaled`);
            ``None``: the recipe's.
        seed: seed of the data order and augmentation (epoch ``e`` draws from ``(seed, e)``).
        device: torch device; on CUDA ``cudnn.benchmark`` is on.
        checkpoint: file to save after every epoch and to resume from, or ``None``.
        channels_last, bf16: channels-last memory format; bfloat16 autocast of the forward pass.
        eval_batch: test batch size. workers: DataLoader workers of a folder dataset.
    Returns:
        history: lists over epochs ``epoch`` (1..E), ``lr``, ``train_loss``, ``train_top1``, ``test_loss``,
        ``test_top1``, ``test_top5`` (errors in %), ``seconds`` (of an epoch, evaluation included);
        ``images_per_s`` (training images per second of those epochs, all ranks) and ``world_size``.

    In a process group (:mod:`cepaper.training.distributed`) every rank calls this with the
    same arguments: each trains on its share of every batch (its micro-batches, BatchNorm per rank),
    the gradients are summed over the ranks before each step, BatchNorm's running statistics are
    after each step what one process running every rank's micro-batches in turn would hold
    (:func:`distributed.sequential_bn`), the evaluation is reduced over the ranks, and rank 0 writes
    the checkpoint, which every rank resumes from. The global batch, learning rate and schedule are
    the recipe's for any world size that divides it (:func:`distributed.check_world`): the same
    losses, weights and test errors as one process, to float tolerance.
    """
    rec = recipe(recipe_name)
    rec = rec.scaled(epochs) if epochs is not None else rec
    check_fits(rec, train)
    eval_batch = positive_int("eval_batch", eval_batch)
    nonneg_int("seed", seed)
    w = distributed.world()
    distributed.check_world(rec, w.size)
    device = _place(model, device, channels_last, seed, w)
    stats = input_stats(rec, train)
    tr, te = device_data(train, device, stats, rec, workers, w), device_data(test, device, stats, rec, workers, w)
    opt, sched = _optimizer(model, rec)
    amp = torch.bfloat16 if bf16 else None
    settings = None if checkpoint is None else _settings(rec, seed, channels_last, bf16, train, test, w)
    start, history = _resume(checkpoint, settings, model, opt, sched, w)
    bar = dict(initial=start, total=rec.epochs, disable=not progress or not w.writer, desc="epochs", leave=False)
    for epoch in tqdm(range(start, rec.epochs), **bar):
        t0, lr = time.perf_counter(), opt.param_groups[0]["lr"]
        train_loss, train_top1 = train_epoch(model, tr, opt, rec, seed, epoch, amp, channels_last)
        sched.step()
        ev = test_epoch(model, te, eval_batch, amp, channels_last)
        row = (epoch + 1, lr, train_loss, train_top1, ev["loss"], ev["top1"], ev["top5"], time.perf_counter() - t0)
        for k, v in zip(HISTORY, row):
            history[k].append(v)
        if checkpoint is not None:
            _save(checkpoint, epoch + 1, model, opt, sched, history, settings, w)
    return {
        **history,
        "images_per_s": len(tr) * len(history["seconds"]) / max(sum(history["seconds"]), 1e-9),
        "world_size": w.size,
    }


def _place(model, device, channels_last, seed, w):
    """Put ``model`` on ``device`` (the rank's own GPU for ``cuda`` across ranks; ``cudnn.benchmark`` on
    CUDA) in its memory format, with rank 0's weights on every rank, and give each rank > 0 its own
    random stream (Dropout); rank 0 keeps the caller's. Returns the device."""
    device = torch.device(device)
    if w.size > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", w.local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    distributed.broadcast_state(model, w)
    if w.rank > 0:
        torch.manual_seed(runs.derive_seed(seed, "rank", w.rank))
    return device


def _settings(rec, seed, channels_last, bf16, train, test, w):
    """What a checkpoint must match to be resumed: the recipe, seed, format, precision and data (and the
    world size across ranks; one process: none, as before, so its checkpoints resume)."""
    settings = dict(
        recipe=asdict(rec),
        seed=seed,
        channels_last=channels_last,
        bf16=bf16,
        train=data_digest(train),
        test=data_digest(test),
    )
    return {**settings, "world_size": w.size} if w.size > 1 else settings


def _resume(checkpoint, settings, model, opt, sched, w):
    """``(epoch, history)`` to go on from: ``checkpoint``'s, with model, optimizer, scheduler and every
    rank's random state restored from it, or ``(0, empty lists)`` with none (:func:`runs.resume`: a
    damaged one is moved aside by rank 0, one of other settings refused)."""
    fresh = (0, {k: [] for k in HISTORY})
    if checkpoint is None:
        return fresh
    if w.size > 1:
        if w.writer:
            runs.check_checkpoint(checkpoint)  # a damaged one is moved aside by one rank, not all
        distributed.barrier(w)
    if not Path(checkpoint).exists():
        return fresh
    state = runs.resume(
        checkpoint,
        settings,
        model=model,
        optimizer=opt,
        scheduler=sched,
        rng=True,
        required=CHECKPOINT_KEYS,
        name="a checkpoint of train_recipe",
        refuse=lambda old: _refuse_checkpoint(old, settings),
    )
    if state is None:
        return fresh
    if w.size > 1:
        runs.set_rng_state(state["rng_ranks"][w.rank])
    return state["epoch"], state["history"]


def _save(checkpoint, epoch, model, opt, sched, history, settings, w):
    """Rank 0 saves the run after ``epoch`` epochs (every rank's random state with it); all wait."""
    rngs = distributed.gather_objects(runs.rng_state(), w)
    if w.writer:
        runs.save_checkpoint(
            checkpoint,
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": runs.rng_state(),
                "history": history,
                "settings": settings,
                **({"rng_ranks": rngs} if w.size > 1 else {}),
            },
        )
    distributed.barrier(w)


def _refuse_checkpoint(old, settings):
    """Why the checkpoint settings ``old`` cannot resume under ``settings`` (another recipe, another
    world size), or ``None`` (other differences are named by :func:`runs.resume`)."""
    was, now = (old.get("recipe") or {}).get("name"), settings["recipe"]["name"]
    if was != now:
        return (
            f"it was written by recipe {was!r}, not {now!r}; train with --recipe {was} to resume it, "
            "or delete it to start afresh"
        )
    size = old.get("world_size", 1)
    if size != settings.get("world_size", 1):
        return (
            f"it was written by {size} process(es) and cannot resume exactly under {settings.get('world_size', 1)} "
            f"(each rank's random state is its own); resume it with "
            f"torchrun --nproc-per-node {size} (or one process for 1), or delete it to start afresh"
        )
    return None


def check_fits(rec, ds):
    """Raise ``ValueError`` unless recipe ``rec`` fits dataset ``ds``: folder data needs a resizing
    recipe (``random_resized_crop``), in-memory data a cropping one (crops keep the images' size)."""
    folder = is_folder(ds)
    hint = f"; use recipe {DATASET_RECIPE[ds.name]!r}" if getattr(ds, "name", None) in DATASET_RECIPE else ""
    if folder != (rec.augment == "random_resized_crop"):
        kind = "a folder of images" if folder else "in-memory images"
        raise ValueError(
            f"recipe {rec.name!r} (augment {rec.augment!r}) does not fit "
            f"{getattr(ds, 'name', 'the dataset')!r}, "
            f"{kind}{hint}"
        )


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "history", "settings")


def final_error(history, key="test_top1", last=1):
    """A run's error: ``history[key]`` averaged over the last ``last`` epochs (fewer if the run is
    shorter); ``last=1`` is the final epoch's error, ``last=10`` the CIFAR statistic of Sec. 4.2.1."""
    values = history[key]
    if not values:
        raise ValueError("history has no epochs")
    return float(np.mean(values[-positive_int("last", last) :]))


def init_seed(seed, config):
    """Seed of the initial weights of run ``seed`` of model ``config`` (distinct streams per run)."""
    return runs.derive_seed(seed, str(config))


def throughput(
    model, batch_size, resolution, classes, device="cpu", steps=3, warmup=1, channels_last=False, bf16=False
):
    """Training images per second of ``model`` on random inputs ``(B, 3, r, r)`` (SGD steps,
    forward + backward + update), measured over ``steps`` after ``warmup``; ``inf`` never."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, resolution, resolution, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = torch.randint(0, classes, (batch_size,), generator=g).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    amp = torch.bfloat16 if bf16 else None

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(positive_int("warmup", warmup) if warmup else 0):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(positive_int("steps", steps)):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch_size * steps / (time.perf_counter() - t0)


def epoch_hours(images, images_per_s):
    """Hours of one epoch of ``images`` at ``images_per_s`` (training only)."""
    return images / images_per_s / 3600.0 if images_per_s > 0 and math.isfinite(images_per_s) else float("nan")


# ---------------------------------------------------------------------------------------------
# Many runs: a grid of models x seeds, cached and resumable; the paper's summary statistic
# ---------------------------------------------------------------------------------------------
