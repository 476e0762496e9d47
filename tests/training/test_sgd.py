"""Tests of cepaper.training.sgd: recipes and schedules, batched augmentation, top-k error, training,
exact resume after an interruption, the folder-dataset path, and bad input."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cepaper import runs
from cepaper.catalog import Dataset
from cepaper.models.resnext import resnext
from cepaper.training import loaders, recipes, sgd


def images(n=40, size=8, classes=3, seed=0):
    """A tiny in-memory dataset: uint8 ``(n, size, size, 3)`` and labels ``0..classes-1``."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return Dataset("toy", "train", x, rng.integers(0, classes, n).astype(np.int64), source="random")


def tiny_model(classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, classes),
    )


TINY = recipes.Recipe(
    "tiny", epochs=3, batch_size=16, lr=0.1, weight_decay=5e-4, milestones=(2,), gamma=0.1, pad=2, resolution=8
)


# ----------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    "name, epochs, batch, lr, wd, milestones, gamma",
    [
        ("cifar", 300, 128, 0.1, 5e-4, (150, 225), 0.1),
        ("cifar_1gpu", 300, 128, 0.1, 5e-4, (150, 225), 0.1),
        ("imagenet", 100, 256, 0.1, 1e-4, (30, 60, 90), 0.1),
        ("imagenet32", 80, 1024, 0.08, 5e-4, (20, 40, 60), 0.2),
        ("imagenet64", 60, 512, 0.04, 5e-4, (20, 30, 40), 0.2),
    ],
)
def test_recipes_are_the_papers(name, epochs, batch, lr, wd, milestones, gamma):
    r = recipes.recipe(name)
    assert (r.epochs, r.batch_size, r.lr, r.weight_decay, r.milestones, r.gamma, r.momentum) == (
        epochs,
        batch,
        lr,
        wd,
        milestones,
        gamma,
        0.9,
    )


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_schedule_per_epoch_follows_the_recipe(name):
    """The lr torch's optimizer uses in every epoch equals the recipe's step function."""
    r = recipes.recipe(name)
    opt, sched = sgd._optimizer(nn.Linear(2, 2), r)
    for epoch in range(r.epochs):
        drops = sum(epoch >= m for m in r.milestones)
        assert opt.param_groups[0]["lr"] == pytest.approx(r.lr * r.gamma**drops, rel=1e-12)
        assert r.lr_at(epoch) == pytest.approx(r.lr * r.gamma**drops, rel=1e-12)
        opt.step()
        sched.step()
    assert r.lr_at(r.milestones[0] - 1) == r.lr and r.lr_at(r.milestones[0]) == pytest.approx(r.lr * r.gamma)


def test_imagenet_transforms_are_the_recipes():
    from torchvision import transforms as T

    stats = ((0.5,) * 3, (0.25,) * 3)
    train = loaders.folder_transforms(recipes.recipe("imagenet"), stats, True).transforms
    assert [type(t) for t in train] == [
        T.RandomResizedCrop,
        T.ColorJitter,
        T.RandomHorizontalFlip,
        T.ToTensor,
        T.Normalize,
    ]
    assert train[0].size == (224, 224) and train[1].brightness == (0.6, 1.4) and train[1].hue is None
    test = loaders.folder_transforms(recipes.recipe("imagenet"), stats, False).transforms
    assert [type(t) for t in test][:2] == [T.Resize, T.CenterCrop] and test[0].size == 256
    assert test[1].size == (224, 224)


def test_scaled_recipe():
    r = recipes.recipe("cifar").scaled(30)
    assert r.epochs == 30 and r.milestones == (15, 22) and r.lr == 0.1
    assert recipes.recipe("cifar").scaled(300) is recipes.recipe("cifar")


# ------------------------------------------------------------------------------ augmentation


