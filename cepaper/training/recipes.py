"""The training recipes of Sec. 4.2 and App. A, and their preprocessing: normalization and batched augmentation.

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
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from cepaper import files

# torch: imported by the functions that use it, so that `cepaper train` parses its arguments without it
from cepaper._checks import choice, positive_int

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
    ``(mean, std)`` in [0, 1] (``None``: the dataset's, :func:`dataset_stats`); ``resolution``: the
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
        choice("augment", self.augment, AUGMENTATIONS)
        choice("normalize", self.normalize, NORMALIZATIONS)
        if self.stats is not None and (
            self.normalize != "channel" or len(self.stats) != 2 or len(self.stats[0]) != len(self.stats[1])
        ):
            raise ValueError(
                f"stats must be None or per-channel (mean, std) of equal lengths with normalize "
                f"'channel', got {self.stats!r} with normalize {self.normalize!r}"
            )
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


# fmt: off
_CIFAR = Recipe("cifar", 300, 128, 0.1, 5e-4, (150, 225), 0.1, micro_batch=16, augment="crop_flip", pad=4,
                stats=CIFAR_STATS, resolution=32,
                source="Sec. 4.2.1, following Xie et al. [20] Sec. 5.1; 8 GPUs (Table 1), 16 images per GPU")


RECIPES = {
    "cifar": _CIFAR,
    "cifar_1gpu": replace(_CIFAR, name="cifar_1gpu", micro_batch=None,
                          source="Sec. 4.2.1 on a single GPU: the rows of Table 1b marked §"),
    "imagenet": Recipe("imagenet", 100, 256, 0.1, 1e-4, (30, 60, 90), 0.1, micro_batch=32,
                       augment="random_resized_crop",
                       resolution=224, test_resize=256, color_jitter=0.4,
                       source="Sec. 4.2.2 (augmentation of [20] without lighting)"),
    "imagenet32": Recipe("imagenet32", 80, 1024, 0.08, 5e-4, (20, 40, 60), 0.2, micro_batch=128, augment="crop_flip",
                         pad=4, normalize="mean_image", resolution=32,
                         source="App. A.1 (normalization and augmentation 'as in [3]', "
                                "as the authors' code does them)"),
    "imagenet64": Recipe("imagenet64", 60, 512, 0.04, 5e-4, (20, 30, 40), 0.2, micro_batch=64, augment="crop_flip",
                         pad=4, normalize="mean_image", resolution=64,
                         source="App. A.2 (normalization and augmentation 'as in [3]', "
                                "as the authors' code does them)"),
}
# fmt: on


#: The recipe of each dataset.
DATASET_RECIPE = {
    "cifar10": "cifar",
    "cifar100": "cifar",
    "imagenet": "imagenet",
    "imagenet32": "imagenet32",
    "imagenet64": "imagenet64",
}


def recipe(name):
    """The recipe ``name`` of ``RECIPES`` (a :class:`Recipe` passes through)."""
    if isinstance(name, Recipe):
        return name
    return RECIPES[choice("recipe", name, tuple(RECIPES))]


def dataset_stats(ds, max_images=50000):
    """Per-channel ``(mean, std)`` of a dataset's pixels in [0, 1]: ``cepaper.catalog.STATS`` when it
    has the dataset, else computed from the first ``max_images`` images of ``ds`` (in-memory)."""
    from cepaper import catalog, data

    if ds.name in catalog.STATS:
        return catalog.STATS[ds.name]
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
            total += np.asarray(x[i : i + chunk], dtype=np.float64).sum(0)
        _MEAN_IMAGES[key] = (total / (255.0 * len(x))).astype(np.float32)
    return _MEAN_IMAGES[key]


def input_stats(rec, ds):
    """``(mean, std)`` that :func:`normalize` takes for training data ``ds`` under recipe ``rec``:
    per-channel ``rec.stats`` or :func:`dataset_stats` (``normalize="channel"``), or the mean image
    of ``ds`` ``(H, W, C)`` and a std of 1 (``"mean_image"``, in-memory data only)."""
    if rec.normalize == "mean_image":
        if is_folder(ds):
            raise ValueError(
                f"recipe {rec.name!r} normalizes by the mean image, which needs in-memory images, "
                f"not the folder dataset {getattr(ds, 'name', '?')!r}"
            )
        m = mean_image(ds)
        return m, (1.0,) * m.shape[-1]
    if rec.stats is not None:
        return rec.stats
    return _folder_stats(ds) if is_folder(ds) else dataset_stats(ds)


def normalize(x, mean, std):
    """uint8 ``(B, H, W, C)`` -> float ``(B, C, H, W)``: ``(x / 255 - mean) / std``; ``mean`` per
    channel ``(C,)`` or per pixel ``(H, W, C)``, ``std`` per channel ``(C,)``."""
    import torch

    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device)
    return ((x.float() / 255.0 - mean) / std).permute(0, 3, 1, 2)


def augment_params(batch, size, pad, generator, flip_only=False):
    """Random crop offsets ``(B, 2)`` in ``[0, 2 pad]`` (zeros with ``flip_only``) and flip flags ``(B,)``."""
    import torch

    offsets = (
        torch.zeros(batch, 2, dtype=torch.int64)
        if flip_only
        else torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
    )
    flips = torch.rand(batch, generator=generator) < 0.5
    return offsets, flips


def augment(x, offsets, flips, pad, fill=0):
    """Random crop of a padded batch and horizontal flip, all images at once.

    ``x``: ``(B, H, W, C)`` (any dtype, any device); ``offsets``: ``(B, 2)`` top-left corners
    ``(dy, dx)`` in the padded image; ``flips``: ``(B,)`` bools; ``fill``: the padding's value, a
    number or one per channel. Returns ``(B, H, W, C)``: image ``b`` is ``pad(x[b])[dy:dy + H, dx:dx + W]``,
    mirrored left-right where ``flips[b]``.
    """
    import torch

    b, h, w, c = x.shape
    dev = x.device
    offsets, flips = offsets.to(dev), flips.to(dev)
    xp = x
    if pad:
        xp = torch.empty(b, h + 2 * pad, w + 2 * pad, c, dtype=x.dtype, device=dev)
        xp[:] = torch.as_tensor(fill, dtype=x.dtype, device=dev)
        xp[:, pad : pad + h, pad : pad + w] = x
    cols = torch.arange(w, device=dev)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[:, 1:2]  # (B, W)
    rows = torch.arange(h, device=dev) + offsets[:, 0:1]  # (B, H)
    return xp[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]


def is_folder(ds):
    """True for a folder dataset of PIL images (no in-memory ``x`` array)."""
    return not hasattr(ds, "x")


def data_digest(ds, max_images=65536):
    """Fingerprint of a dataset: its name, split, source, size and, in memory, the pixels and labels of
    all its images (CIFAR) or of ``max_images`` evenly spaced ones (ImageNet32/64, memory-mapped)."""
    head = f"{getattr(ds, 'name', '?')}|{getattr(ds, 'split', '?')}|{getattr(ds, 'source', '?')}|{len(ds)}"
    if is_folder(ds):
        return head
    n = len(ds.y)
    idx = np.arange(n) if n <= max_images else np.linspace(0, n - 1, max_images).astype(np.int64)
    return f"{head}|{files.digest(np.asarray(ds.x)[idx], np.asarray(ds.y)[idx])}"


def _folder_stats(ds):
    from cepaper import catalog

    if ds.name not in catalog.STATS:
        raise ValueError(f"no channel statistics for the folder dataset {ds.name!r}: add them to cepaper.catalog.STATS")
    return catalog.STATS[ds.name]
