"""Datasets of the paper behind one interface: ``load(name, split, root, download, n)``.

The data root is an argument or, when that is ``None``, the ``CEPAPER_DATA`` environment variable
(the Makefile and ``.ci/run`` point it at ``../shared/data`` when that folder exists). In the root,
each dataset is looked for in a fixed order of *sources*; the first one present is used and named
in ``Dataset.source``, so a results file can say exactly what it was computed on:

=========  ===============================================================================
mnist      ``mnist.npz`` (full MNIST, pixel-exact), then torchvision's ``MNIST/`` folder
cifar10    torchvision's ``cifar-10-batches-py/`` (exact pixels), then ``cifar10_jpeg.npz``
           (all 60k images, JPEG quality 75), then ``cifar10.npz`` (the same JPEG pixels,
           decoded; its train split holds only the first 5,000 official training images)
=========  ===============================================================================

With ``download=True`` and no local source, torchvision downloads the dataset into the root.
A dataset that is nowhere to be found is an error that says how to get it; nothing is ever
substituted silently. Another dataset (CIFAR-100, ImageNet) is one more entry in ``SOURCES``:
a function ``(root, split, download, n) -> Dataset`` (for ImageNet it would return a
``torchvision.datasets.ImageFolder``-backed dataset rather than arrays in memory).
"""

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cepaper._checks import positive_int

SPLITS = ("train", "test")

# Per-channel mean and std of the training pixels in [0, 1] (the usual normalization constants).
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

HOW_TO_GET = {
    "mnist": ("put `mnist.npz` (keys x_train, y_train, x_test, y_test) in the data root, or pass "
              "download=True to fetch MNIST with torchvision into the data root"),
    "cifar10": ("put `cifar10_jpeg.npz` or `cifar10.npz` in the data root, or pass download=True "
                "to fetch CIFAR-10 with torchvision into the data root"),
}


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


def data_root(root=None):
    """The data root: ``root`` if given, else ``$CEPAPER_DATA``, else ``None`` (as a ``Path``)."""
    root = root if root is not None else os.environ.get("CEPAPER_DATA") or None
    return Path(root).expanduser() if root is not None else None


def _check(split, n):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return None if n is None else positive_int("n", n)


def _npz_arrays(path, split, n):
    """``(x, y)`` of one split of an ``np.load``-able file, first ``n`` examples."""
    with np.load(path) as d:
        x, y = d[f"x_{split}"], d[f"y_{split}"]
    return x[:n], y[:n].astype(np.int64)


def _decode_jpegs(buf, offsets, n):
    """Decode the first ``n`` JPEGs of a concatenated buffer into ``(n, H, W, 3)`` uint8 RGB."""
    from PIL import Image
    return np.stack([np.asarray(Image.open(io.BytesIO(buf[offsets[i]:offsets[i + 1]].tobytes()))
                                .convert("RGB")) for i in range(n)])


def _torchvision(cls, root, split, download):
    """A torchvision dataset object, or ``None`` when it is not in ``root`` and not downloaded."""
    try:
        return cls(str(root), train=split == "train", download=download)
    except RuntimeError:  # "Dataset not found" (or a failed integrity check)
        if download:
            raise
        return None


def _mnist(root, split, download, n):
    if root is not None and (root / "mnist.npz").is_file():
        x, y = _npz_arrays(root / "mnist.npz", split, n)
        return Dataset("mnist", split, x, y, source=str(root / "mnist.npz"))
    if root is not None:
        from torchvision.datasets import MNIST
        ds = _torchvision(MNIST, root, split, download)
        if ds is not None:
            return Dataset("mnist", split, ds.data.numpy()[:n], ds.targets.numpy()[:n].astype(np.int64),
                           source=f"torchvision MNIST in {root}")
    return None


