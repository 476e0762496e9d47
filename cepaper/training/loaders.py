"""The two data paths of the recipe loop: an in-memory dataset copied to the device once and augmented
there in whole batches (:class:`ArrayData`), and a folder of images through a ``DataLoader`` with
torchvision transforms (:class:`FolderData`); each rank of a distributed run reads its own share."""

import numpy as np
import torch

from cepaper import runs
from cepaper.training import distributed
from cepaper.training.recipes import augment, augment_params, is_folder, normalize


def topk_errors(logits, y, ks=(1, 5)):
    """Number of examples whose label is not among the ``k`` largest logits, for each ``k``.

    ``logits``: ``(B, K)``; ``y``: ``(B,)``. ``k`` larger than ``K`` counts as ``K``. Returns a list of ints.
    """
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == y[:, None]
    return [int(len(y) - hit[:, : min(k, kmax)].any(1).sum()) for k in ks]


def _epoch_generator(seed, epoch):
    return torch.Generator().manual_seed(runs.derive_seed(seed, epoch))


class ArrayData:
    """An in-memory uint8 dataset on the device: ``x (N, H, W, C)``, ``y (N,)`` and the ``(mean, std)``
    of :func:`normalize`. Crops pad with black (0) pixels, before normalization.

    ``world`` (:class:`cepaper.training.distributed.World`) and ``per_rank``: this rank's share of
    every batch (:func:`~cepaper.training.distributed.rank_span`: its ``per_rank`` micro-batches of
    ``micro``) and of the test set; every rank holds all images (index shards)."""

    def __init__(self, ds, device, stats, world=None, micro=None, per_rank=None):
        x = np.asarray(ds.x)
        if x.ndim == 3:
            x = x[..., None]
        self.x = torch.as_tensor(x).to(device)
        self.y = torch.as_tensor(np.asarray(ds.y), dtype=torch.int64).to(device)
        self.mean, self.std = (torch.as_tensor(np.asarray(s, np.float32)).to(device) for s in stats)
        self.world, self.micro, self.per_rank = world or distributed.World(), micro, per_rank

    def __len__(self):
        return len(self.y)

    def batch_sizes(self, rec):
        """The global batch sizes of one epoch (all ranks together)."""
        return [min(rec.batch_size, len(self) - i) for i in range(0, len(self), rec.batch_size)]

    def _span(self, n):
        if self.world.size == 1 or self.per_rank is None:
            return 0, n
        return distributed.rank_span(n, self.micro, self.per_rank, self.world.rank)

    def train_batches(self, rec, seed, epoch):
        """Shuffled, augmented, normalized batches ``(x (B, C, H, W) float, y (B,))`` of one epoch (this
        rank's share of each; every rank draws the whole batch's order and augmentation)."""
        g = _epoch_generator(seed, epoch)
        order = torch.randperm(len(self), generator=g).to(self.y.device)
        for i in range(0, len(self), rec.batch_size):
            idx = order[i : i + rec.batch_size]
            offsets, flips = augment_params(len(idx), self.x.shape[1], rec.pad, g, rec.augment == "flip")
            a, b = self._span(len(idx))
            idx, offsets, flips = idx[a:b], offsets[a:b], flips[a:b]
            xb = augment(self.x[idx], offsets, flips, rec.pad if rec.augment == "crop_flip" else 0)
            yield normalize(xb, self.mean, self.std), self.y[idx]

    def test_batches(self, batch_size):
        lo, hi = distributed.shard(len(self), self.world)
        for i in range(lo, hi, batch_size):
            j = min(hi, i + batch_size)
            yield normalize(self.x[i:j], self.mean, self.std), self.y[i:j]


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
    """A folder dataset of ``(PIL image, label)`` pairs read by a ``DataLoader`` with ``workers``; across
    ranks each reads its own shard (a ``DistributedSampler``, ``batch_size / world.size`` per step)."""

    def __init__(self, ds, device, stats, rec, workers=0, world=None):
        self.ds, self.device, self.stats, self.rec, self.workers = ds, torch.device(device), stats, rec, workers
        self.world = world or distributed.World()

    def __len__(self):
        return len(self.ds)

    def batch_sizes(self, rec):
        """The global batch sizes of one epoch (the sampler pads the data to a multiple of the ranks)."""
        w = self.world.size
        local, count = rec.batch_size // w, -(-len(self) // w)
        return [w * min(local, count - i) for i in range(0, count, local)]

    def _loader(self, transform, batch_size, generator=None, sampler=None):
        return torch.utils.data.DataLoader(
            _Transformed(self.ds, transform),
            batch_size=batch_size,
            shuffle=generator is not None and sampler is None,
            generator=generator,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _to(self, loader):
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, rec, seed, epoch):
        g = _epoch_generator(seed, epoch)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)) + self.world.rank)  # the transforms' RNG
        transform = folder_transforms(rec, self.stats, True)
        if self.world.size == 1:
            return self._to(self._loader(transform, rec.batch_size, g))
        sampler = torch.utils.data.DistributedSampler(
            self.ds, self.world.size, self.world.rank, shuffle=True, seed=runs.derive_seed(seed), drop_last=False
        )
        sampler.set_epoch(epoch)
        return self._to(self._loader(transform, rec.batch_size // self.world.size, g, sampler))

    def test_batches(self, batch_size):
        ds = self.ds
        if self.world.size > 1:
            ds = torch.utils.data.Subset(ds, range(*distributed.shard(len(ds), self.world)))
        return self._to(
            torch.utils.data.DataLoader(
                _Transformed(ds, folder_transforms(self.rec, self.stats, False)),
                batch_size=batch_size,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
            )
        )


def device_data(ds, device, stats, rec=None, workers=0, world=None):
    """:class:`ArrayData` for an in-memory dataset, :class:`FolderData` for a folder of images (this
    rank's share of them under ``world``)."""
    if is_folder(ds):
        return FolderData(ds, device, stats, rec, workers, world)
    w = world or distributed.World()
    per_rank = distributed.check_world(rec, w.size) if rec is not None and w.size > 1 else None
    return ArrayData(ds, device, stats, w, rec.micro_batch or rec.batch_size if rec is not None else None, per_rank)
