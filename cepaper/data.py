"""Datasets of the paper behind one interface: ``load(name, split, root, download, n)``.

The data root is an argument or, when that is ``None``, the ``CEPAPER_DATA`` environment variable
(the Makefile and ``.ci/run`` point it at ``../shared/data`` when that folder exists). In the root,
each dataset is looked for in a fixed order of *sources*; the first one present is used and named
in ``Dataset.source``, so a results file can say exactly what it was computed on:

==========  ==============================================================================
mnist       ``mnist.npz`` (full MNIST, pixel-exact), then torchvision's ``MNIST/`` folder
cifar10     torchvision's ``cifar-10-batches-py/`` (exact pixels), then ``cifar10_jpeg.npz``
            (all 60k images, JPEG quality 75), then ``cifar10.npz`` (the same JPEG pixels,
            decoded; its train split holds only the first 5,000 official training images)
cifar100    torchvision's ``cifar-100-python/`` (the 100 fine labels)
imagenet32  Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017, arXiv 1707.08819) as
            distributed: pickled batches ``Imagenet32_train/train_data_batch_{1..10}`` and
            ``Imagenet32_val/val_data``, or the npz variant ``Imagenet32_train_npz/`` and
            ``Imagenet32_val_npz/`` (the same names with ``.npz``)
imagenet64  the same at 64x64; the train batches may also be split over
            ``Imagenet64_train_part1/`` (1..5) and ``Imagenet64_train_part2/`` (6..10), or
            ``Imagenet64_train_part{1,2}_npz/``
imagenet    ILSVRC-2012 as class folders ``<layout>/{train,val}/<wnid>/*.JPEG``, where
            ``<layout>`` is ``imagenet``, ``ILSVRC2012`` or ``ILSVRC/Data/CLS-LOC``
==========  ==============================================================================

The ``"test"`` split of the ImageNet sets is the official *validation* set (the test labels are
not public). Class indices differ between the two ImageNet forms: the downsampled files number the
classes in the devkit's ``map_clsloc.txt`` order (0 = n02119789), the folders in sorted wnid order
(0 = n01440764), as torchvision does. MNIST and the CIFARs come back as arrays in memory (:class:`Dataset`); the
downsampled ImageNets too, as HWC arrays with 0-based labels. Loading all of a downsampled split
goes through a cache, ``<root>/<name>_npy/<split>_{x,y}.npy``, built once (batch by batch,
atomically) and memory-mapped, so ImageNet64's 15 GB of training pixels never sit in memory twice;
``n`` alone reads only the batches it needs (their makers shuffled the training images, so a
prefix is a random sample of the classes).
Full ImageNet is a ``torchvision.datasets.ImageFolder`` of PIL images (no transform).

With ``download=True`` and no local source, torchvision downloads MNIST and the CIFARs into the
root; the ImageNets need an image-net.org login, so there it is an error saying where to get them.
A dataset that is nowhere to be found is an error that says how to get it; nothing is ever
substituted silently. Another dataset is one more entry in ``SOURCES``: a function
``(root, split, download, n) -> Dataset or None``.
"""

from __future__ import annotations

import io
import os
import pickle
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cepaper._checks import choice
from cepaper.catalog import (
    DOWNLOADABLE,
    DOWNSAMPLED,
    HOW_TO_GET,
    STATS,
    Dataset,
    check_split,  # noqa: F401
    data_root,
)
from cepaper.files import write_atomic


def _npz_arrays(path, split, n):
    """``(x, y)`` of one split of an ``np.load``-able file, first ``n`` examples."""
    with np.load(path) as d:
        x, y = d[f"x_{split}"], d[f"y_{split}"]
    return x[:n], y[:n].astype(np.int64)