def test_augment_is_a_crop_of_the_padded_image_and_a_mirror():
    x = torch.as_tensor(images(n=6, size=5).x)
    pad = 2
    g = torch.Generator().manual_seed(3)
    offsets, flips = recipes.augment_params(6, 5, pad, g)
    flips[0], flips[1] = True, False
    out = recipes.augment(x, offsets, flips, pad)
    assert out.shape == x.shape and out.dtype == x.dtype
    for b in range(6):
        padded = np.zeros((5 + 2 * pad, 5 + 2 * pad, 3), np.uint8)
        padded[pad : pad + 5, pad : pad + 5] = x[b].numpy()
        dy, dx = offsets[b].tolist()
        want = padded[dy : dy + 5, dx : dx + 5]
        want = want[:, ::-1] if flips[b] else want
        np.testing.assert_array_equal(out[b].numpy(), want)


def test_augment_without_padding_permutes_pixels_exactly():
    """Centered crop (no padding) with a flip: the same multiset of pixels, each row reversed."""
    x = torch.as_tensor(images(n=4, size=6).x)
    out = recipes.augment(x, torch.zeros(4, 2, dtype=torch.int64), torch.tensor([True, False, True, False]), 0)
    for b in range(4):
        assert sorted(out[b].reshape(-1, 3).tolist()) == sorted(x[b].reshape(-1, 3).tolist())
    torch.testing.assert_close(out[0], x[0].flip(1), rtol=0, atol=0)
    torch.testing.assert_close(out[1], x[1], rtol=0, atol=0)


def test_normalize():
    x = torch.full((2, 3, 3, 3), 255, dtype=torch.uint8)
    out = recipes.normalize(x, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert out.shape == (2, 3, 3, 3)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))


def test_train_batches_cover_the_data_once_per_epoch():
    ds = images(n=37)
    data = loaders.ArrayData(ds, "cpu", ((0.0,) * 3, (1.0,) * 3))
    r = recipes.Recipe("t", 1, 8, 0.1, 0.0, (), 1.0, augment="flip", pad=0)
    epoch = list(data.train_batches(r, seed=0, epoch=0))
    assert [len(y) for _, y in epoch] == [8, 8, 8, 8, 5]
    assert sorted(torch.cat([y for _, y in epoch]).tolist()) == sorted(ds.y.tolist())
    assert epoch[0][0].shape == (8, 3, 8, 8) and epoch[0][0].dtype == torch.float32


# ------------------------------------------------------------------------------- top-k error


def test_topk_errors_against_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 12, generator=g)
    y = torch.randint(0, 12, (200,), generator=g)
    ranks = [sorted(range(12), key=lambda j: -logits[i, j].item()).index(y[i].item()) for i in range(200)]
    want = [sum(r >= k for r in ranks) for k in (1, 5)]
    assert loaders.topk_errors(logits, y) == want
    assert loaders.topk_errors(logits[:, :3], y.clamp(max=2), ks=(1, 5))[1] == 0  # k > classes: never wrong


def test_final_error_is_the_mean_over_the_last_epochs():
    h = {"test_top1": [50.0, 40.0, 30.0, 20.0]}
    assert sgd.final_error(h, last=2) == 25.0 and sgd.final_error(h, last=10) == 35.0
    assert sgd.final_error(h) == 20.0  # the final epoch's


# ---------------------------------------------------------------------------------- training


def test_fit_learns_and_records_every_epoch():
    train, test = images(n=48, classes=2), images(n=20, classes=2, seed=1)
    train.x[train.y == 1] //= 4  # a learnable signal: class 1 is darker
    test.x[test.y == 1] //= 4
    model = tiny_model(classes=2)
    r = recipes.Recipe("t", 6, 16, 0.2, 0.0, (4,), 0.1, pad=1)
    h = sgd.train_recipe(model, train, test, r)
    assert h["epoch"] == [1, 2, 3, 4, 5, 6]
    assert h["lr"] == pytest.approx([0.2] * 4 + [0.02] * 2)
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert h["test_top1"][-1] < 50.0
    assert h["images_per_s"] == pytest.approx(48 * 6 / sum(h["seconds"]), rel=1e-12)


