"""Tests of cepaper.data: data root, MNIST from the shared file and torchvision's layout, CIFAR-10
and CIFAR-100, downsampled ImageNet (pickle and npz batches, memmap cache), ImageNet folders,
missing datasets, inputs and targets."""

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from cepaper import catalog, data

SHARED = os.environ.get("CEPAPER_DATA")


def shared_file(name):
    """Path of a shared data file, or skip the test saying why it is not there."""
    if not SHARED:
        pytest.skip("CEPAPER_DATA is unset (point it at ../shared/data)")
    path = Path(SHARED) / name
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    return path


def write_idx(path, array):
    """Write an IDX file (the MNIST format): magic 0x08 0x<ndim>, big-endian dims, uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path.write_bytes(
        struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    )


def test_data_root_argument_beats_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CEPAPER_DATA", "/somewhere/else")
    assert catalog.data_root(tmp_path) == tmp_path
    assert catalog.data_root() == Path("/somewhere/else")
    monkeypatch.delenv("CEPAPER_DATA")
    assert catalog.data_root() is None
    monkeypatch.setenv("CEPAPER_DATA", "")
    assert catalog.data_root() is None


def test_mnist_from_shared_file():
    path = shared_file("mnist.npz")
    train = data.load("mnist", "train", root=path.parent)
    assert train.x.shape == (60000, 28, 28) and train.x.dtype == np.uint8
    assert train.y.dtype == np.int64 and len(train) == 60000
    assert train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the IDX order (data README)
    assert "mnist.npz" in train.source
    test = data.load("mnist", "test", root=path.parent, n=10)
    assert test.x.shape == (10, 28, 28) and test.y.tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x, y = test[3]
    assert x.shape == (28, 28) and y == 0


def test_mnist_root_from_environment(monkeypatch):
    path = shared_file("mnist.npz")
    monkeypatch.setenv("CEPAPER_DATA", str(path.parent))
    assert data.load("mnist", n=5).y.tolist() == [5, 0, 4, 1, 9]


def test_mnist_from_torchvision_layout(tmp_path):
    """A root with torchvision's ``MNIST/raw`` IDX files (what ``download=True`` leaves) is read by
    torchvision; the arrays come back unchanged."""
    rng = np.random.default_rng(0)
    arrays = {
        "train": (rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)),
        "t10k": (rng.integers(0, 256, (3, 28, 28)), rng.integers(0, 10, 3)),
    }
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, (x, y) in arrays.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    ds = data.load("mnist", "train", root=tmp_path)
    assert "torchvision" in ds.source
    np.testing.assert_array_equal(ds.x, arrays["train"][0])
    np.testing.assert_array_equal(ds.y, arrays["train"][1])
    assert data.load("mnist", "test", root=tmp_path, n=2).y.tolist() == arrays["t10k"][1][:2].tolist()


def test_missing_dataset_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mnist not found in .*download=True"):
        data.load("mnist", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar10 not found in .*cifar10_jpeg.npz"):
        data.load("cifar10", root=tmp_path)
    monkeypatch.delenv("CEPAPER_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="CEPAPER_DATA is unset"):
        data.load("mnist")
    with pytest.raises(ValueError, match="download=True needs a data root"):
        data.load("mnist", download=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(name="svhn"),
            "dataset must be one of mnist, cifar10, cifar100, imagenet32, imagenet64, imagenet, got 'svhn'",
        ),
        (dict(name="mnist", split="val"), "split must be one of train, test, got 'val'"),
        (dict(name="mnist", n=0), "n must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        data.load(root=tmp_path, **kwargs)


def test_cifar10_jpeg_file_decodes_to_the_decoded_file(tmp_path):
    jpeg = shared_file("cifar10_jpeg.npz")
    npz = shared_file("cifar10.npz")
    ds = data.load("cifar10", "train", root=jpeg.parent, n=20)  # both files there: the full JPEG set wins
    assert "cifar10_jpeg.npz" in ds.source and ds.x.shape == (20, 32, 32, 3) and ds.x.dtype == np.uint8
    with np.load(npz) as d:
        ref_x, ref_y = d["x_train"][:20], d["y_train"][:20]
    np.testing.assert_array_equal(ds.y, ref_y)
    assert np.abs(ds.x.astype(int) - ref_x).max() <= 1  # README: bit-exact with Pillow 13, +-1 elsewhere
    (tmp_path / "cifar10.npz").symlink_to(npz)  # only the decoded subset: the source says so
    sub = data.load("cifar10", "train", root=tmp_path, n=20)
    assert "first 5000" in sub.source
    np.testing.assert_array_equal(sub.x, ref_x)
    assert data.load("cifar10", "test", root=tmp_path, n=4).x.shape == (4, 32, 32, 3)


def test_inputs_flatten_and_standardize():
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)  # one 2x2 "MNIST" image
    ds = catalog.Dataset("mnist", "train", x, np.array([3]), source="test")
    mean, std = catalog.STATS["mnist"][0][0], catalog.STATS["mnist"][1][0]
    expected = (torch.tensor([0, 255, 51, 102], dtype=torch.float64) / 255 - mean) / std
    torch.testing.assert_close(data.inputs(ds, dtype=torch.float64), expected[None])
    rgb = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    out = data.inputs(catalog.Dataset("cifar10", "train", rgb, np.zeros(2), "test"))
    assert out.shape == (2, 48)
    mean, std = catalog.STATS["cifar10"]
    torch.testing.assert_close(out[0, :3], torch.tensor([-mean[0] / std[0], (1 - mean[1]) / std[1], -mean[2] / std[2]]))


def test_inputs_of_shared_mnist_are_standardized():
    path = shared_file("mnist.npz")
    x = data.inputs(data.load("mnist", root=path.parent))
    assert x.shape == (60000, 784)
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


def test_scalar_targets():
    y = np.array([0, 1, 2, 3, 9])
    assert data.scalar_targets(y).tolist() == [1, -1, 1, -1, -1]
    assert data.scalar_targets(y, "digit", dtype=torch.float64).tolist() == [0, 1, 2, 3, 9]
    with pytest.raises(ValueError, match="target must be one of parity, digit, got 'onehot'"):
        data.scalar_targets(y, "onehot")


def write_cifar(root, folder, files, label_key, meta, rng):
    """Write torchvision's CIFAR layout: ``files`` maps a batch name to its number of images.
    Returns ``{name: (x (N, 32, 32, 3) HWC, labels)}``."""
    (root / folder).mkdir()
    written = {}
    for name, count in files.items():
        x = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 100, count).tolist()
        with open(root / folder / name, "wb") as f:
            pickle.dump({"data": x.transpose(0, 3, 1, 2).reshape(count, -1), label_key: labels}, f)
        written[name] = (x, labels)
    with open(root / folder / meta[0], "wb") as f:
        pickle.dump({meta[1]: [f"class{i}" for i in range(100)]}, f)
    return written


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks the CIFAR files' md5 sums; the fixture files are not the official ones."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_cifar10_from_torchvision_layout(tmp_path, no_md5):
    """torchvision's ``cifar-10-batches-py/`` wins over the JPEG files, pixels and labels exact."""
    rng = np.random.default_rng(1)
    files = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
    written = write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", ("batches.meta", "label_names"), rng)
    (tmp_path / "cifar10.npz").write_bytes(b"not read")
    ds = data.load("cifar10", "train", root=tmp_path)
    assert ds.source == "torchvision CIFAR10 in the data root"
    np.testing.assert_array_equal(ds.x, np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]))
    assert ds.y.dtype == np.int64 and ds.y.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    test = data.load("cifar10", "test", root=tmp_path, n=2)
    np.testing.assert_array_equal(test.x, written["test_batch"][0][:2])