def _decode_jpegs(buf, offsets, n):
    """Decode the first ``n`` JPEGs of a concatenated buffer into ``(n, H, W, 3)`` uint8 RGB."""
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.open(io.BytesIO(buf[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
            for i in range(n)
        ]
    )


def _torchvision(cls, root, split, download):
    """A torchvision dataset object, or ``None`` when it is not in ``root`` and not downloaded."""
    try:
        return cls(str(root), train=split == "train", download=download)
    except RuntimeError:  # "Dataset not found" (or a failed integrity check)
        if download:
            raise
        return None


def _torchvision_cifar(name, cls, root, split, download, n):
    """A torchvision CIFAR dataset (``data`` HWC uint8, ``targets``) as a :class:`Dataset`, or ``None``."""
    ds = _torchvision(cls, root, split, download)
    if ds is None:
        return None
    return Dataset(
        name,
        split,
        ds.data[:n],
        np.asarray(ds.targets[:n], dtype=np.int64),
        source=f"torchvision {cls.__name__} in the data root",
    )


def _mnist(root, split, download, n):
    if root is not None and (root / "mnist.npz").is_file():
        x, y = _npz_arrays(root / "mnist.npz", split, n)
        return Dataset("mnist", split, x, y, source="mnist.npz in the data root")
    if root is not None:
        from torchvision.datasets import MNIST

        ds = _torchvision(MNIST, root, split, download)
        if ds is not None:
            return Dataset(
                "mnist",
                split,
                ds.data.numpy()[:n],
                ds.targets.numpy()[:n].astype(np.int64),
                source="torchvision MNIST in the data root",
            )
    return None


def _cifar10(root, split, download, n):
    if root is None:
        return None
    from torchvision.datasets import CIFAR10

    has_tv = (root / "cifar-10-batches-py").is_dir()
    if has_tv or (download and not any((root / f).is_file() for f in ("cifar10_jpeg.npz", "cifar10.npz"))):
        ds = _torchvision_cifar("cifar10", CIFAR10, root, split, download, n)
        if ds is not None:
            return ds
    if (root / "cifar10_jpeg.npz").is_file():
        with np.load(root / "cifar10_jpeg.npz") as d:
            buf, off, y = d[f"{split}_jpeg"], d[f"{split}_offsets"], d[f"y_{split}"]
        k = len(y) if n is None else min(n, len(y))
        return Dataset(
            "cifar10",
            split,
            _decode_jpegs(buf, off, k),
            y[:k].astype(np.int64),
            source="cifar10_jpeg.npz in the data root (JPEG quality 75)",
        )
    if (root / "cifar10.npz").is_file():
        x, y = _npz_arrays(root / "cifar10.npz", split, n)
        what = " (first 5000 official training images)" if split == "train" else ""
        return Dataset("cifar10", split, x, y, source=f"cifar10.npz in the data root (JPEG quality 75){what}")
    return None


def _cifar100(root, split, download, n):
    if root is None:
        return None
    from torchvision.datasets import CIFAR100

    return _torchvision_cifar("cifar100", CIFAR100, root, split, download, n)


def _downsampled_files(root, name, split):
    """The official batch files of one split of a downsampled ImageNet, in order, or ``None``.

    Layouts (the first with any file wins): pickles, then ``.npz``; train batches in
    ``Imagenet{S}_train{,_part1,_part2}{,_npz}/train_data_batch_{1..10}``, validation in
    ``Imagenet{S}_val{,_npz}/val_data``. Some but not all train batches is an error.
    """
    stem = f"Imagenet{DOWNSAMPLED[name]}_{'train' if split == 'train' else 'val'}"
    names = [f"train_data_batch_{i}" for i in range(1, 11)] if split == "train" else ["val_data"]
    parts = ("", "_part1", "_part2") if split == "train" else ("",)
    for suffix, ext in (("", ""), ("_npz", ".npz")):
        folders = [root / f"{stem}{part}{suffix}" for part in parts]
        found = [next((f / (b + ext) for f in folders if (f / (b + ext)).is_file()), None) for b in names]
        if any(found):
            missing = [b + ext for b, f in zip(names, found) if f is None]
            if missing:
                raise FileNotFoundError(
                    f"{name} {split}: {', '.join(missing)} missing from "
                    f"{' / '.join(f.name for f in folders)} in {root}; "
                    f"{HOW_TO_GET[name]}"
                )
            return found
    return None


def _read_batch(path, side):
    """One official batch file: ``x`` (N, side, side, 3) uint8 HWC, ``y`` (N,) int64 in 0..999.

    The file holds ``data`` (N, 3*side*side) uint8, each row the R, G and B planes (CHW), and
    ``labels`` in 1..1000 (pickle: a dict, read with ``encoding="latin1"``; npz: the same keys).
    """
    if path.suffix == ".npz":
        with np.load(path) as d:
            data, labels = d["data"], d["labels"]
    else:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")  # a trusted local file, as distributed
        data, labels = d["data"], d["labels"]
    data, y = np.asarray(data), np.asarray(labels, dtype=np.int64) - 1
    if data.dtype != np.uint8 or data.shape != (len(y), 3 * side * side):
        raise ValueError(
            f"{path}: data must be uint8 of shape (N, {3 * side * side}) with N = "
            f"{len(y)} labels, got {data.dtype} {data.shape}"
        )
    if len(y) and not 0 <= y.min() <= y.max() <= 999:
        raise ValueError(f"{path}: labels must be in 1..1000, got {y.min() + 1}..{y.max() + 1}")
    return data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1), y


