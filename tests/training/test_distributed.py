"""Tests of cepaper.training.distributed and the recipe loop across ranks: 2 gloo processes under
torchrun reproduce a 1-process run with the same micro-batches (loss curve, final weights), the
evaluation is reduced over the ranks, rank 0's checkpoint resumes every rank, and bad world sizes,
backends and checkpoints are refused with a clear error."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cepaper import cli
from cepaper.catalog import Dataset
from cepaper.training import distributed, loaders, recipes, sgd

ROOT = Path(__file__).resolve().parents[2]
#: batch 16 in micro-batches of 4: 4 per step, 2 per rank on 2 ranks; 44 images: the last batch (12)
#: is 2 micro-batches on rank 0 and 1 on rank 1.
RECIPE = recipes.Recipe(
    "ddp",
    epochs=3,
    batch_size=16,
    lr=0.1,
    weight_decay=5e-4,
    milestones=(2,),
    gamma=0.1,
    micro_batch=4,
    pad=2,
    resolution=8,
)


def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (44 + 13, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 3, len(x)).astype(np.int64)
    return (
        Dataset("toy", "train", x[:44], y[:44], source="random"),
        Dataset("toy", "test", x[44:], y[44:], source="random"),
    )


def model(seed=0):
    """BatchNorm (per micro-batch, per rank) in a small net."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The worker's two ranks' results (tests/training/_ddp_worker.py under torchrun, gloo, 2 CPU processes)."""
    out = tmp_path_factory.mktemp("ddp")
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    p = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            str(ROOT / "tests" / "training" / "_ddp_worker.py"),
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_gloo_ranks_reproduce_one_process(two_ranks, one_thread):
    out, ranks = two_ranks
    train, test = data()
    one = model()
    want = sgd.train_recipe(one, train, test, RECIPE, seed=3)
    for r in ranks:
        got = r["history"]
        assert r["resumed_from"] == 1 and got["epoch"] == [1, 2, 3] and got["world_size"] == 2
        assert got["lr"] == want["lr"]
        np.testing.assert_allclose(got["train_loss"], want["train_loss"], rtol=1e-5)
        assert got["train_top1"] == want["train_top1"]
        # BatchNorm's running statistics too (the ranks' updates composed in rank order), so the evaluation
        np.testing.assert_allclose(got["test_loss"], want["test_loss"], rtol=1e-5)
        assert got["test_top1"] == want["test_top1"]
        for k, v in one.state_dict().items():
            torch.testing.assert_close(r["weights"][k], v, rtol=1e-5, atol=1e-6)
    for k in ranks[0]["weights"]:  # every rank holds the same model
        torch.testing.assert_close(ranks[0]["weights"][k], ranks[1]["weights"][k], rtol=0, atol=0)


def test_evaluation_is_reduced_over_the_ranks(two_ranks, one_thread):
    """The 2-rank run's test error is that of its final model on the whole test set, in one process."""
    out, ranks = two_ranks
    train, test = data()
    net = model()
    net.load_state_dict(ranks[0]["weights"])
    stats = recipes.input_stats(RECIPE, train)
    ev = sgd.test_epoch(net, loaders.device_data(test, "cpu", stats, RECIPE), 5)
    h = ranks[0]["history"]
    assert h["test_top1"][-1] == pytest.approx(ev["top1"]) and h["test_loss"][-1] == pytest.approx(ev["loss"], rel=1e-5)


def test_a_checkpoint_of_two_ranks_does_not_resume_in_one_process(two_ranks, one_thread):
    out, _ = two_ranks
    train, test = data()
    before = (out / "run.pt").read_bytes()
    with pytest.raises(ValueError, match=r"written by 2 process\(es\) and cannot resume exactly under 1"):
        sgd.train_recipe(model(), train, test, RECIPE, seed=3, checkpoint=out / "run.pt")
    assert (out / "run.pt").read_bytes() == before  # nothing written is lost


def test_a_checkpoint_of_another_recipe_is_refused_by_name(tmp_path, one_thread):
    train, test = data()
    path = tmp_path / "run.pt"
    sgd.train_recipe(model(), train, test, dataclasses.replace(RECIPE, epochs=1), checkpoint=path)
    other = dataclasses.replace(RECIPE, name="other", epochs=1)
    with pytest.raises(ValueError, match="written by recipe 'ddp', not 'other'"):
        sgd.train_recipe(model(), train, test, other, checkpoint=path)
    assert path.exists()


