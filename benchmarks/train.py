"""Training throughput: our CIFAR training step against an official-style loop; the batched ensemble
against a Python list of its members.

Every number is a ratio of times measured in this one process (best of interleaved repeats), so a
shared or busy machine affects both sides alike. Run from the repository root::

    python benchmarks/train.py            # a table
    python benchmarks/train.py --json     # the table, then one JSON object as the last line

1. CIFAR: images per second of one training epoch of the same ResNeXt-29 (scaled down on a CPU:
   ``--stages``, ``--depth``) on the same ``--images`` random CIFAR-sized images, by
   :func:`cepaper.training.sgd.train_recipe` (images on the device, augmented there in whole
   batches; a 16-image evaluation included) with recipe ``cifar`` (BatchNorm over the paper's 16
   images per GPU, micro-batches accumulated) and ``cifar_1gpu`` (over the whole batch of 128), and
   by an official-style loop as in the authors' ``train.py``: a ``DataLoader`` over PIL images with
   torchvision's ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``
   in ``--workers`` worker processes, fp32, no channels_last, the whole batch per forward pass. On a
   GPU (``--device cuda``) ours also runs with bf16 autocast and channels_last.
2. The batched ensemble: one SGD step (forward, cross-entropy, backward, update) of m = 30 members
   of the MNIST MLP of Sec. 4.1 (784 inputs, ``--mlp-width``, L = 6 weight layers, 10 outputs) as one
   :class:`cepaper.models.mlp.CollegialMLP`, against the same members as a Python list of 30
   one-member modules summed by a loop (the same weights: the outputs are checked equal).
"""

import argparse
import copy
import json
import math
import os
import platform
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import best_of  # noqa: E402

from cepaper.catalog import Dataset
from cepaper.models.mlp import CollegialMLP  # noqa: E402
from cepaper.models.resnext import resnext  # noqa: E402
from cepaper.training import recipes, sgd  # noqa: E402


class PILImages(torch.utils.data.Dataset):
    """uint8 ``(N, 32, 32, 3)`` arrays as ``(PIL image, label)`` pairs through ``transform``, as
    torchvision's ``CIFAR10`` dataset gives them."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def official_epoch(model, x, y, workers, device, batch_size=128):
    """One epoch of the official-style loop (DataLoader + PIL transforms + workers, fp32)."""
    from torchvision import transforms as T

    mean, std = recipes.CIFAR_STATS
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(
        PILImages(x, y, tf), batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda"
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cifar_timings(config, stages, depth, images, workers, repeats, device):
    """Seconds of one training epoch over ``images`` images: ours per recipe, and the official-style loop."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, images).astype(np.int64)
    train = Dataset("cifar10", "train", x, y, source="random")
    test = Dataset("cifar10", "test", x[:16], y[:16], source="random")
    torch.manual_seed(0)
    base = resnext("resnext29", config, 10, stages=stages, depth=depth)
    ours = {"ours_cifar": dict(recipe_name="cifar"), "ours_cifar_1gpu": dict(recipe_name="cifar_1gpu")}
    if device.type == "cuda":
        ours["ours_cifar_bf16_cl"] = dict(recipe_name="cifar", bf16=True, channels_last=True)
    fns = {
        name: (
            lambda kw=kw: sgd.train_recipe(
                copy.deepcopy(base), train, test, epochs=1, device=device, eval_batch=16, **kw
            )
        )
        for name, kw in ours.items()
    }
    fns["official"] = lambda: official_epoch(copy.deepcopy(base).to(device), x, y, workers, device)
    for f in fns.values():  # warm-up
        f()
    times = dict(zip(fns, best_of(list(fns.values()), repeats)))
    out = {f"t_{k}_s": v for k, v in times.items()}
    out.update({f"{k}_images_per_s": images / v for k, v in times.items()})
    out.update({f"{k}_over_official": out[f"{k}_images_per_s"] / out["official_images_per_s"] for k in ours})
    out.update(
        cifar_images=images,
        cifar_config=config,
        cifar_stages=list(stages),
        cifar_depth=depth,
        workers=workers,
        params=sum(p.numel() for p in base.parameters()),
    )
    return out