def _npy_header(shape):
    """The ``.npy`` (v1.0) header of a C-order uint8 array of ``shape``, as bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _build_cache(files, side, cache_x, cache_y, desc):
    """Write the images of ``files`` to ``cache_x`` (.npy, streamed batch by batch) and their labels
    to ``cache_y``, both atomically. Memory: one batch."""
    from tqdm import tqdm

    ys = []

    def stream(f):
        header = _npy_header((0, side, side, 3))  # numpy pads the header so the length can grow
        f.write(header)
        for path in tqdm(files, desc=desc, unit="batch"):
            x, y = _read_batch(path, side)
            f.write(np.ascontiguousarray(x).data)
            ys.append(y)
        final = _npy_header((sum(map(len, ys)), side, side, 3))
        assert len(final) == len(header), "npy header length changed"
        f.seek(0)
        f.write(final)

    write_atomic(cache_x, stream)
    buf = io.BytesIO()
    np.save(buf, np.concatenate(ys))
    write_atomic(cache_y, buf.getvalue())


def _downsampled(name, root, split, download, n):
    if root is None:
        return None
    files = _downsampled_files(root, name, split)
    if files is None:
        return None
    side = DOWNSAMPLED[name]
    folders = " + ".join(dict.fromkeys(str(f.parent.relative_to(root)) for f in files)) + " in the data root"
    what = "official training set" if split == "train" else "official validation set"
    cache_x, cache_y = (root / f"{name}_npy" / f"{split}_{v}.npy" for v in "xy")
    newest = max(f.stat().st_mtime for f in files)
    fresh = all(c.is_file() and c.stat().st_mtime >= newest for c in (cache_x, cache_y))
    if n is not None and not fresh:  # read only the batches the first n images are in
        xs, ys, k = [], [], 0
        for path in files:
            x, y = _read_batch(path, side)
            xs.append(np.ascontiguousarray(x[: n - k]))
            ys.append(y[: n - k])
            k += len(ys[-1])
            if k == n:
                break
        return Dataset(name, split, np.concatenate(xs), np.concatenate(ys), source=f"{folders} ({what})")
    if not fresh:
        try:
            _build_cache(files, side, cache_x, cache_y, desc=f"caching {name} {split}")
        except PermissionError as e:
            raise PermissionError(
                f"cannot write the cache of {name} {split} in {cache_x.parent} "
                f"({e}); loading the whole split needs a writable data root, or "
                "pass n=... to read only the first n images"
            ) from None
    x, y = np.load(cache_x, mmap_mode="c"), np.load(cache_y)  # copy-on-write: the file never changes
    if len(x) != len(y):
        raise ValueError(
            f"{cache_x} and {cache_y} disagree ({len(x)} images, {len(y)} labels); delete them to rebuild the cache"
        )
    return Dataset(
        name, split, x[:n], y[:n], source=f"{folders} ({what}), cached in {cache_x.parent.relative_to(root)}"
    )


IMAGENET_LAYOUTS = ("imagenet", "ILSVRC2012", "ILSVRC/Data/CLS-LOC")


def _imagenet(root, split, download, n):
    """ILSVRC-2012 class folders as a ``torchvision.datasets.ImageFolder`` (PIL RGB images, labels
    = index of the wnid in sorted order), with ``name``, ``split`` and ``source`` set."""
    if root is None:
        return None
    sub = "train" if split == "train" else "val"
    folder = next((root / lay / sub for lay in IMAGENET_LAYOUTS if (root / lay / sub).is_dir()), None)
    if folder is None:
        return None
    with os.scandir(folder) as entries:
        kinds = {("dir" if e.is_dir() else e.name.rsplit(".", 1)[-1].lower()) for e in entries}
    if "dir" not in kinds and kinds & {"jpeg", "jpg"}:
        raise FileNotFoundError(
            f"{folder} holds the images directly (the official unsorted validation set); sort them "
            "into one folder per class, <wnid>/ILSVRC2012_val_*.JPEG, e.g. with the valprep.sh "
            "script of github.com/soumith/imagenetloader.torch, or with "
            "torchvision.datasets.ImageNet(root, split='val'), which uses the devkit's labels"
        )
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder))
    if n is not None and n < len(ds.samples):  # evenly spaced: the folders are sorted by class
        keep = np.linspace(0, len(ds.samples) - 1, n).round().astype(np.int64)
        ds.samples = [ds.samples[i] for i in keep]
        ds.imgs, ds.targets = ds.samples, [ds.targets[i] for i in keep]
    what = "official training set" if split == "train" else "official validation set"
    ds.name, ds.split = "imagenet", split
    ds.source = f"{folder.relative_to(root)} in the data root ({what}, ImageFolder)"
    return ds


SOURCES = {
    "mnist": _mnist,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "imagenet32": partial(_downsampled, "imagenet32"),
    "imagenet64": partial(_downsampled, "imagenet64"),
    "imagenet": _imagenet,
}


def load(
    name: str, split: str = "train", root: str | Path | None = None, download: bool = False, n: int | None = None
) -> Dataset:
    """Load a dataset split into memory.

    Args:
        name: one of ``SOURCES``: ``"mnist"``, ``"cifar10"``, ``"cifar100"``, ``"imagenet32"``,
            ``"imagenet64"``, ``"imagenet"``.
        split: ``"train"`` or ``"test"`` (for the ImageNets: the official validation set).
        root: data folder; ``None`` reads ``$CEPAPER_DATA``.
        download: let torchvision download the dataset into ``root`` when no local source exists
            (MNIST and the CIFARs only; for the ImageNets it is an error saying where to get them).
        n: keep only the first ``n`` examples (in the files' order), or all if ``None``; for the
            ``imagenet`` folders (sorted by class) ``n`` evenly spaced samples, so all classes stay.
    Returns:
        a :class:`Dataset` with ``x`` uint8 and ``y`` int64: MNIST ``x`` is ``(N, 28, 28)``, the
        CIFARs ``(N, 32, 32, 3)``, ImageNet32/64 ``(N, 32, 32, 3)``/``(N, 64, 64, 3)`` with ``y`` in
        0..999 (the files' 1..1000 minus one; a full split is memory-mapped from the cache).
        ``"imagenet"``: a ``torchvision.datasets.ImageFolder`` of ``(PIL image, class index)`` with
        ``name``, ``split`` and ``source`` attributes.
    Raises:
        FileNotFoundError: the dataset is not in the root (and not downloaded), saying how to get it.
    """
    choice("dataset", name, tuple(SOURCES))
    n = check_split(split, n)
    path = data_root(root)
    if download and path is None:
        raise ValueError("download=True needs a data root: pass root=... or set CEPAPER_DATA")
    ds = SOURCES[name](path, split, download, n)
    if ds is None:
        where = f"in {path}" if path is not None else "(no data root: root=None and CEPAPER_DATA is unset)"
        if download and name not in DOWNLOADABLE:
            raise FileNotFoundError(
                f"{name} not found {where} and cannot be downloaded automatically "
                f"(image-net.org needs a login); {HOW_TO_GET[name]}"
            )
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


def channel_stats(x, chunk=10000):
    """Per-channel mean and std of uint8 images ``x`` (N, H, W, C) scaled to [0, 1], over all
    pixels (population std), read ``chunk`` images at a time: two tuples of C floats."""
    total = total_sq = 0
    for i in range(0, len(x), chunk):
        c = np.asarray(x[i : i + chunk], dtype=np.float64).reshape(-1, x.shape[-1]) / 255.0
        total, total_sq = total + c.sum(0), total_sq + (c * c).sum(0)
    count = len(x) * int(np.prod(x.shape[1:-1]))
    mean = total / count
    return tuple(mean.tolist()), tuple(np.sqrt(total_sq / count - mean**2).tolist())


TARGETS = ("parity", "digit")


def scalar_targets(y, kind="parity", dtype=torch.float32, device=None):
    """Scalar regression targets ``(N,)`` from class labels, for the single-output nets of Eq. 3.

    ``parity``: ``+1`` for even labels, ``-1`` for odd ones; ``digit``: the label as a number.
    """
    choice("target", kind, TARGETS)
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    t = 1.0 - 2.0 * (y % 2) if kind == "parity" else y
    return t.to(dtype=dtype, device=device)