def _cifar10(root, split, download, n):
    if root is None:
        return None
    from torchvision.datasets import CIFAR10
    has_tv = (root / "cifar-10-batches-py").is_dir()
    if has_tv or (download and not any((root / f).is_file() for f in ("cifar10_jpeg.npz", "cifar10.npz"))):
        ds = _torchvision(CIFAR10, root, split, download)
        if ds is not None:
            return Dataset("cifar10", split, ds.data[:n], np.asarray(ds.targets[:n], dtype=np.int64),
                           source=f"torchvision CIFAR10 in {root}")
    if (root / "cifar10_jpeg.npz").is_file():
        with np.load(root / "cifar10_jpeg.npz") as d:
            buf, off, y = d[f"{split}_jpeg"], d[f"{split}_offsets"], d[f"y_{split}"]
        k = len(y) if n is None else min(n, len(y))
        return Dataset("cifar10", split, _decode_jpegs(buf, off, k), y[:k].astype(np.int64),
                       source=f"{root / 'cifar10_jpeg.npz'} (JPEG quality 75)")
    if (root / "cifar10.npz").is_file():
        x, y = _npz_arrays(root / "cifar10.npz", split, n)
        what = " (first 5000 official training images)" if split == "train" else ""
        return Dataset("cifar10", split, x, y, source=f"{root / 'cifar10.npz'} (JPEG quality 75){what}")
    return None


SOURCES = {"mnist": _mnist, "cifar10": _cifar10}


def load(name, split="train", root=None, download=False, n=None):
    """Load a dataset split into memory.

    Args:
        name: one of ``SOURCES`` (``"mnist"``, ``"cifar10"``).
        split: ``"train"`` or ``"test"``.
        root: data folder; ``None`` reads ``$CEPAPER_DATA``.
        download: let torchvision download the dataset into ``root`` when no local source exists.
        n: keep only the first ``n`` examples (in the dataset's official order), or all if ``None``.
    Returns:
        a :class:`Dataset`; MNIST ``x`` is ``(N, 28, 28)``, CIFAR-10 ``x`` is ``(N, 32, 32, 3)``.
    Raises:
        FileNotFoundError: the dataset is not in the root (and not downloaded), saying how to get it.
    """
    if name not in SOURCES:
        raise ValueError(f"dataset must be one of {', '.join(SOURCES)}; got {name!r}")
    n = _check(split, n)
    path = data_root(root)
    if download and path is None:
        raise ValueError("download=True needs a data root: pass root=... or set CEPAPER_DATA")
    ds = SOURCES[name](path, split, download, n)
    if ds is None:
        where = f"in {path}" if path is not None else "(no data root: root=None and CEPAPER_DATA is unset)"
        raise FileNotFoundError(f"{name} not found {where}; {HOW_TO_GET[name]}")
    return ds


def inputs(ds, dtype=torch.float32, device=None):
    """Flattened, standardized inputs of a dataset: ``(x / 255 - mean) / std``, shape ``(N, D)``.

    The per-channel ``mean``/``std`` are the training statistics in ``STATS``; ``D`` is ``28*28``
    for MNIST and ``32*32*3`` (HWC order) for CIFAR-10.
    """
    mean, std = (torch.tensor(s, dtype=dtype) for s in STATS[ds.name])
    x = torch.as_tensor(np.asarray(ds.x)).to(dtype) / 255.0
    x = (x.unsqueeze(-1) if x.ndim == 3 else x) - mean
    return (x / std).reshape(len(x), -1).to(device)


TARGETS = ("parity", "digit")


def scalar_targets(y, kind="parity", dtype=torch.float32, device=None):
    """Scalar regression targets ``(N,)`` from class labels, for the single-output nets of Eq. 3.

    ``parity``: ``+1`` for even labels, ``-1`` for odd ones; ``digit``: the label as a number.
    """
    if kind not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {kind!r}")
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    t = 1.0 - 2.0 * (y % 2) if kind == "parity" else y
    return t.to(dtype=dtype, device=device)