def test_cifar100_from_torchvision_layout(tmp_path, no_md5):
    rng = np.random.default_rng(2)
    written = write_cifar(
        tmp_path, "cifar-100-python", {"train": 5, "test": 4}, "fine_labels", ("meta", "fine_label_names"), rng
    )
    ds = data.load("cifar100", "train", root=tmp_path)
    assert ds.name == "cifar100" and ds.source == "torchvision CIFAR100 in the data root"
    np.testing.assert_array_equal(ds.x, written["train"][0])
    assert ds.x.shape == (5, 32, 32, 3) and ds.y.dtype == np.int64 and ds.y.tolist() == written["train"][1]
    test = data.load("cifar100", "test", root=tmp_path, n=3)
    np.testing.assert_array_equal(test.x, written["test"][0][:3])
    assert test.y.tolist() == written["test"][1][:3]


def test_cifar100_stats_from_data():
    """STATS["cifar100"] against the training pixels, when the data root has CIFAR-100."""
    if not SHARED or not (Path(SHARED) / "cifar-100-python").is_dir():
        pytest.skip("no cifar-100-python/ in CEPAPER_DATA")
    mean, std = data.channel_stats(data.load("cifar100", "train").x)
    np.testing.assert_allclose(mean, catalog.STATS["cifar100"][0], atol=1e-4)
    np.testing.assert_allclose(std, catalog.STATS["cifar100"][1], atol=1e-4)