def test_micro_batches_accumulate_the_full_batch_gradient():
    """Without BatchNorm, micro-batches of 4 take exactly the step of the whole batch of 16."""
    train, test = images(n=32), images(n=8, seed=1)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
        ).double()

    whole, micro = model(), model()
    for m in (whole, micro):
        m.forward = (lambda f: lambda x: f(x.double()))(m.forward)
    h_whole = sgd.train_recipe(whole, train, test, TINY, epochs=1)
    h_micro = sgd.train_recipe(micro, train, test, dataclasses.replace(TINY, micro_batch=4), epochs=1)
    for a, b in zip(whole.parameters(), micro.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert h_whole["train_loss"] == pytest.approx(h_micro["train_loss"], rel=1e-6)  # float32 sums
    assert h_whole["train_top1"] == h_micro["train_top1"]


def test_paper_recipes_use_the_per_gpu_batch():
    """The paper's batch over its 8 GPUs (Sec. 4.2.1-4.2.2, App. A): 128 / 8, 256 / 8, 1024 / 8, 512 / 8."""
    per_gpu = {
        k: recipes.RECIPES[k].micro_batch for k in ("cifar", "cifar_1gpu", "imagenet", "imagenet32", "imagenet64")
    }
    assert per_gpu == {
        "cifar": 128 // 8,
        "cifar_1gpu": None,
        "imagenet": 256 // 8,
        "imagenet32": 1024 // 8,
        "imagenet64": 512 // 8,
    }
    for rec in recipes.RECIPES.values():
        assert rec.batch_size % (rec.micro_batch or rec.batch_size) == 0


def batchnorm_batches(recipe, n=256):
    """The batch sizes every BatchNorm of a ResNeXt sees while ``fit`` trains it one epoch on ``n`` images."""
    seen = []
    model = resnext("resnext29", "2x2d", 10, stages=(8,), depth=1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]) if mod.training else None)
    sgd.train_recipe(model, images(n=n, classes=10), images(n=8, classes=10, seed=1), recipe, epochs=1)
    return seen


def test_cifar_batchnorm_sees_16_images_and_the_single_gpu_recipe_128():
    """8-GPU CIFAR recipe: every BatchNorm call in training normalizes 16 images; single GPU: 128."""
    n_bn = 1 + 3 * 1 + 1  # stem, the bottleneck's three BNs, its projection's
    eight = batchnorm_batches("cifar")
    assert set(eight) == {16} and len(eight) == n_bn * 256 // 16
    one = batchnorm_batches("cifar_1gpu")
    assert set(one) == {128} and len(one) == n_bn * 256 // 128


def test_crops_pad_with_the_fill_value():
    x = torch.full((2, 4, 4, 3), 200, dtype=torch.uint8)
    out = recipes.augment(x, torch.tensor([[0, 0], [4, 4]]), torch.tensor([False, False]), 2, fill=[10, 20, 30])
    assert out[0, 0, 0].tolist() == [10, 20, 30] and out[0, 3, 3].tolist() == [200, 200, 200]
    assert out[1, 3, 3].tolist() == [10, 20, 30] and out[1, 0, 0].tolist() == [200, 200, 200]


def test_training_crops_pad_black_before_normalization():
    """As the authors' code (RandomCrop(padding=4) ahead of Normalize): a padded pixel is 0 before
    normalization, so -mean/std after; the image's own pixels (all 200) give (200/255 - mean)/std."""
    ds = images(n=37, size=6)
    ds.x[:] = 200
    mean, std = (0.5, 0.25, 0.75), (0.25, 0.5, 1.0)
    data = loaders.ArrayData(ds, "cpu", (mean, std))
    r = recipes.Recipe("t", 1, 37, 0.1, 0.0, (), 1.0, pad=2, resolution=6)
    ((x, _),) = list(data.train_batches(r, seed=0, epoch=0))
    for c in range(3):
        inside, padded = (200 / 255 - mean[c]) / std[c], -mean[c] / std[c]
        values = torch.unique(x[:, c]).tolist()
        assert len(values) == 2 and values == pytest.approx(sorted([inside, padded]), abs=1e-6)


