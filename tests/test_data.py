"""Tests of cepaper.data: data root, MNIST from the shared file and torchvision's layout, CIFAR-10,
missing datasets, inputs and targets."""

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from cepaper import data

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
    path.write_bytes(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.tobytes())


def test_data_root_argument_beats_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CEPAPER_DATA", "/somewhere/else")
    assert data.data_root(tmp_path) == tmp_path
    assert data.data_root() == Path("/somewhere/else")
    monkeypatch.delenv("CEPAPER_DATA")
    assert data.data_root() is None
    monkeypatch.setenv("CEPAPER_DATA", "")
    assert data.data_root() is None


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
    arrays = {"train": (rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)),
              "t10k": (rng.integers(0, 256, (3, 28, 28)), rng.integers(0, 10, 3))}
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


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="svhn"), "dataset must be one of mnist, cifar10; got 'svhn'"),
    (dict(name="mnist", split="val"), "split must be one of train, test; got 'val'"),
    (dict(name="mnist", n=0), "n must be an integer >= 1, got 0"),
])
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
    ds = data.Dataset("mnist", "train", x, np.array([3]), source="test")
    mean, std = data.STATS["mnist"][0][0], data.STATS["mnist"][1][0]
    expected = (torch.tensor([0, 255, 51, 102], dtype=torch.float64) / 255 - mean) / std
    torch.testing.assert_close(data.inputs(ds, dtype=torch.float64), expected[None])
    rgb = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    out = data.inputs(data.Dataset("cifar10", "train", rgb, np.zeros(2), "test"))
    assert out.shape == (2, 48)
    mean, std = data.STATS["cifar10"]
    torch.testing.assert_close(out[0, :3], torch.tensor([-mean[0] / std[0], (1 - mean[1]) / std[1],
                                                         -mean[2] / std[2]]))


def test_inputs_of_shared_mnist_are_standardized():
    path = shared_file("mnist.npz")
    x = data.inputs(data.load("mnist", root=path.parent))
    assert x.shape == (60000, 784)
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


def test_scalar_targets():
    y = np.array([0, 1, 2, 3, 9])
    assert data.scalar_targets(y).tolist() == [1, -1, 1, -1, -1]
    assert data.scalar_targets(y, "digit", dtype=torch.float64).tolist() == [0, 1, 2, 3, 9]
    with pytest.raises(ValueError, match="target must be one of parity, digit; got 'onehot'"):
        data.scalar_targets(y, "onehot")
