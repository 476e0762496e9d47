"""Image classification training of Sec. 4.2 and App. A: the paper's recipes, top-1/top-5 test error.

A :class:`Recipe` is one frozen dataclass per training setting the paper uses (``RECIPES``):

==============  ===========================================================================================
``cifar``       Sec. 4.2.1 following Xie et al. [20]: SGD 0.9, batch 128 on 8 GPUs (16 per GPU), lr 0.1,
                wd 5e-4, 300 epochs, lr / 10 at 150 and 225; random crop of the 4-px black-padded
                image + horizontal flip; per-channel normalization (the authors' constants).
``cifar_1gpu``  the same on a single GPU: BatchNorm over the whole batch of 128 (Table 1b's § rows).
``imagenet``    Sec. 4.2.2: SGD 0.9, batch 256 (32 per GPU), lr 0.1, wd 1e-4, 100 epochs, lr / 10 at 30,
                60, 90; the augmentation of [20] (fb.resnet.torch: RandomResizedCrop(224), color jitter
                0.4 of brightness, contrast, saturation, flip) without its PCA lighting noise, as the
                paper says; test: resize 256, center crop 224; per-channel normalization.
``imagenet32``  App. A.1: SGD 0.9, batch 1024 (128 per GPU), lr 0.08, wd 5e-4, 80 epochs, lr / 5 at 20,
                40, 60; "as in [3]": crop of the 4-px black-padded image + flip, then the per-pixel
                mean image of the training set subtracted (no division by a std).
``imagenet64``  App. A.2: the same at batch 512 (64 per GPU), lr 0.04, 60 epochs, lr / 5 at 20, 30, 40.
==============  ===========================================================================================

The paper trains on 8 GPUs, with the authors' ``torch.nn.DataParallel`` (their ``train.py``): each
GPU's BatchNorm normalizes over its own share of the batch (16, 32, 128 and 64 images). A recipe's
``micro_batch`` is that per-GPU batch: one step accumulates the gradients of ``batch_size /
micro_batch`` micro-batches, so BatchNorm sees the paper's per-GPU batch and the activations of one
micro-batch fit one GPU; the gradient is that of the mean loss over the whole batch, as with
DataParallel. One difference: BatchNorm's running statistics (used at test time) are updated by
every micro-batch, where DataParallel keeps those of the first GPU's replica. The rows of Table 1b
marked § were trained on a single GPU: ``cifar_1gpu`` (micro-batch = batch = 128).

Preprocessing is the authors' code's: crops pad the raw image with black (zero) pixels *before*
normalization (torchvision's ``RandomCrop(padding=4)`` ahead of ``Normalize``, and for the
downsampled ImageNets ahead of the mean-image subtraction); ``normalize`` is ``"channel"``
(``(x - mean_c) / std_c``: for CIFAR-10 and CIFAR-100 alike the authors' constants
``CIFAR_STATS``, for full ImageNet torchvision's) or ``"mean_image"`` (``x - mean_image``, the
per-pixel mean of the training images, computed from them; the authors subtract the mean image
that the downsampled ImageNet files ship, which our loader does not read). SGD is plain momentum,
as the paper states it.

The learning rate of epoch ``e`` (0-based) is ``lr * gamma ** #{milestones <= e}`` (:meth:`Recipe.lr_at`).

Two data paths: an in-memory :class:`cepaper.data.Dataset` (uint8 ``(N, H, W, C)``: CIFAR, ImageNet32/64)
is copied to the device once and augmented there in whole batches (:func:`augment`: no per-image
Python); a folder dataset of PIL images (full ImageNet) goes through a ``DataLoader`` with torchvision
transforms (:func:`folder_transforms`). :func:`fit` trains one model, evaluates the top-1 and top-5
test error after every epoch, and with ``checkpoint=path`` saves model, optimizer, scheduler, RNG
states and history atomically after every epoch; calling it again resumes exactly where it stopped
(bit for bit on a CPU: every epoch's random numbers are drawn from ``(seed, epoch)``).
:func:`run_models` trains a grid of ResNeXts x seeds with one recipe (finished runs cached, so a grid
resumes) and :func:`summary` gives the paper's statistic (``cepaper.paper.STATISTICS``): each run's
test error averaged over its last ``last`` epochs (CIFAR: 10; ImageNet: 1, the final error), then
the mean and standard error over runs.
"""

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cepaper import results
from cepaper._checks import nonneg_int, positive_int
from cepaper.train import save_checkpoint