def test_mean_image_normalization():
    """``normalize="mean_image"``: x/255 minus the per-pixel mean of the training images (numpy), no std."""
    train, test = images(n=30, size=5), images(n=7, size=5, seed=1)
    r = recipes.Recipe("t", 1, 8, 0.1, 0.0, (), 1.0, augment="flip", pad=0, normalize="mean_image", resolution=5)
    mean, std = recipes.input_stats(r, train)
    want_mean = train.x.astype(np.float64).mean(0) / 255
    np.testing.assert_allclose(mean, want_mean, rtol=0, atol=1e-6)
    assert mean.shape == (5, 5, 3) and std == (1.0, 1.0, 1.0)
    data = loaders.ArrayData(test, "cpu", (mean, std))
    ((x, _),) = list(data.test_batches(100))
    np.testing.assert_allclose(x.numpy(), (test.x / 255 - want_mean).transpose(0, 3, 1, 2), rtol=0, atol=1e-6)


def test_input_stats_of_the_recipes():
    """CIFAR-10 and CIFAR-100 alike: the authors' constants; downsampled ImageNet: the mean image."""
    cifar100 = Dataset("cifar100", "train", np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int64), "zeros")
    assert (
        recipes.input_stats(recipes.recipe("cifar"), cifar100)
        == recipes.CIFAR_STATS
        == recipes.input_stats(recipes.recipe("cifar_1gpu"), cifar100)
    )
    assert recipes.CIFAR_STATS[0][0] == 125.3 / 255 and recipes.CIFAR_STATS[1][2] == 66.7 / 255
    assert recipes.recipe("imagenet32").normalize == recipes.recipe("imagenet64").normalize == "mean_image"
    assert recipes.recipe("imagenet").normalize == "channel" and recipes.recipe("imagenet").stats is None


def test_recipe_must_fit_the_dataset():
    with pytest.raises(ValueError, match="recipe 'imagenet' .* does not fit 'toy', in-memory images"):
        sgd.train_recipe(tiny_model(), images(), images(), "imagenet")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
        (dict(eval_batch=0), "eval_batch must be an integer >= 1, got 0"),
    ],
)
def test_bad_fit_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sgd.train_recipe(tiny_model(), images(), images(), TINY, **kwargs)


# Resume: every piece of state (model with BN statistics, SGD momentum, the scheduler past a milestone,
# the global RNG that Dropout draws from, the data order), against an uninterrupted run.

RESUME = recipes.Recipe(
    "resume", epochs=4, batch_size=16, lr=0.1, weight_decay=5e-4, milestones=(1,), gamma=0.1, pad=2, resolution=8
)


def dropout_model(seed=0):
    """BatchNorm (running statistics) and Dropout (masks from torch's global RNG) in one small net."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def same(a, b):
    """Nested checkpoint states equal bit for bit (tensors by ``torch.equal``)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


def resume_mismatches(tmp_path, monkeypatch):
    """Run RESUME uninterrupted and interrupted after epoch 2 then resumed (both checkpointing); return
    the pieces of the final state that differ (an empty list: the resumed run is the uninterrupted one)."""
    train, test = images(n=40), images(n=16, seed=1)
    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    want = sgd.train_recipe(dropout_model(), train, test, RESUME, seed=5, checkpoint=straight)
    saves, real = [], runs.save_checkpoint

    def killed_at_the_third_save(path, state):
        saves.append(state["epoch"])
        if len(saves) == 3:
            raise KeyboardInterrupt
        real(path, state)

    monkeypatch.setattr(runs, "save_checkpoint", killed_at_the_third_save)
    with pytest.raises(KeyboardInterrupt):
        sgd.train_recipe(dropout_model(), train, test, RESUME, seed=5, checkpoint=resumed)
    monkeypatch.setattr(runs, "save_checkpoint", real)
    assert torch.load(resumed, weights_only=False)["epoch"] == 2  # past the milestone at epoch 1
    model = dropout_model(seed=99)  # other weights, other global RNG
    got = sgd.train_recipe(model, train, test, RESUME, seed=5, checkpoint=resumed)
    a, b = (torch.load(p, weights_only=False) for p in (straight, resumed))
    bad = [k for k in ("model", "optimizer", "scheduler", "rng") if not same(a[k], b[k])]
    bad += [k for k in want if k not in ("seconds", "images_per_s") and want[k] != got[k]]
    bad += ["weights"] * (not same(model.state_dict(), a["model"]))
    return bad


