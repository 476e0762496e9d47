"""Run by tests/training/test_distributed.py under ``torchrun --nproc-per-node 2``: one tiny recipe run across the
ranks (gloo), interrupted after its first epoch and resumed by every rank from rank 0's checkpoint.
Writes ``rank<r>.pt`` (history, final weights) into the folder given as the argument.

``_ddp_worker.py cli OUT ARGS...``: ``cepaper ARGS...`` with its checkpoints under ``OUT`` (not the
repository's ``_build/``). ``_ddp_worker.py deal OUT``: :func:`distributed.deal` of five items, and a grid of
three dealt by the launcher (:meth:`cepaper.training.executors.Launcher.run_grid`)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cepaper.training import distributed, sgd  # noqa: E402
from tests.training import test_distributed as t  # noqa: E402  (the data, model and recipe of the test)


def main(out):
    torch.set_num_threads(1)
    w, device = distributed.setup("cpu")
    assert w.size == 2, w
    train, test = t.data()
    ckpt = Path(out) / "run.pt"
    calls, real = [], sgd.test_epoch

    def interrupted(*a, **k):  # every rank stops at the second evaluation, after epoch 2
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    sgd.test_epoch = interrupted
    try:
        sgd.train_recipe(t.model(), train, test, t.RECIPE, seed=3, checkpoint=ckpt)
        raise AssertionError("not interrupted")
    except KeyboardInterrupt:
        pass
    sgd.test_epoch = real
    distributed.barrier(w)
    epoch = torch.load(ckpt, weights_only=False)["epoch"]
    model = t.model(seed=99)  # other weights: all must come from the checkpoint
    hist = sgd.train_recipe(model, train, test, t.RECIPE, seed=3, checkpoint=ckpt)
    torch.save({"history": hist, "weights": model.state_dict(), "resumed_from": epoch}, Path(out) / f"rank{w.rank}.pt")
    distributed.shutdown()


def cli(out, argv):
    from cepaper import cli
    from cepaper.book import results

    results.checkpoint_dir = lambda section, profile: Path(out) / "checkpoints" / profile / section
    return cli.main(argv)


def deal(out):
    """Five items dealt over the ranks: where each was computed, and in which world."""
    import json

    w, _ = distributed.setup("cpu")
    compute = lambda items: [(i, w.rank, distributed.world().size, distributed.world().rank) for i in items]
    got = distributed.deal(range(5), compute, w)
    (Path(out) / f"deal{w.rank}.json").write_text(json.dumps(got))
    # the same through the launcher: a grid whose runs the ranks cannot share, cached
    from cepaper.training import executors

    run = lambda job, ckpt: {"item": job["item"], "rank": w.rank, "size": distributed.world().size}
    jobs = [{"item": i} for i in range(3)]
    records = executors.Launcher().run_grid(
        jobs, run, shared=False, cache=Path(out) / "cache", modules=("cepaper.runs",)
    )
    (Path(out) / f"grid{w.rank}.json").write_text(json.dumps([[r["item"], r["rank"], r["size"]] for r in records]))
    distributed.shutdown()


if __name__ == "__main__":
    modes = {"cli": lambda: cli(sys.argv[2], sys.argv[3:]), "deal": lambda: deal(sys.argv[2])}
    sys.exit(modes[sys.argv[1]]() if sys.argv[1] in modes else main(sys.argv[1]))