AUGMENTATIONS = ("crop_flip", "flip", "random_resized_crop")
NORMALIZATIONS = ("channel", "mean_image")
#: The per-channel mean and std (in [0, 1]) the authors' code normalizes CIFAR-10 and CIFAR-100 with:
#: (125.3, 123.0, 113.9) / 255 and (63.0, 62.1, 66.7) / 255.
CIFAR_STATS = (tuple(v / 255 for v in (125.3, 123.0, 113.9)), tuple(v / 255 for v in (63.0, 62.1, 66.7)))


@dataclass(frozen=True)
class Recipe:
    """One training setting: SGD with momentum and a step schedule, and the data augmentation.

    ``milestones``: epochs at which the lr is multiplied by ``gamma``; ``micro_batch``: images per
    forward/backward pass, the BatchNorm batch (gradients accumulated to ``batch_size``; ``None``:
    the whole batch); ``augment``: one of ``AUGMENTATIONS`` (``pad`` pixels of black padding for
    ``crop_flip``); ``normalize``: one of ``NORMALIZATIONS``, with ``stats`` fixed per-channel
    ``(mean, std)`` in [0, 1] (``None``: the dataset's, :func:`channel_stats`); ``resolution``: the
    network's input size (``test_resize`` the shorter side before the center crop, and
    ``color_jitter`` the brightness/contrast/saturation jitter: folder data only).
    """

    name: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    milestones: tuple
    gamma: float
    momentum: float = 0.9
    micro_batch: int = None
    augment: str = "crop_flip"
    pad: int = 4
    normalize: str = "channel"
    stats: tuple = None
    resolution: int = 32
    test_resize: int = None
    color_jitter: float = 0.0
    source: str = ""

    def __post_init__(self):
        positive_int("epochs", self.epochs), positive_int("batch_size", self.batch_size)
        if self.micro_batch is not None and positive_int("micro_batch", self.micro_batch) > self.batch_size:
            raise ValueError(f"micro_batch must be <= batch_size ({self.batch_size}), got {self.micro_batch}")
        for name in ("lr", "weight_decay", "momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.stats is not None and (self.normalize != "channel" or len(self.stats) != 2
                                       or len(self.stats[0]) != len(self.stats[1])):
            raise ValueError(f"stats must be None or per-channel (mean, std) of equal lengths with normalize "
                             f"'channel', got {self.stats!r} with normalize {self.normalize!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")
        for m in self.milestones:
            positive_int("milestones", m)

    def lr_at(self, epoch):
        """Learning rate of epoch ``epoch`` (0-based): ``lr * gamma ** #{milestones <= epoch}``."""
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    def scaled(self, epochs):
        """The same recipe over ``epochs`` epochs, milestones scaled in proportion (rounded)."""
        epochs = positive_int("epochs", epochs)
        if epochs == self.epochs:
            return self
        ms = tuple(max(1, round(m * epochs / self.epochs)) for m in self.milestones)
        return replace(self, epochs=epochs, milestones=ms)


_CIFAR = Recipe("cifar", 300, 128, 0.1, 5e-4, (150, 225), 0.1, micro_batch=16, augment="crop_flip", pad=4,
                stats=CIFAR_STATS, resolution=32,
                source="Sec. 4.2.1, following Xie et al. [20] Sec. 5.1; 8 GPUs (Table 1), 16 images per GPU")
RECIPES = {
    "cifar": _CIFAR,
    "cifar_1gpu": replace(_CIFAR, name="cifar_1gpu", micro_batch=None,
                          source="Sec. 4.2.1 on a single GPU: the rows of Table 1b marked §"),
    "imagenet": Recipe("imagenet", 100, 256, 0.1, 1e-4, (30, 60, 90), 0.1, micro_batch=32, augment="random_resized_crop",
                       resolution=224, test_resize=256, color_jitter=0.4,
                       source="Sec. 4.2.2 (augmentation of [20] without lighting)"),
    "imagenet32": Recipe("imagenet32", 80, 1024, 0.08, 5e-4, (20, 40, 60), 0.2, micro_batch=128, augment="crop_flip",
                         pad=4, normalize="mean_image", resolution=32,
                         source="App. A.1 (normalization and augmentation 'as in [3]', as the authors' code does them)"),
    "imagenet64": Recipe("imagenet64", 60, 512, 0.04, 5e-4, (20, 30, 40), 0.2, micro_batch=64, augment="crop_flip",
                         pad=4, normalize="mean_image", resolution=64,
                         source="App. A.2 (normalization and augmentation 'as in [3]', as the authors' code does them)"),
}