def test_resume_after_interruption_is_bit_for_bit(tmp_path, monkeypatch, one_thread):
    assert resume_mismatches(tmp_path, monkeypatch) == []
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "module, where, old, new, shows",
    [
        (runs, "resume", 'scheduler.load_state_dict(state["scheduler"])', "pass", "lr"),
        (runs, "resume", 'optimizer.load_state_dict(state["optimizer"])', "pass", "optimizer"),
        (runs, "resume", 'set_rng_state(state["rng"])', "pass", "rng"),
        (
            sgd,
            "train_recipe",
            "train_epoch(model, tr, opt, rec, seed, epoch,",
            "train_epoch(model, tr, opt, rec, seed, epoch - start,",
            "train_loss",
        ),
    ],
)
def test_resume_check_catches_a_lost_piece_of_state(
    tmp_path, monkeypatch, plant, one_thread, module, where, old, new, shows
):
    plant(module, where, old, new)
    assert shows in resume_mismatches(tmp_path, monkeypatch)


def refused(tmp_path, **change):
    """Which changes a checkpoint of epoch 2 refuses to resume: ``{name: True if refused}``."""
    train, test = images(n=40), images(n=16, seed=1)
    path = tmp_path / "run.pt"
    sgd.train_recipe(dropout_model(), train, test, dataclasses.replace(RESUME, epochs=2), seed=5, checkpoint=path)
    other_train, other_test = images(n=40), images(n=16, seed=1)
    other_train.x[7, 3, 3, 0] ^= 1  # one pixel
    other_test.y[0] = (other_test.y[0] + 1) % 3  # one label
    runs = {
        "train": dict(train=other_train),
        "test": dict(test=other_test),
        "seed": dict(seed=6),
        "recipe": dict(rec=dataclasses.replace(RESUME, epochs=2, lr=0.05)),
        "milestones": dict(rec=dataclasses.replace(RESUME, epochs=2, milestones=(2,))),
    }
    out = {}
    for name, kw in runs.items():
        kw = {"train": train, "test": test, "rec": dataclasses.replace(RESUME, epochs=2), "seed": 5, **kw}
        try:
            sgd.train_recipe(dropout_model(), kw["train"], kw["test"], kw["rec"], seed=kw["seed"], checkpoint=path)
            out[name] = False
        except ValueError as e:
            out[name] = "other settings" in str(e)
    return out


def test_resume_refuses_other_data_recipe_or_seed(tmp_path, one_thread):
    assert refused(tmp_path) == {"train": True, "test": True, "seed": True, "recipe": True, "milestones": True}


def test_refusal_check_catches_dropped_data_digests(tmp_path, plant, one_thread):
    plant(sgd, "_settings", "train=data_digest(train),\n        test=data_digest(test),", "")
    assert refused(tmp_path)["train"] is False


