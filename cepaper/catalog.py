"""The datasets cepaper reads: their names and splits, normalization constants, how to get each one,
and the :class:`Dataset` a loader returns (``cepaper.data.load``); the data root (``$CEPAPER_DATA``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cepaper._checks import choice, positive_int

SPLITS = ("train", "test")

#: Per-channel mean and std of the training pixels in [0, 1] (the usual normalization constants).
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # np.mean / np.std of the 50,000 training images over all pixels, per channel (the values in
    # common use; tests/test_data.py recomputes them when cifar-100-python/ is in the data root).
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # torchvision's ImageNet constants (its reference training recipes and pretrained weights).
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# The downsampled sets are normalized with the same constants, as is customary; they are not
# recomputed on the downsampled pixels (``cepaper.data.channel_stats`` gives those from the data).
STATS["imagenet32"] = STATS["imagenet64"] = STATS["imagenet"]


DOWNSAMPLED = {"imagenet32": 32, "imagenet64": 64}  # name -> image side


_DOWNSAMPLED_HOW = (
    "download {f} (pickled batches) or {f_npz} (npz) from image-net.org "
    '(log in, then Download > "Downsampled ImageNet"; Chrabaszcz et al. 2017) '
    "and unzip them into the data root, giving {train}/ and {val}/"
)


HOW_TO_GET = {
    "mnist": (
        "put `mnist.npz` (keys x_train, y_train, x_test, y_test) in the data root, or pass "
        "download=True to fetch MNIST with torchvision into the data root"
    ),
    "cifar10": (
        "put `cifar10_jpeg.npz` or `cifar10.npz` in the data root, or pass download=True "
        "to fetch CIFAR-10 with torchvision into the data root"
    ),
    "cifar100": (
        "pass download=True to fetch CIFAR-100 with torchvision into the data root "
        "(it unpacks to cifar-100-python/), or put that folder there"
    ),
    "imagenet32": _DOWNSAMPLED_HOW.format(
        f="Imagenet32_train.zip and Imagenet32_val.zip",
        f_npz="Imagenet32_train_npz.zip and Imagenet32_val_npz.zip",
        train="Imagenet32_train",
        val="Imagenet32_val",
    ),
    "imagenet64": _DOWNSAMPLED_HOW.format(
        f="Imagenet64_train_part1.zip, Imagenet64_train_part2.zip and Imagenet64_val.zip",
        f_npz="the same with _npz",
        train="Imagenet64_train_part1/, Imagenet64_train_part2",
        val="Imagenet64_val",
    ),
    "imagenet": (
        "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org "
        "(log in; ILSVRC 2012) and unpack them into <root>/imagenet/train/<wnid>/*.JPEG "
        "and <root>/imagenet/val/<wnid>/*.JPEG (the val images sorted into class folders)"
    ),
}


DOWNLOADABLE = ("mnist", "cifar10", "cifar100")


@dataclass(eq=False)
class Dataset(torch.utils.data.Dataset):
    """Images ``x`` (uint8, ``(N, H, W)`` or ``(N, H, W, C)``) and labels ``y`` (int64, ``(N,)``).

    ``source`` names where the arrays came from (a file, or torchvision), for provenance.
    Indexing gives ``(x[i], y[i])`` as numpy values, so it also serves a ``DataLoader``.
    """

    name: str
    split: str
    x: np.ndarray
    y: np.ndarray
    source: str

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def data_root(root: str | Path | None = None) -> Path | None:
    """The data root: ``root`` if given, else ``$CEPAPER_DATA``, else ``None`` (as a ``Path``)."""
    root = root if root is not None else os.environ.get("CEPAPER_DATA") or None
    return Path(root).expanduser() if root is not None else None


def check_split(split, n):
    choice("split", split, SPLITS)
    return None if n is None else positive_int("n", n)


def relative_source(text: str | None, root: str | Path | None = None) -> str | None:
    """``text`` (a dataset's ``source``, or a loader's message) with the data root's absolute path
    taken out: files in it named relative to it, the root itself "the data root"."""
    path = data_root(root)
    if path is None or text is None:
        return text
    for form in dict.fromkeys((str(path), str(path.resolve()))):
        text = text.replace(form + "/", "").replace(form, "the data root")
    return text