#: The recipe of each dataset.
DATASET_RECIPE = {"cifar10": "cifar", "cifar100": "cifar", "imagenet": "imagenet",
                  "imagenet32": "imagenet32", "imagenet64": "imagenet64"}


def recipe(name):
    """The recipe ``name`` of ``RECIPES`` (a :class:`Recipe` passes through)."""
    if isinstance(name, Recipe):
        return name
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    return RECIPES[name]


# ---------------------------------------------------------------------------------------------
# Data on the device: normalization, batched augmentation, top-k error
# ---------------------------------------------------------------------------------------------

def channel_stats(ds, max_images=50000):
    """Per-channel ``(mean, std)`` of a dataset's pixels in [0, 1]: ``cepaper.data.STATS`` when it
    has the dataset, else computed from the first ``max_images`` images of ``ds`` (in-memory)."""
    from cepaper import data
    if ds.name in data.STATS:
        return data.STATS[ds.name]
    x = ds.x[:max_images]
    return data.channel_stats(x if x.ndim == 4 else x[..., None])


_MEAN_IMAGES = {}


def mean_image(ds, chunk=2048):
    """The per-pixel mean ``(H, W, C)`` float32 of an in-memory dataset's images in [0, 1], over all
    its images (read ``chunk`` at a time, summed in float64; remembered per :func:`data_digest`)."""
    key = data_digest(ds)
    if key not in _MEAN_IMAGES:
        x = ds.x if ds.x.ndim == 4 else ds.x[..., None]
        total = np.zeros(x.shape[1:], np.float64)
        for i in range(0, len(x), chunk):
            total += np.asarray(x[i:i + chunk], dtype=np.float64).sum(0)
        _MEAN_IMAGES[key] = (total / (255.0 * len(x))).astype(np.float32)
    return _MEAN_IMAGES[key]


def input_stats(rec, ds):
    """``(mean, std)`` that :func:`normalize` takes for training data ``ds`` under recipe ``rec``:
    per-channel ``rec.stats`` or :func:`channel_stats` (``normalize="channel"``), or the mean image
    of ``ds`` ``(H, W, C)`` and a std of 1 (``"mean_image"``, in-memory data only)."""
    if rec.normalize == "mean_image":
        if is_folder(ds):
            raise ValueError(f"recipe {rec.name!r} normalizes by the mean image, which needs in-memory images, "
                             f"not the folder dataset {getattr(ds, 'name', '?')!r}")
        m = mean_image(ds)
        return m, (1.0,) * m.shape[-1]
    if rec.stats is not None:
        return rec.stats
    return _folder_stats(ds) if is_folder(ds) else channel_stats(ds)