def test_rank_shares_are_the_single_process_micro_batches():
    """Rank r's share of each batch (index shards) is micro-batches r*A..r*A+A-1 of the whole batch."""
    train, _ = data()
    stats = recipes.input_stats(RECIPE, train)
    whole = list(loaders.ArrayData(train, "cpu", stats).train_batches(RECIPE, 3, 1))
    shares = [
        list(
            loaders.device_data(train, "cpu", stats, RECIPE, world=distributed.World(r, 2)).train_batches(RECIPE, 3, 1)
        )
        for r in range(2)
    ]
    assert [len(y) for _, y in shares[0]] == [8, 8, 8] and [len(y) for _, y in shares[1]] == [8, 8, 4]
    for i, (x, y) in enumerate(whole):
        torch.testing.assert_close(torch.cat([s[i][0] for s in shares]), x, rtol=0, atol=0)
        assert torch.equal(torch.cat([s[i][1] for s in shares]), y)


def test_rank_span_and_shard():
    assert [distributed.rank_span(12, 4, 2, r) for r in range(2)] == [(0, 8), (8, 12)]
    assert [distributed.rank_span(6, 4, 2, r) for r in range(2)] == [(0, 6), (6, 6)]  # rank 1: no image
    spans = [distributed.shard(13, distributed.World(r, 3)) for r in range(3)]
    assert spans == [(0, 4), (4, 8), (8, 13)]


@pytest.mark.parametrize(
    "name, size, message",
    [
        (
            "cifar",
            3,
            r"world size 3 does not divide recipe 'cifar''s batch of 128 into its per-GPU batches "
            r"\(8 per-GPU batches of 16\): use 1, 2, 4, 8",
        ),
        ("cifar_1gpu", 2, r"BatchNorm over the whole batch of 128 on one GPU\): use 1 process"),
        ("imagenet", 16, r"use 1, 2, 4, 8 process"),
    ],
)
def test_a_world_size_that_does_not_divide_the_batch_is_refused(name, size, message):
    with pytest.raises(ValueError, match=message):
        distributed.check_world(recipes.RECIPES[name], size)


def test_world_sizes_keep_the_global_batch():
    assert [distributed.check_world(recipes.RECIPES["cifar"], n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert distributed.check_world(recipes.RECIPES["imagenet"], 8) == 1


def test_unavailable_backends_are_refused():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="backend nccl needs CUDA GPUs.*use --backend gloo"):
            distributed.check_backend("nccl", "cpu")
    with pytest.raises(ValueError, match="backend must be one of nccl, gloo, got 'mpi'"):
        distributed.check_backend("mpi", "cpu")
    assert distributed.check_backend(None, "cpu") == "gloo"


def test_no_launcher_is_one_process(monkeypatch):
    for k in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(k, raising=False)
    w, device = distributed.setup("cpu")
    assert (w.rank, w.size, w.writer, str(device)) == (0, 1, True, "cpu")


@pytest.fixture
def cifar_root(tmp_path):
    """A data root with a tiny random ``cifar10.npz`` (96 training, 16 test images)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    root.mkdir()
    np.savez(
        root / "cifar10.npz",
        x_train=rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 96),
        x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 16),
    )
    return root


CLI = [
    "train",
    "--arch",
    "resnext29",
    "--config",
    "1x4d",
    "--dataset",
    "cifar10",
    "--epochs",
    "1",
    "--n-test",
    "16",
    "--json",
]


def _env(tmp_path, **extra):
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CEPAPER_RESULTS": str(tmp_path / "results"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def test_cli_train_under_torchrun_reports_its_world_size(tmp_path, cifar_root):
    """``torchrun --nproc-per-node 2 ... cepaper train --json``: one JSON, from rank 0, with world_size 2
    (80 images: a batch of 64 on rank 0 (its 4 micro-batches of 16), 16 on rank 1)."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    p = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            str(ROOT / "tests" / "training" / "_ddp_worker.py"),
            "cli",
            str(tmp_path),
            *CLI,
            "--n-train",
            "80",
            "--data-root",
            str(cifar_root),
        ],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["world_size"] == 2 and out["summary"][0]["runs"] == 1
    saved = json.loads(Path(out["saved"]).read_text())
    assert saved["data"]["world_size"] == 2 and saved["data"]["records"][0]["history"]["world_size"] == 2