def test_channel_stats_equal_numpy():
    x = np.random.default_rng(3).integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    mean, std = data.channel_stats(x, chunk=3)
    np.testing.assert_allclose(mean, (x / 255.0).mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, (x / 255.0).std(axis=(0, 1, 2)), rtol=1e-9)


def write_downsampled(root, side, fmt, sizes, rng, train_folders=None):
    """Write official downsampled-ImageNet files: train batches ``1..len(sizes)`` of ``sizes``
    images and a 3-image ``val_data``, as pickles (``fmt="pickle"``) or ``.npz``.

    Rows are CHW (R, G, B planes) and labels 1..1000. Returns ``{"train": (x, y), "test": (x, y)}``
    with x HWC and y 0-based, in file order. ``train_folders[i]`` names the folder of batch i+1.
    """
    suffix, ext = ("", "") if fmt == "pickle" else ("_npz", ".npz")
    out = {}
    batches = [(f"Imagenet{side}_train{suffix}", f"train_data_batch_{i + 1}", k) for i, k in enumerate(sizes)]
    if train_folders:
        batches = [(folder, name, k) for folder, (_, name, k) in zip(train_folders, batches)]
    for split, items in (("train", batches), ("test", [(f"Imagenet{side}_val{suffix}", "val_data", 3)])):
        xs, ys = [], []
        for folder, name, k in items:
            x = rng.integers(0, 256, (k, side, side, 3), dtype=np.uint8)
            y = rng.integers(1, 1001, k)
            y[0] = 1000 if split == "train" else 1  # both ends of the label range
            d = {"data": x.transpose(0, 3, 1, 2).reshape(k, -1), "labels": y.tolist()}
            if split == "train":
                d["mean"] = np.zeros(3 * side * side)
            (root / folder).mkdir(exist_ok=True)
            if fmt == "pickle":
                with open(root / folder / name, "wb") as f:
                    pickle.dump(d, f)
            else:
                np.savez(root / folder / (name + ext), **d)
            xs.append(x)
            ys.append(y - 1)
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return out


@pytest.mark.parametrize("fmt", ["pickle", "npz"])
@pytest.mark.parametrize("side", [32, 64])
def test_downsampled_imagenet_round_trip(tmp_path, fmt, side):
    """CHW rows come back as HWC pixels, labels 1..1000 as 0..999, in file order; ``n`` reads the
    first n without a cache, a full load builds the cache and memory-maps it."""
    name = f"imagenet{side}"
    ref = write_downsampled(tmp_path, side, fmt, [3] * 10, np.random.default_rng(side))
    head = data.load(name, "train", root=tmp_path, n=5)  # batches 1 and 2
    np.testing.assert_array_equal(head.x, ref["train"][0][:5])
    assert head.y.dtype == np.int64 and head.y.tolist() == ref["train"][1][:5].tolist()
    assert head.y[0] == 999 and "official training set" in head.source
    assert not (tmp_path / f"{name}_npy").exists()  # n alone writes nothing
    full = data.load(name, "train", root=tmp_path)
    assert isinstance(full.x, np.memmap) and full.x.shape == (30, side, side, 3)
    np.testing.assert_array_equal(full.x, ref["train"][0])
    np.testing.assert_array_equal(full.y, ref["train"][1])
    assert f"{name}_npy" in full.source
    test = data.load(name, "test", root=tmp_path)
    assert test.split == "test" and "official validation set" in test.source
    np.testing.assert_array_equal(test.x, ref["test"][0])
    assert test.y.tolist() == ref["test"][1].tolist() and test.y[0] == 0
    x, y = test[1]
    assert x.shape == (side, side, 3) and y == ref["test"][1][1]