def test_the_loop_is_train_epoch_then_test_epoch(one_thread):
    """``train_recipe`` reads as its outer loop: :func:`sgd.train_epoch`, the scheduler's step and
    :func:`sgd.test_epoch` called by hand give its history, number for number."""
    train, test = images(n=40), images(n=16, seed=1)
    want = sgd.train_recipe(tiny_model(), train, test, TINY, seed=2, eval_batch=5)
    model = tiny_model()
    stats = recipes.input_stats(TINY, train)
    tr, te = (loaders.device_data(d, "cpu", stats, TINY) for d in (train, test))
    opt, sched = sgd._optimizer(model, TINY)
    keys = ("lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5")
    for epoch in range(TINY.epochs):
        lr = opt.param_groups[0]["lr"]
        train_loss, train_top1 = sgd.train_epoch(model, tr, opt, TINY, 2, epoch)
        sched.step()
        ev = sgd.test_epoch(model, te, 5)
        got = (lr, train_loss, train_top1, ev["loss"], ev["top1"], ev["top5"])
        assert got == tuple(want[k][epoch] for k in keys), epoch


def test_seed_changes_the_data_order():
    train, test = images(n=40), images(n=16, seed=1)
    a = sgd.train_recipe(tiny_model(), train, test, TINY, epochs=1, seed=0)
    b = sgd.train_recipe(tiny_model(), train, test, TINY, epochs=1, seed=0)
    c = sgd.train_recipe(tiny_model(), train, test, TINY, epochs=1, seed=1)
    assert a["train_loss"] == b["train_loss"] and a["train_loss"] != c["train_loss"]


def test_resnext_trains_one_step_and_its_test_errors_are_the_models():
    """The reported test loss, top-1 and top-5 errors are those of the trained model, recomputed here:
    pixels normalized by the CIFAR recipe's per-channel constants (the authors' code: mean 125.3, 123.0,
    113.9 and std 63.0, 62.1, 66.7 in pixel units, written out here), eval mode, a brute-force top-k."""
    train, test = images(n=16, size=8, classes=10), images(n=30, size=8, classes=10, seed=1)
    model = resnext("resnext29", "2x2d", 10, stages=(16,), depth=1)
    h = sgd.train_recipe(model, train, test, recipes.recipe("cifar"), epochs=1, eval_batch=7)
    mean, std = np.array([125.3, 123.0, 113.9]), np.array([63.0, 62.1, 66.7])
    x = torch.as_tensor((test.x - mean) / std).permute(0, 3, 1, 2)
    with torch.no_grad():
        logits = model.eval()(x.float())
    y = torch.as_tensor(test.y)
    rank = (logits > logits.gather(1, y[:, None])).sum(1)  # classes scored above the label
    assert h["test_top1"] == [pytest.approx(100 * (rank >= 1).double().mean().item(), abs=1e-9)]
    assert h["test_top5"] == [pytest.approx(100 * (rank >= 5).double().mean().item(), abs=1e-9)]
    assert h["test_loss"] == [pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-4)]
    assert 0 < h["test_top5"][0] < h["test_top1"][0]  # both counts are exercised