def normalize(x, mean, std):
    """uint8 ``(B, H, W, C)`` -> float ``(B, C, H, W)``: ``(x / 255 - mean) / std``; ``mean`` per
    channel ``(C,)`` or per pixel ``(H, W, C)``, ``std`` per channel ``(C,)``."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device)
    return ((x.float() / 255.0 - mean) / std).permute(0, 3, 1, 2)


def augment_params(batch, size, pad, generator, flip_only=False):
    """Random crop offsets ``(B, 2)`` in ``[0, 2 pad]`` (zeros with ``flip_only``) and flip flags ``(B,)``."""
    offsets = (torch.zeros(batch, 2, dtype=torch.int64) if flip_only
               else torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator))
    flips = torch.rand(batch, generator=generator) < 0.5
    return offsets, flips


def augment(x, offsets, flips, pad, fill=0):
    """Random crop of a padded batch and horizontal flip, all images at once.

    ``x``: ``(B, H, W, C)`` (any dtype, any device); ``offsets``: ``(B, 2)`` top-left corners
    ``(dy, dx)`` in the padded image; ``flips``: ``(B,)`` bools; ``fill``: the padding's value, a
    number or one per channel. Returns ``(B, H, W, C)``: image ``b`` is ``pad(x[b])[dy:dy + H, dx:dx + W]``,
    mirrored left-right where ``flips[b]``.
    """
    b, h, w, c = x.shape
    dev = x.device
    offsets, flips = offsets.to(dev), flips.to(dev)
    xp = x
    if pad:
        xp = torch.empty(b, h + 2 * pad, w + 2 * pad, c, dtype=x.dtype, device=dev)
        xp[:] = torch.as_tensor(fill, dtype=x.dtype, device=dev)
        xp[:, pad:pad + h, pad:pad + w] = x
    cols = torch.arange(w, device=dev)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[:, 1:2]  # (B, W)
    rows = torch.arange(h, device=dev) + offsets[:, 0:1]                       # (B, H)
    return xp[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]


def topk_errors(logits, y, ks=(1, 5)):
    """Number of examples whose label is not among the ``k`` largest logits, for each ``k``.

    ``logits``: ``(B, K)``; ``y``: ``(B,)``. ``k`` larger than ``K`` counts as ``K``. Returns a list of ints.
    """
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == y[:, None]
    return [int(len(y) - hit[:, :min(k, kmax)].any(1).sum()) for k in ks]


# ---------------------------------------------------------------------------------------------
# Batches of one epoch: in-memory arrays (device augmentation) or a folder (DataLoader)
# ---------------------------------------------------------------------------------------------

def _epoch_generator(seed, epoch):
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def is_folder(ds):
    """True for a folder dataset of PIL images (no in-memory ``x`` array)."""
    return not hasattr(ds, "x")


class ArrayData:
    """An in-memory uint8 dataset on the device: ``x (N, H, W, C)``, ``y (N,)`` and the ``(mean, std)``
    of :func:`normalize`. Crops pad with black (0) pixels, before normalization."""

    def __init__(self, ds, device, stats):
        x = np.asarray(ds.x)
        if x.ndim == 3:
            x = x[..., None]
        self.x = torch.as_tensor(x).to(device)
        self.y = torch.as_tensor(np.asarray(ds.y), dtype=torch.int64).to(device)
        self.mean, self.std = (torch.as_tensor(np.asarray(s, np.float32)).to(device) for s in stats)

    def __len__(self):
        return len(self.y)

    def train_batches(self, rec, seed, epoch):
        """Shuffled, augmented, normalized batches ``(x (B, C, H, W) float, y (B,))`` of one epoch."""
        g = _epoch_generator(seed, epoch)
        order = torch.randperm(len(self), generator=g).to(self.y.device)
        for i in range(0, len(self), rec.batch_size):
            idx = order[i:i + rec.batch_size]
            offsets, flips = augment_params(len(idx), self.x.shape[1], rec.pad, g, rec.augment == "flip")
            xb = augment(self.x[idx], offsets, flips, rec.pad if rec.augment == "crop_flip" else 0)
            yield normalize(xb, self.mean, self.std), self.y[idx]

    def test_batches(self, batch_size):
        for i in range(0, len(self), batch_size):
            yield normalize(self.x[i:i + batch_size], self.mean, self.std), self.y[i:i + batch_size]


def folder_transforms(rec, stats, train):
    """torchvision transforms of a folder dataset: ``RandomResizedCrop(res)``, color jitter (when the
    recipe has it) and flip for training, ``Resize(test_resize)`` + ``CenterCrop(res)`` for testing;
    then ``ToTensor`` and ``Normalize``."""
    from torchvision import transforms as T
    tail = [T.ToTensor(), T.Normalize(*stats)]
    if train:
        cj = rec.color_jitter
        jitter = [T.ColorJitter(brightness=cj, contrast=cj, saturation=cj)] if cj else []
        return T.Compose([T.RandomResizedCrop(rec.resolution), *jitter, T.RandomHorizontalFlip(), *tail])
    return T.Compose([T.Resize(rec.test_resize or rec.resolution), T.CenterCrop(rec.resolution), *tail])


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, ds, transform):
        self.ds, self.transform = ds, transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img, label = self.ds[i]
        return self.transform(img), label


class FolderData:
    """A folder dataset of ``(PIL image, label)`` pairs read by a ``DataLoader`` with ``workers``."""

    def __init__(self, ds, device, stats, rec, workers=0):
        self.ds, self.device, self.stats, self.rec, self.workers = ds, torch.device(device), stats, rec, workers

    def __len__(self):
        return len(self.ds)

    def _loader(self, transform, batch_size, generator=None):
        return torch.utils.data.DataLoader(_Transformed(self.ds, transform), batch_size=batch_size,
                                           shuffle=generator is not None, generator=generator,
                                           num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                           persistent_workers=False)

    def _to(self, loader):
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, rec, seed, epoch):
        g = _epoch_generator(seed, epoch)
        torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=g)))  # the transforms' RNG
        return self._to(self._loader(folder_transforms(rec, self.stats, True), rec.batch_size, g))

    def test_batches(self, batch_size):
        return self._to(self._loader(folder_transforms(self.rec, self.stats, False), batch_size))


def device_data(ds, device, stats, rec=None, workers=0):
    """:class:`ArrayData` for an in-memory dataset, :class:`FolderData` for a folder of images."""
    return FolderData(ds, device, stats, rec, workers) if is_folder(ds) else ArrayData(ds, device, stats)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, data, batch_size=1000, amp_dtype=None, channels_last=False):
    """``{"loss", "top1", "top5"}`` of ``model`` on a device dataset (errors in %, mean loss)."""
    model.eval()
    n, loss, errs = 0, 0.0, np.zeros(2)
    for x, y in data.test_batches(batch_size):
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(x)
        loss += F.cross_entropy(out.float(), y, reduction="sum").item()
        errs += topk_errors(out, y)
        n += len(y)
    return {"loss": loss / n, "top1": 100.0 * errs[0] / n, "top5": 100.0 * errs[1] / n}


def _optimizer(model, rec):
    opt = torch.optim.SGD(model.parameters(), lr=rec.lr, momentum=rec.momentum, weight_decay=rec.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(rec.milestones), gamma=rec.gamma)
    return opt, sched


def _rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def data_digest(ds, max_images=65536):
    """Fingerprint of a dataset: its name, split, source, size and, in memory, the pixels and labels of
    all its images (CIFAR) or of ``max_images`` evenly spaced ones (ImageNet32/64, memory-mapped)."""
    head = f"{getattr(ds, 'name', '?')}|{getattr(ds, 'split', '?')}|{getattr(ds, 'source', '?')}|{len(ds)}"
    if is_folder(ds):
        return head
    n = len(ds.y)
    idx = np.arange(n) if n <= max_images else np.linspace(0, n - 1, max_images).astype(np.int64)
    h = hashlib.sha256()
    for a in (ds.x, ds.y):
        h.update(np.ascontiguousarray(np.asarray(a)[idx]).tobytes())
    return f"{head}|{h.hexdigest()[:16]}"


def fit(model, train, test, recipe_name="cifar", *, epochs=None, seed=0, device="cpu", checkpoint=None,
        channels_last=False, bf16=False, eval_batch=1000, workers=0, progress=False):
    """Train ``model`` on ``train`` with a recipe, evaluating on ``test`` after every epoch.

    Args:
        model: a classifier ``(B, C, H, W) -> (B, classes)`` (its initial weights are the caller's).
        train, test: :class:`cepaper.data.Dataset` (uint8 in memory) or folder datasets of PIL images.
        recipe_name: a key of ``RECIPES`` or a :class:`Recipe`.
        epochs: train this many epochs with the milestones scaled (:meth:`Recipe.scaled`); ``None``: the recipe's.
        seed: seed of the data order and augmentation (epoch ``e`` draws from ``(seed, e)``).
        device: torch device; on CUDA ``cudnn.benchmark`` is on.
        checkpoint: file to save after every epoch and to resume from, or ``None``.
        channels_last, bf16: channels-last memory format; bfloat16 autocast of the forward pass.
        eval_batch: test batch size. workers: DataLoader workers of a folder dataset.
    Returns:
        history: lists over epochs ``epoch`` (1..E), ``lr``, ``train_loss``, ``train_top1``, ``test_loss``,
        ``test_top1``, ``test_top5`` (errors in %), ``seconds`` (of an epoch, evaluation included); and
        ``images_per_s`` (training images per second of those epochs).
    """
    rec = recipe(recipe_name)
    rec = rec.scaled(epochs) if epochs is not None else rec
    check_fits(rec, train)
    eval_batch = positive_int("eval_batch", eval_batch)
    nonneg_int("seed", seed)
    micro = rec.micro_batch or rec.batch_size
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    stats = input_stats(rec, train)
    tr, te = device_data(train, device, stats, rec, workers), device_data(test, device, stats, rec, workers)
    opt, sched = _optimizer(model, rec)
    amp = torch.bfloat16 if bf16 else None
    settings = None if checkpoint is None else dict(recipe=asdict(rec), seed=seed, channels_last=channels_last,
                                                    bf16=bf16, train=data_digest(train), test=data_digest(test))
    keys = ("epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "seconds")
    history = {k: [] for k in keys}
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        start, history = _resume(checkpoint, model, opt, sched, settings) or (start, history)
    for epoch in tqdm(range(start, rec.epochs), initial=start, total=rec.epochs, disable=not progress,
                      desc="epochs", leave=False):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        model.train()
        loss_sum, wrong, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        for x, y in tr.train_batches(rec, seed, epoch):
            opt.zero_grad(set_to_none=True)
            for xm, ym in zip(x.split(micro), y.split(micro)):       # the paper's per-GPU batches
                xm = xm.contiguous(memory_format=torch.channels_last) if channels_last else xm
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    out = model(xm)
                    loss = F.cross_entropy(out.float(), ym, reduction="sum")
                (loss / len(y)).backward()
                loss_sum += loss.detach()
                wrong += (out.detach().argmax(1) != ym).sum()
            opt.step()
            seen += len(y)
        sched.step()
        ev = evaluate(model, te, eval_batch, amp, channels_last)
        row = dict(epoch=epoch + 1, lr=lr, train_loss=loss_sum.item() / seen, train_top1=100.0 * wrong.item() / seen,
                   test_loss=ev["loss"], test_top1=ev["top1"], test_top5=ev["top5"],
                   seconds=time.perf_counter() - t0)
        for k in keys:
            history[k].append(row[k])
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                         "scheduler": sched.state_dict(), "rng": _rng_state(), "history": history,
                                         "settings": settings})
    n_train = len(tr)
    return {**history, "images_per_s": n_train * len(history["seconds"]) / max(sum(history["seconds"]), 1e-9)}


def check_fits(rec, ds):
    """Raise ``ValueError`` unless recipe ``rec`` fits dataset ``ds``: folder data needs a resizing
    recipe (``random_resized_crop``), in-memory data a cropping one (crops keep the images' size)."""
    folder = is_folder(ds)
    hint = f"; use recipe {DATASET_RECIPE[ds.name]!r}" if getattr(ds, "name", None) in DATASET_RECIPE else ""
    if folder != (rec.augment == "random_resized_crop"):
        kind = "a folder of images" if folder else "in-memory images"
        raise ValueError(f"recipe {rec.name!r} (augment {rec.augment!r}) does not fit {getattr(ds, 'name', 'the dataset')!r}, "
                         f"{kind}{hint}")


def _folder_stats(ds):
    from cepaper import data
    if ds.name not in data.STATS:
        raise ValueError(f"no channel statistics for the folder dataset {ds.name!r}: add them to cepaper.data.STATS")
    return data.STATS[ds.name]


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "history", "settings")


def _resume(path, model, opt, sched, settings):
    """Load a :func:`fit` checkpoint; return ``(epoch, history)``. Its settings must match.

    A checkpoint that ``torch.load`` cannot read (empty, truncated by a crash of the disk, not a
    checkpoint) or that lacks its keys is moved aside (:func:`cepaper.results.move_aside`): then
    ``None``, and the run starts afresh."""
    state = results.load_checkpoint(path)
    if state is None:
        return None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        results.move_aside(path, "not a checkpoint of classify.fit")
        return None
    if state["settings"] != settings:
        diff = {k: (state["settings"].get(k), v) for k, v in settings.items() if state["settings"].get(k) != v}
        raise ValueError(f"checkpoint {path} was written by a run with other settings (checkpoint, now): {diff}; "
                         "delete it or use another path")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["epoch"], state["history"]


def final_error(history, key="test_top1", last=1):
    """A run's error: ``history[key]`` averaged over the last ``last`` epochs (fewer if the run is
    shorter); ``last=1`` is the final epoch's error, ``last=10`` the CIFAR statistic of Sec. 4.2.1."""
    values = history[key]
    if not values:
        raise ValueError("history has no epochs")
    return float(np.mean(values[-positive_int("last", last):]))


def init_seed(seed, config):
    """Seed of the initial weights of run ``seed`` of model ``config`` (distinct streams per run)."""
    return int(np.random.SeedSequence([seed, *[ord(c) for c in str(config)]]).generate_state(1)[0])


def throughput(model, batch_size, resolution, classes, device="cpu", steps=3, warmup=1, channels_last=False,
               bf16=False):
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

def run_models(configs, dataset, train, test, seeds, *, arch="resnext29", recipe_name="cifar", classes=10,
               stages=None, depth=None, epochs=None, cache=None, device="cpu", channels_last=False, bf16=False,
               workers=0, progress=False):
    """Train every ResNeXt ``arch`` of ``configs`` (``CxDd``) once per seed with recipe ``recipe_name``
    (a key of ``RECIPES``); one record per run.

    ``stages``/``depth``: a scaled-down CIFAR ResNeXt (see :func:`cepaper.models.resnext.resnext`).
    A record: ``dataset, arch, config, recipe, seed, params, history`` (:func:`fit`), ``final_top1``,
    ``final_top5`` (the errors after the last epoch) and ``wall_s``. With ``cache`` (a folder),
    finished runs are ``<key>.json`` there and the running one checkpoints to ``<key>.pt`` every epoch.
    """
    from cepaper.models.resnext import resnext
    if not isinstance(recipe_name, str) or recipe_name not in RECIPES:
        raise ValueError(f"recipe_name must be one of {', '.join(RECIPES)}, got {recipe_name!r}")
    seeds = [int(s) for s in seeds]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must name at least one seed, each an integer >= 0, got {seeds}")
    net = {k: v for k, v in (("stages", None if stages is None else tuple(stages)), ("depth", depth)) if v is not None}
    data = {"train": data_digest(train), "test": data_digest(test)} if cache else None
    records = []
    jobs = [(config, seed) for config in configs for seed in seeds]
    for config, seed in tqdm(jobs, disable=not progress, desc=f"{dataset} runs"):
        path = None
        if cache is not None:
            settings = dict(dataset=dataset, arch=arch, config=config, seed=seed, recipe=recipe_name, classes=classes,
                            epochs=epochs, data=data, bf16=bf16, channels_last=channels_last, device=str(device),
                            **{k: list(v) if k == "stages" else v for k, v in net.items()})
            key = results.source_key(settings, ("cepaper.models.resnext", __name__))
            path = Path(cache) / f"{key}.json"
            if (done := results.read_cached(path, required=RECORD_KEYS)) is not None:  # damaged: moved aside
                records.append(done)
                continue
        torch.manual_seed(init_seed(seed, config))
        model = resnext(arch, config, classes, **net)
        t0 = time.perf_counter()
        hist = fit(model, train, test, recipe_name, epochs=epochs, seed=seed, device=device,
                   checkpoint=None if path is None else path.with_suffix(".pt"), channels_last=channels_last,
                   bf16=bf16, workers=workers, progress=progress)
        rec = {"dataset": dataset, "arch": arch, "config": config, "recipe": recipe_name, "seed": seed,
               "params": sum(p.numel() for p in model.parameters()), "history": hist, "final_top1": final_error(hist),
               "final_top5": final_error(hist, "test_top5"), "wall_s": time.perf_counter() - t0}
        if path is not None:
            results.write_atomic(path, json.dumps(rec) + "\n")
            path.with_suffix(".pt").unlink(missing_ok=True)
        records.append(rec)
    return records


RECORD_KEYS = ("dataset", "arch", "config", "recipe", "seed", "params", "history", "final_top1", "final_top5",
               "wall_s")


def summary(records, last=1):
    """Per dataset, model and recipe: the mean over runs of each run's test error averaged over its
    last ``last`` epochs (:func:`final_error`; the paper's is ``cepaper.paper.STATISTICS[...]["last_epochs"]``),
    its standard error (``nan`` for one run: undefined) and the number of runs. Columns ``dataset,
    arch, config, recipe, params, top1, top1_sem, top5, runs``."""
    last = positive_int("last", last)
    df = pd.DataFrame([{**{k: r[k] for k in ("dataset", "arch", "config", "recipe", "params")},
                        "final_top1": final_error(r["history"], "test_top1", last),
                        "final_top5": final_error(r["history"], "test_top5", last)} for r in records])
    g = df.groupby(["dataset", "arch", "config", "recipe"], sort=False)
    out = g.agg(params=("params", "first"), top1=("final_top1", "mean"), top1_sd=("final_top1", "std"),
                top5=("final_top5", "mean"), runs=("final_top1", "size")).reset_index()
    out["top1_sem"] = out.pop("top1_sd") / np.sqrt(out["runs"])
    return out