def test_downsampled_cache_equals_direct_load_and_is_reused(tmp_path):
    ref = write_downsampled(tmp_path, 32, "pickle", [2, 3, 1, 4, 2, 2, 1, 1, 3, 2], np.random.default_rng(4))
    direct = data.load("imagenet32", "train", root=tmp_path, n=21)  # all 21 images, read directly
    assert "cached" not in direct.source
    cached = data.load("imagenet32", "train", root=tmp_path)
    assert "cached" in cached.source and isinstance(cached.x, np.memmap)
    np.testing.assert_array_equal(cached.x, direct.x)
    np.testing.assert_array_equal(cached.y, direct.y)
    np.testing.assert_array_equal(direct.x, ref["train"][0])
    cache_x = tmp_path / "imagenet32_npy" / "train_x.npy"
    assert np.load(cache_x).shape == (21, 32, 32, 3)  # a plain .npy, readable without cepaper
    assert not list((tmp_path / "imagenet32_npy").glob("*.tmp"))  # written atomically
    stamp = cache_x.stat().st_mtime_ns
    assert "cached" in data.load("imagenet32", "train", root=tmp_path, n=4).source  # reused
    assert cache_x.stat().st_mtime_ns == stamp
    batch = tmp_path / "Imagenet32_train" / "train_data_batch_1"  # a newer batch file: rebuilt
    os.utime(batch, ns=(stamp + 10**9, stamp + 10**9))
    data.load("imagenet32", "train", root=tmp_path)
    assert cache_x.stat().st_mtime_ns > stamp


def test_imagenet64_train_in_two_parts(tmp_path):
    """``Imagenet64_train_part1_npz/`` (batches 1..5) and ``..._part2_npz/`` (6..10), as distributed."""
    folders = ["Imagenet64_train_part1_npz"] * 5 + ["Imagenet64_train_part2_npz"] * 5
    ref = write_downsampled(tmp_path, 64, "npz", [1] * 10, np.random.default_rng(5), folders)
    ds = data.load("imagenet64", "train", root=tmp_path, n=10)
    np.testing.assert_array_equal(ds.x, ref["train"][0])
    assert "part1_npz" in ds.source and "part2_npz" in ds.source


def test_downsampled_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imagenet32 not found in .*image-net.org.*Imagenet32_train"):
        data.load("imagenet32", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cannot be downloaded automatically.*Downsampled ImageNet"):
        data.load("imagenet64", root=tmp_path, download=True)
    write_downsampled(tmp_path, 32, "pickle", [2] * 10, np.random.default_rng(6))
    (tmp_path / "Imagenet32_train" / "train_data_batch_7").unlink()
    with pytest.raises(FileNotFoundError, match=r"imagenet32 train: train_data_batch_7 missing from Imagenet32_train"):
        data.load("imagenet32", root=tmp_path, n=1)
    assert len(data.load("imagenet32", "test", root=tmp_path, download=True)) == 3  # present: loaded
    with pytest.raises(FileNotFoundError, match="imagenet64 not found"):  # 32 is not 64
        data.load("imagenet64", "test", root=tmp_path)
    with open(tmp_path / "Imagenet32_val" / "val_data", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3 * 32 * 32), np.uint8), "labels": [0, 5]}, f)
    with pytest.raises(ValueError, match=r"val_data: labels must be in 1..1000, got 0..5"):
        data.load("imagenet32", "test", root=tmp_path)
    with open(tmp_path / "Imagenet32_val" / "val_data", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3 * 64 * 64), np.uint8), "labels": [1, 5]}, f)
    with pytest.raises(ValueError, match=r"data must be uint8 of shape \(N, 3072\)"):
        data.load("imagenet32", "test", root=tmp_path)