def members_of(model):
    """The members of a batched ``CollegialMLP`` as ``m`` one-member modules with the same weights."""
    out = []
    for j in range(model.m):
        one = CollegialMLP(model.n_in, model.widths, outputs=model.outputs)
        with torch.no_grad():
            for w, w_all in zip(one.weights, model.weights):
                w.copy_(w_all[j : j + 1])
        out.append(one)
    return out


def mlp_timings(m, width, layers, batch, steps, repeats):
    """Seconds of ``steps`` SGD steps of the batched ensemble and of the list of its members."""
    g = torch.Generator().manual_seed(0)
    batched = CollegialMLP(784, width, m=m, depth=layers - 1, outputs=10, generator=g)
    members = members_of(batched)
    x = torch.randn(batch, 784, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    listed = lambda: sum(f(x) for f in members) / math.sqrt(m)
    diff = (batched(x) - listed()).abs().max().item()  # the same function
    opt_b = torch.optim.SGD(batched.parameters(), lr=1e-3)
    opt_l = torch.optim.SGD([p for f in members for p in f.parameters()], lr=1e-3)

    def step(forward, opt):
        def run():
            for _ in range(steps):
                loss = F.cross_entropy(forward(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return run

    fns = [step(lambda: batched(x), opt_b), step(listed, opt_l)]
    for f in fns:
        f()
    t_b, t_l = best_of(fns, repeats)
    return dict(
        t_mlp_batched_s=t_b,
        t_mlp_list_s=t_l,
        mlp_speedup_vs_list=t_l / t_b,
        mlp_m=m,
        mlp_width=width,
        mlp_layers=layers,
        mlp_batch=batch,
        mlp_steps=steps,
        mlp_max_abs_diff=diff,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (best of)")
    p.add_argument("--config", default="8x4d", help="ResNeXt-29 CxDd")
    p.add_argument(
        "--stages", type=int, nargs="+", default=[64, 128, 256], help="stage widths (ResNeXt-29: 256 512 1024)"
    )
    p.add_argument("--depth", type=int, default=1, help="blocks per stage (ResNeXt-29: 3)")
    p.add_argument("--images", type=int, default=512, help="images of the timed epoch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the official-style loop")
    p.add_argument("--mlp-m", type=int, default=30)
    p.add_argument("--mlp-width", type=int, default=16)
    p.add_argument("--mlp-batch", type=int, default=128)
    p.add_argument("--mlp-steps", type=int, default=20)
    a = p.parse_args(argv)
    device = torch.device(a.device)

    r = cifar_timings(a.config, tuple(a.stages), a.depth, a.images, a.workers, a.repeats, device)
    r.update(mlp_timings(a.mlp_m, a.mlp_width, 6, a.mlp_batch, a.mlp_steps, a.repeats))
    r.update(
        machine=f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        device=str(device),
    )
    net = f"ResNeXt-29 {a.config}, stages {'-'.join(map(str, a.stages))}, {a.depth} block(s)/stage"
    rows = [(f"CIFAR epoch, {a.images} images, {net}", "", "")]
    for k in [k[2:-2] for k in r if k.startswith("t_") and k.endswith("_s") and "mlp" not in k]:
        note = "" if k == "official" else f"{r[f'{k}_over_official']:.2f}x the official-style loop"
        if k == "ours_cifar_bf16_cl":
            note += "  (target >= 2 on a GPU)"
        rows.append((f"  {k}", f"{r[f'{k}_images_per_s']:9.1f} img/s", note))
    rows += [
        (
            f"ensemble step, m={a.mlp_m}, n={a.mlp_width}, L=6: batched",
            f"{1e3 * r['t_mlp_batched_s'] / a.mlp_steps:9.2f} ms",
            "",
        ),
        (
            f"  a list of {a.mlp_m} MLPs",
            f"{1e3 * r['t_mlp_list_s'] / a.mlp_steps:9.2f} ms",
            f"speedup {r['mlp_speedup_vs_list']:.1f}x  (target >= 5 on a CPU)",
        ),
    ]
    print(f"# training benchmark on {r['machine']} (best of interleaved repeats; ratios in one process)")
    for name, value, note in rows:
        print(f"{name:60s} {value:>16s}   {note}")
    print(f"# batched vs list max abs difference of the outputs: {r['mlp_max_abs_diff']:.1e}")
    if a.json:
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}))


if __name__ == "__main__":
    main()