@pytest.mark.parametrize(
    "extra, env, message",
    [
        (
            ["--recipe", "cifar_1gpu"],
            {"WORLD_SIZE": "2", "RANK": "0"},
            "world size 2 does not divide recipe 'cifar_1gpu''s batch of 128",
        ),
        ([], {"WORLD_SIZE": "3", "RANK": "0"}, "world size 3 does not divide recipe 'cifar''s batch of 128"),
        (["--backend", "nccl"], {}, "backend nccl needs CUDA GPUs"),
    ],
)
def test_cli_train_refuses_a_bad_world_or_backend(tmp_path, monkeypatch, capsys, extra, env, message):
    """`cepaper train` (in this process, in the environment torchrun gives rank 0) refuses with status 2
    before it joins a process group or writes anything."""
    if "nccl" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is here: nccl is available")
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: pytest.fail("joined a group"))
    for name, value in {"CEPAPER_RESULTS": str(tmp_path / "results"), **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as e:
        cli.main([*CLI, "--n-train", "8", *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err, err
    assert not (tmp_path / "results").exists()  # refused before anything is written


def test_runs_that_cannot_be_shared_are_dealt_over_the_ranks_and_gathered_in_order(tmp_path):
    """``distributed.deal``: rank r computes items r, r + 2, ... by itself (a world of one inside), and
    both ranks return every result in order; so does the launcher's grid (``shared=False``)."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            str(ROOT / "tests" / "training" / "_ddp_worker.py"),
            "deal",
            tmp_path,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    want = [[i, i % 2, 1, 0] for i in range(5)]  # item, computed on rank, in a world of size 1, as its rank 0
    for r in range(2):
        assert json.loads((tmp_path / f"deal{r}.json").read_text()) == want
        assert json.loads((tmp_path / f"grid{r}.json").read_text()) == [[i, i % 2, 1] for i in range(3)], "launcher"
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3, "each dealt run cached by the rank that ran it"
    assert distributed.shares(recipes.recipe("cifar"), 8) and not distributed.shares(recipes.recipe("cifar_1gpu"), 2)


def write_folder_dataset(root, classes=3, per_class=4):
    """A tiny ImageNet-style dataset: ``root/imagenet/train/<wnid>/*.JPEG``, 12x12 RGB images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "imagenet" / "train" / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"img_{i}.JPEG")
    return classes * per_class


@pytest.fixture(scope="module")
def folder_ranks(tmp_path_factory):
    """Each rank's batches of the folder-data path (tests/training/_folder_worker.py under torchrun,
    gloo, 2 CPU processes), over 3 epochs of a 12-image dataset: ``(n, [rank 0's record, rank 1's])``."""
    root, out = tmp_path_factory.mktemp("folder"), tmp_path_factory.mktemp("folder_out")
    n = write_folder_dataset(root)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = ROOT / "tests" / "training" / "_folder_worker.py"
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", str(worker), str(root), str(out), "3"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return n, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_folder_data_across_ranks_deals_each_epoch_anew_once_over(folder_ranks):
    """Issue 24 (a held-out mutant: the multi-rank folder path never ran). Under torchrun the ImageNet
    path's sampler is set to each epoch (another order every epoch), each rank takes its share (half
    of every global batch, the recipe's batch / 2 per step) and, over the ranks, every image is drawn
    exactly once an epoch; the test set is shared out once over, too."""
    n, (r0, r1) = folder_ranks
    assert (r0["rank"], r1["rank"], r0["size"]) == (0, 1, 2)
    orders = []
    for e0, e1 in zip(r0["train"], r1["train"]):
        mine0, mine1 = sum(e0, []), sum(e1, [])
        assert len(mine0) == len(mine1) == n // 2, "each rank its half"
        assert sorted(mine0 + mine1) == list(range(n)), "every image once an epoch, over the ranks"
        assert [len(b) for b in e0] == [len(b) for b in e1] == [s // 2 for s in r0["batch_sizes"]]
        orders.append((mine0, mine1))
    assert len({json.dumps(o) for o in orders}) == len(orders), "the sampler's epoch is set: a new order each epoch"
    test0, test1 = sum(r0["test"], []), sum(r1["test"], [])
    assert sorted(test0 + test1) == list(range(n)) and test0 and test1