def test_downsampled_read_only_root_is_a_clear_error(tmp_path, monkeypatch):
    write_downsampled(tmp_path, 32, "npz", [1] * 10, np.random.default_rng(7))

    def read_only(path, content):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data, "write_atomic", read_only)
    with pytest.raises(PermissionError, match=r"cannot write the cache of imagenet32 train.*pass n="):
        data.load("imagenet32", root=tmp_path)
    assert len(data.load("imagenet32", root=tmp_path, n=3)) == 3


def write_jpegs(folder, names, rng):
    """Small random RGB JPEGs ``folder/<name>.JPEG``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(folder / f"{name}.JPEG")


@pytest.mark.parametrize("layout", ["imagenet", "ILSVRC2012", "ILSVRC/Data/CLS-LOC"])
def test_imagenet_folders(tmp_path, layout):
    """Class folders in sorted wnid order; samples in folder order; no transform; ``n`` keeps n evenly
    spaced samples (the folders are sorted by class: the first n would hold only the first classes)."""
    rng = np.random.default_rng(8)
    base = tmp_path / layout
    for wnid, count in (("n01440764", 2), ("n01443537", 3), ("n01484850", 1)):  # written unsorted
        write_jpegs(base / "train" / wnid, [f"{wnid}_{i}" for i in range(count)], rng)
    write_jpegs(base / "val" / "n01443537", ["ILSVRC2012_val_00000002"], rng)
    write_jpegs(base / "val" / "n01440764", ["ILSVRC2012_val_00000001"], rng)
    train = data.load("imagenet", "train", root=tmp_path)
    assert (train.name, train.split) == ("imagenet", "train") and "official training set" in train.source
    assert train.source.startswith(f"{layout}/train in the data root")  # relative: no machine path
    assert train.classes == ["n01440764", "n01443537", "n01484850"]
    assert train.targets == [0, 0, 1, 1, 1, 2] and len(train) == 6
    assert [Path(p).name for p, _ in train.samples[:3]] == ["n01440764_0.JPEG", "n01440764_1.JPEG", "n01443537_0.JPEG"]
    img, label = train[2]
    assert img.mode == "RGB" and img.size == (5, 6) and label == 1  # a PIL image, untransformed
    head = data.load("imagenet", "train", root=tmp_path, n=3)
    assert len(head) == 3 and head.targets == [0, 1, 2] and len(head.imgs) == 3
    assert [Path(p).name for p, _ in head.samples] == ["n01440764_0.JPEG", "n01443537_0.JPEG", "n01484850_0.JPEG"]
    val = data.load("imagenet", "test", root=tmp_path)
    assert val.split == "test" and "official validation set" in val.source and val.targets == [0, 1]


def test_imagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imagenet not found in .*ILSVRC2012_img_train.tar"):
        data.load("imagenet", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cannot be downloaded automatically.*image-net.org"):
        data.load("imagenet", root=tmp_path, download=True)
    write_jpegs(
        tmp_path / "imagenet" / "val", ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"], np.random.default_rng(9)
    )
    with pytest.raises(FileNotFoundError, match=r"unsorted validation set.*valprep.sh"):
        data.load("imagenet", "test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="imagenet not found"):  # no train folder
        data.load("imagenet", "train", root=tmp_path)


def test_imagenet32_stats_from_data():
    """The downsampled sets use torchvision's ImageNet constants; their channel means agree with the
    downsampled training pixels (first 100k images), when the data root has ImageNet32."""
    if not SHARED or data._downsampled_files(Path(SHARED), "imagenet32", "train") is None:
        pytest.skip("no Imagenet32_train in CEPAPER_DATA")
    mean, _ = data.channel_stats(data.load("imagenet32", "train", root=SHARED, n=100_000).x)
    np.testing.assert_allclose(mean, catalog.STATS["imagenet32"][0], atol=0.01)
