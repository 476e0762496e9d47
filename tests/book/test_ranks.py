"""`torchrun --nproc-per-node 2 -m cepaper run SECTION` (cepaper.book.ranks), on the CPU with gloo,
against a throw-away repository layout: a section that trains grids executes on both ranks, whose
kernels form one process group; rank 0 alone publishes; a section that does not train executes on
rank 0 alone; an up-to-date section is cached on every rank."""

import json
import os
import shutil
import sys

import pytest
import torch.distributed as dist

from cepaper import cli
from tests import conftest
from tests.conftest import DRIVER

RANKED = """# %% tags=["parameters"]
profile = "quick"
results_dir = ""
value = 1
executor = "inprocess"

# %%
import os
import torch
from cepaper.book import results
from cepaper.training import distributed

world, device = distributed.setup("cpu")
total = distributed.all_reduce_sum(torch.tensor([world.rank + 1.0]), world)
run = results.Run("lemma1", profile, params=dict(value=value), results_dir=results_dir)
run.save("answer", {"value": value, "rank": world.rank, "size": world.size, "total": total.item(),
                    "port": os.environ["MASTER_PORT"]})
"""

PLAIN = """# %% tags=["parameters"]
profile = "quick"
results_dir = ""
value = 1

# %%
import os
from cepaper.book import results

run = results.Run("lemma1", profile, params=dict(value=value), results_dir=results_dir)
run.save("answer", {"value": value, "rank": int(os.environ["RANK"])})
"""


def torchrun(root, *args):
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    runner = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(conftest.SOURCE_ROOT), "CEPAPER_RESULTS": str(root / "results")}
    return conftest.subprocess.run(
        [runner, "--standalone", "--nproc-per-node", "2", str(driver), str(root), *args],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def answer(root):
    return json.loads((root / "results" / "quick" / "lemma1" / "answer.json").read_text())["data"]


def test_a_section_that_trains_grids_runs_on_every_rank_and_rank_0_publishes(repo):
    (repo / "notebooks" / "01_lemma1.py").write_text(RANKED)
    left = repo / "_build" / "staging" / "rank1-quick-lemma1-abcd1234"  # a killed follower's
    left.mkdir(parents=True)
    done = torchrun(repo, "run", "lemma1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = json.loads(done.stdout)  # one JSON: rank 0's
    assert not record["cached"] and record["params"]["value"] == 2
    data = answer(repo)
    assert data["rank"] == 0 and data["size"] == 2 and data["total"] == 3.0, "both kernels joined one group"
    assert data["port"] != os.environ.get("MASTER_PORT"), "the kernels' group has a port of its own"
    assert (repo / "_build" / "logs" / "quick" / "01_lemma1.rank1.kernel.log").exists(), "rank 1 executed it"
    assert not list((repo / "_build" / "staging").iterdir()), "the follower's copy is discarded"
    assert sorted(p.name for p in (repo / "_build" / "executed" / "quick").iterdir()) == [
        "01_lemma1.ipynb",
        "01_lemma1.json",
    ]

    again = torchrun(repo, "run", "lemma1", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["cached"] for r in json.loads(again.stdout)] == [True], "up to date: cached on every rank"


def test_a_section_that_does_not_train_runs_on_rank_0_alone(repo):
    (repo / "notebooks" / "01_lemma1.py").write_text(PLAIN)
    done = torchrun(repo, "run", "lemma1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert answer(repo) == {"value": 2, "rank": 0}
    assert not (repo / "_build" / "logs" / "quick" / "01_lemma1.rank1.kernel.log").exists()


BAD_RUNS = [
    (["--executor", "local"], "executor must be inprocess"),
    (["--reuse"], "--reuse executes nothing: run it as one process"),
    (["-p", "valu", "3"], "unknown parameter 'valu'"),
]


@pytest.mark.parametrize("args, message", BAD_RUNS)
def test_bad_runs_under_torchrun_are_refused_on_every_rank(repo, monkeypatch, capsys, args, message):
    """Each rank refuses a bad run by itself, with status 2, before it joins any process group (here in
    this process, as rank 0 and as rank 1 of torchrun's two); each says why, naming its rank."""
    (repo / "notebooks" / "01_lemma1.py").write_text(RANKED)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("joined a group before refusing"))
    for rank in ("0", "1"):
        for name, value in (("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", "2")):
            monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as e:
            cli.main(["run", "lemma1", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"cepaper run (rank {rank}): " in err and message in err, (rank, err)
    assert not (repo / "results" / "quick" / "lemma1").exists()


def test_a_bad_run_under_torchrun_itself_is_refused(repo):
    """The first of BAD_RUNS under torchrun: it exits with an error status, publishes nothing, and says
    why, whichever rank exits first (torchrun then stops the other, maybe before it has said anything)."""
    (repo / "notebooks" / "01_lemma1.py").write_text(RANKED)
    args, message = BAD_RUNS[0]
    done = torchrun(repo, "run", "lemma1", *args)
    assert done.returncode != 0 and not (repo / "results" / "quick" / "lemma1").exists(), done.stderr[-3000:]
    assert message in done.stderr, done.stderr[-3000:]