def test_folder_dataset_path(tmp_path):
    """A tiny ImageFolder of PNGs trains through the DataLoader and torchvision transforms."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("n01", "n02"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.png"
                )
    train, test = ImageFolder(tmp_path / "train"), ImageFolder(tmp_path / "val")
    for ds, split in ((train, "train"), (test, "test")):
        ds.name, ds.split, ds.source = "toyfolder", split, str(tmp_path)
    assert recipes.is_folder(train)
    r = recipes.Recipe("f", 2, 4, 0.05, 0.0, (1,), 0.1, augment="random_resized_crop", resolution=16, test_resize=18)
    stats = ((0.5,) * 3, (0.25,) * 3)
    xb, yb = next(iter(loaders.FolderData(train, "cpu", stats, r).train_batches(r, 0, 0)))
    assert xb.shape == (4, 3, 16, 16) and yb.dtype == torch.int64
    xt, _ = next(iter(loaders.FolderData(test, "cpu", stats, r).test_batches(8)))
    assert xt.shape == (8, 3, 16, 16)
    import cepaper.data as data

    data.STATS["toyfolder"] = stats
    try:
        h = sgd.train_recipe(tiny_model(classes=2), train, test, r)
    finally:
        del data.STATS["toyfolder"]
    assert h["epoch"] == [1, 2] and h["lr"] == pytest.approx([0.05, 0.005])


def test_throughput_counts_the_timed_steps(monkeypatch):
    """With a clock that advances 0.5 s per reading, ``steps`` timed steps of ``batch`` images after the
    warm-up take 0.5 s: the rate is ``batch * steps / 0.5`` (and the warm-up is not timed)."""
    ticks = iter(range(100))
    monkeypatch.setattr(sgd, "time", SimpleNamespace(perf_counter=lambda: 0.5 * next(ticks)))
    assert sgd.throughput(tiny_model(), 4, 8, 3, steps=3, warmup=2) == 4 * 3 / 0.5


# --------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
        (dict(batch_size=1.5), "batch_size must be an integer >= 1, got 1.5"),
        (dict(lr=-1.0), "lr must be a finite number >= 0, got -1.0"),
        (dict(weight_decay="0"), "weight_decay must be a finite number >= 0, got '0'"),
        (dict(gamma=2.0), r"gamma must be in \(0, 1\], got 2.0"),
        (dict(augment="mixup"), "augment must be one of crop_flip, flip, random_resized_crop, got 'mixup'"),
        (dict(milestones=(0,)), "milestones must be an integer >= 1, got 0"),
        (dict(micro_batch=0), "micro_batch must be an integer >= 1, got 0"),
        (dict(micro_batch=8), r"micro_batch must be <= batch_size \(4\), got 8"),
        (dict(normalize="zca"), "normalize must be one of channel, mean_image, got 'zca'"),
        (dict(normalize="mean_image", stats=((0.5,), (0.2,))), "stats must be None or per-channel"),
        (dict(stats=((0.5, 0.5), (0.2,))), "stats must be None or per-channel"),
    ],
)
def test_bad_recipe(kwargs, message):
    base = dict(name="x", epochs=2, batch_size=4, lr=0.1, weight_decay=0.0, milestones=(1,), gamma=0.1)
    with pytest.raises(ValueError, match=message):
        recipes.Recipe(**{**base, **kwargs})


def test_bad_recipe_name_and_epochs():
    with pytest.raises(
        ValueError, match="recipe must be one of cifar, cifar_1gpu, imagenet, imagenet32, imagenet64, got 'svhn'"
    ):
        recipes.recipe("svhn")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        sgd.train_recipe(tiny_model(), images(), images(), TINY, epochs=0)
    with pytest.raises(ValueError, match="last must be an integer >= 1"):
        sgd.final_error({"test_top1": [1.0]}, last=0)


def test_data_digest_sees_pixels_labels_and_samples_large_sets():
    a, b = images(n=30), images(n=30)
    assert recipes.data_digest(a) == recipes.data_digest(b)
    b.x[15, 0, 0, 0] ^= 1
    assert recipes.data_digest(a) != recipes.data_digest(b)
    # image 15 is not sampled (0, 9, 19, 29 are)
    assert recipes.data_digest(a, max_images=4) == recipes.data_digest(b, max_images=4)
    b.x[15, 0, 0, 0] ^= 1
    b.y[0] = (b.y[0] + 1) % 3
    assert recipes.data_digest(a) != recipes.data_digest(b)
    assert recipes.data_digest(a, max_images=4) != recipes.data_digest(b, max_images=4)


def test_channels_last_and_bf16_options_train():
    train, test = images(n=32), images(n=16, seed=1)
    plain = sgd.train_recipe(tiny_model(), train, test, TINY, epochs=1)
    cl_only = sgd.train_recipe(tiny_model(), train, test, TINY, epochs=1, channels_last=True)
    bf16 = sgd.train_recipe(tiny_model(), train, test, TINY, epochs=1, channels_last=True, bf16=True)
    assert cl_only["train_loss"][0] == pytest.approx(plain["train_loss"][0], rel=1e-4)  # same math, other layout
    assert np.isfinite(bf16["train_loss"][0]) and bf16["train_loss"][0] == pytest.approx(
        plain["train_loss"][0], rel=0.1
    )
