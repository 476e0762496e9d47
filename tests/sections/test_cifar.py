"""Tests of the training sections' library: cepaper.sections.cifar (derived models, tables), the grid of runs
and summary of cepaper.training.sgd, cepaper.sections.imagenet (sizes, datasets, cost) and `cepaper train`."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from cepaper import cli
from cepaper import complexity as cxm
from cepaper.catalog import Dataset
from cepaper.models.resnext import ResNeXtBottleneck
from cepaper.sections import cifar, imagenet, paper
from cepaper.training import grids, sgd


def test_paper_scale_models_are_the_papers():
    specs = {s["role"]: s for s in cifar.design_models(["1x128d"])}
    assert specs["baseline"]["config"] == "1x128d" and specs["baseline"]["m"] == 1
    assert (specs["primal optimum"]["config"], specs["dual optimum"]["config"], specs["flops optimum"]["config"]) == (
        "37x10d",
        "10x10d",
        "44x8d",
    )
    assert specs["primal optimum"]["params"] == cxm.complexity("resnext29", "37x10d")["params"]
    assert specs["dual optimum"]["rho"] == pytest.approx(3.27, abs=0.01)


def test_scaled_down_optimum_against_brute_force():
    """The quick network's primal optimum: the width minimizing Var(K_n) * beta(n) (Eqs. 9, 12) with
    beta counted on built torch blocks, then the m whose whole network is nearest the baseline's params."""
    stages, depth, alpha = (64,), 1, paper.ALPHA_BOTTLENECK
    specs = {s["role"]: s for s in cifar.design_models(["1x32d"], stages=stages, depth=depth, alpha=alpha)}

    def block_params(n):
        return sum(p.numel() for p in ResNeXtBottleneck(64, 64, n).parameters())

    objective = {n: np.expm1(alpha * (1 / 64 + 1 / (9 * n) + 1 / n)) * block_params(n) for n in range(1, 33)}
    n_best = min(objective, key=objective.get)
    base = cxm.complexity("resnext29", "1x32d", stages=stages, depth=depth)["params"]
    m_best = min(
        range(1, 200),
        key=lambda m: abs(cxm.complexity("resnext29", (m, n_best), stages=stages, depth=depth)["params"] - base),
    )
    assert specs["primal optimum"]["n"] == n_best and specs["primal optimum"]["m"] == m_best
    assert specs["dual optimum"]["n"] == n_best  # strong duality
    m_d = np.expm1(alpha * (1 / 64 + 1 / (9 * n_best) + 1 / n_best)) / np.expm1(alpha * (1 / 64 + 1 / 288 + 1 / 32))
    assert specs["dual optimum"]["m"] == int(np.floor(m_d + 0.5))


def test_design_models_roles_and_listed():
    specs = cifar.design_models(
        ["1x32d"], primal_ns=[12], dual_ns=[12, 5], models=["3x8d", "1x32d"], stages=(64,), depth=1
    )
    roles = [s["role"] for s in specs]
    assert roles[:4] == ["baseline", "primal optimum", "dual optimum", "flops optimum"]
    assert "listed" in roles and len({s["config"] for s in specs}) == len(specs)
    with pytest.raises(ValueError, match="baselines must name at least one"):
        cifar.design_models([])


def toy(n, size=8, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(
        "toy",
        "train",
        rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        rng.integers(0, classes, n).astype(np.int64),
        source="random",
    )


def test_run_models_caches_and_resumes(tmp_path, monkeypatch):
    train, test = toy(24), toy(8, seed=1)
    kw = dict(net=grids.Network(classes=10, stages=(16,), depth=1), epochs=2, cache=tmp_path)
    first = grids.train_recipe_grid(["2x2d", "1x4d"], "toy", train, test, [0, 1], **kw)
    assert [(r["config"], r["seed"]) for r in first] == [("2x2d", 0), ("2x2d", 1), ("1x4d", 0), ("1x4d", 1)]
    assert len(list(tmp_path.glob("*.json"))) == 4 and not list(tmp_path.glob("*.pt"))
    assert first[0]["final_top1"] == first[0]["history"]["test_top1"][-1] and first[0]["recipe"] == "cifar"

    def no_training(*a, **k):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(grids, "train_recipe", no_training)
    again = grids.train_recipe_grid(["2x2d", "1x4d"], "toy", train, test, [0, 1], **kw)
    assert json.dumps(again) == json.dumps(first)
    with pytest.raises(AssertionError, match="trained again"):  # other settings: a new run
        grids.train_recipe_grid(["2x2d"], "toy", train, test, [0], **{**kw, "epochs": 1})
    with pytest.raises(ValueError, match="seeds must name at least one seed"):
        grids.train_recipe_grid(["2x2d"], "toy", train, test, [], **kw)
    with pytest.raises(ValueError, match="recipe_name must be one of cifar, cifar_1gpu, .*got 'cifar_8gpu'"):
        grids.train_recipe_grid(["2x2d"], "toy", train, test, [0], **{**kw, "recipe_name": "cifar_8gpu"})


def test_summary_mean_and_standard_error():
    """Per run: the mean of its last ``last`` epochs (last=1: the final epoch); then mean and s.e.
    over runs, per model and recipe."""

    def rec(config, top1, top5, recipe="cifar"):
        return {
            "dataset": "d",
            "arch": "a",
            "config": config,
            "recipe": recipe,
            "params": 5,
            "history": {"test_top1": top1, "test_top5": top5},
        }

    recs = [
        rec("x", [90.0, 10.0], [9.0, 1.0]),
        rec("x", [50.0, 14.0], [5.0, 3.0]),
        rec("x", [0.0, 12.0], [0.0, 2.0]),
        rec("y", [7.0], [0.0]),
        rec("x", [20.0, 30.0], [1.0, 1.0], recipe="cifar_1gpu"),
    ]
    s = grids.grid_summary(recs).set_index(["config", "recipe"])
    assert s.loc[("x", "cifar"), "top1"] == 12.0 and s.loc[("x", "cifar"), "top5"] == 2.0
    assert s.loc[("x", "cifar"), "runs"] == 3 and s.loc[("x", "cifar_1gpu"), "top1"] == 30.0
    assert s.loc[("x", "cifar"), "top1_sem"] == pytest.approx(np.std([10, 14, 12], ddof=1) / np.sqrt(3))
    assert np.isnan(s.loc[("y", "cifar"), "top1_sem"])
    s2 = grids.grid_summary(recs, last=2).set_index(["config", "recipe"])
    assert s2.loc[("x", "cifar"), "top1"] == pytest.approx(np.mean([50, 32, 6]))
    assert cifar.LAST_EPOCHS == 10 and imagenet.LAST_EPOCHS == 1 and imagenet.RUNS == 5


def summary_of(specs, recipe="cifar", base=50.0):
    return pd.DataFrame(
        [
            {
                "dataset": "cifar10",
                "arch": "resnext29",
                "config": s["config"],
                "recipe": recipe,
                "params": s["params"],
                "top1": base + i,
                "top1_sem": 0.5,
                "top5": 10.0,
                "runs": 2,
            }
            for i, s in enumerate(specs)
        ]
    )


def test_paper_tables_put_ours_beside_the_papers():
    specs = cifar.design_models(["1x32d"], stages=(64,), depth=1)
    summ = summary_of(specs)
    t1a = cifar.paper_table("1a", specs, summ, scaled=True)
    row = t1a[t1a["paper model"] == "37x10d"].iloc[0]
    assert row["paper C10"] == 3.82 and row["our model"] == specs[1]["config"] and row["our C10"] == "51.00 ± 0.50 (2)"
    assert row["our C100"] == "not run" and row["our recipe"] == "cifar"
    assert (t1a[t1a["paper model"] == "3x64d"]["our model"] == "not run").all()
    t5 = cifar.paper_table("5", specs, summ, scaled=True)
    assert t5[t5["paper model"] == "ResNeXt-29 44x8d"].iloc[0]["our model"] == specs[3]["config"]
    full = cifar.design_models(["1x128d"])
    summ_full = summ.assign(config=[s["config"] for s in full])
    t1b = cifar.paper_table("1b", full, summ_full, scaled=False)
    assert t1b[t1b["paper model"] == "10x10d"].iloc[0]["our model"] == "10x10d"
    assert t1b[t1b["paper model"] == "6x25d"].iloc[0]["our C10"] == "not run"
    assert len(t1b) == sum(r["table"] == "1b" for r in paper.MODELS)  # alpha 1.60: no extra rows


def test_single_gpu_rows_stand_beside_single_gpu_runs():
    """Table 1b's § rows read the cifar_1gpu runs, the others the 8-GPU runs, and no row reads both."""
    full = cifar.design_models(["1x128d"])
    summ = pd.concat([summary_of(full, "cifar", 50.0), summary_of(full, "cifar_1gpu", 70.0)])
    t1b = cifar.paper_table("1b", full, summ, scaled=False).set_index("paper model")
    assert t1b.loc["1x128d §", ["our recipe", "our C10"]].tolist() == ["cifar_1gpu", "70.00 ± 0.50 (2)"]
    assert t1b.loc["10x10d §", ["our recipe", "our C10"]].tolist() == ["cifar_1gpu", "72.00 ± 0.50 (2)"]
    assert t1b.loc["1x128d", ["our recipe", "our C10"]].tolist() == ["cifar", "50.00 ± 0.50 (2)"]
    assert t1b.loc["10x10d", ["our recipe", "our C10"]].tolist() == ["cifar", "52.00 ± 0.50 (2)"]
    only_8gpu = cifar.paper_table("1b", full, summary_of(full), scaled=False).set_index("paper model")
    assert only_8gpu.loc["1x128d §", "our C10"] == "not run"
    for scaled, specs in ((False, full), (True, cifar.design_models(["1x32d"], stages=(64,), depth=1))):
        runs = {(r["config"], r["recipe"]) for r in cifar.grid(specs, scaled)}
        single = {
            (cifar.stand_in(r, specs, scaled)["config"], "cifar_1gpu")
            for r in paper.MODELS
            if r["table"] == "1b" and "§" in r["model"]
        }
        assert len(single) == 2 and single <= runs
        assert runs - single == {(s["config"], "cifar") for s in specs}


def test_a_moved_optimum_is_an_extra_row_and_the_printed_row_keeps_its_model():
    """alpha = 2.5 derives 33x11d, not 37x10d: Table 1a keeps the row 37x10d with its own runs (a
    listed model) and shows 33x11d after it, labelled; no row reads "not run"."""
    specs = cifar.design_models(["1x128d"], models=cifar.printed_models(), alpha=2.5)
    optimum = next(s for s in specs if s["role"] == "primal optimum")
    assert optimum["config"] == "33x11d"
    t1a = cifar.paper_table("1a", specs, summary_of(specs), scaled=False)
    models = t1a["paper model"].tolist()
    extra = models.index("37x10d") + 1
    assert models[extra].startswith("33x11d: our primal optimum of 1x128d at α = 2.5 (the paper's is 37x10d)")
    assert pd.isna(t1a.iloc[extra]["paper C10"]) and t1a.iloc[extra]["our model"] == "33x11d"
    assert t1a[t1a["paper model"] == "37x10d"].iloc[0]["our model"] == "37x10d"
    printed = t1a[t1a["paper model"] != "Wide ResNet"]
    assert not (printed["our model"] == "not run").any() and not (printed["our C10"] == "not run").any()


def test_paper_profile_trains_every_printed_resnext():
    """Every ResNeXt row of Tables 1-5 (cepaper.sections.paper) is in the paper profile's grids, whatever alpha."""
    profile = yaml.safe_load((Path(__file__).parents[2] / "profiles" / "paper.yaml").read_text())
    c = profile["cifar"]
    cifar_rows = {
        (r["config"], cifar.row_recipe(r)) for r in paper.MODELS if r["table"] in ("1a", "1b", "5") and r["config"]
    }
    assert len(cifar_rows) == 16 + 2  # 16 printed models, two of them also on one GPU (§)
    for alpha in (None, 1.0, 2.5):
        specs = cifar.design_models(
            c["baselines"], [], [], c["models"], stages=c["stages"], depth=c["blocks"], alpha=alpha
        )
        assert cifar_rows <= {(r["config"], r["recipe"]) for r in cifar.grid(specs, scaled=False)}, alpha
    i = profile["imagenet"]
    assert i["train"] and i["configs"] is None
    grid = {(r.table, r.arch, r.config) for r in imagenet.table_models(i["tables"]).itertuples()}
    want = {
        (r["table"], r["arch"], r["config"])
        for r in paper.MODELS
        if r["table"] in ("2a", "2b", "3", "4") and r["config"]
    }
    assert len(want) == 8 + 6 + 5 + 8 and want == grid


def test_imagenet_models_have_the_printed_sizes():
    models = imagenet.table_models()
    assert models["params match"].all()
    assert set(models.table) == {"2a", "2b", "3", "4"}
    r50 = models[(models.arch == "resnext50") & (models.config == "32x4d")].iloc[0]
    assert r50["params (M)"] == round(25_028_904 / 1e6, 3)  # torchvision's resnext50_32x4d


def test_imagenet_timed_models_and_cost():
    models = imagenet.table_models(("3",))
    assert imagenet.timed_models(None, models) == [("3", "resnext29", c) for c in models.config]
    assert imagenet.timed_models(["3:resnext29:37×10"], models) == [("3", "resnext29", "37x10d")]
    with pytest.raises(ValueError, match="configs must hold 'table:arch:CxDd' strings"):
        imagenet.timed_models(["resnext29:37x10d"], models)
    speed = pd.DataFrame(
        [
            {"table": "2a", "arch": "resnext50", "config": "12x10d", "images_per_s": 1000.0},
            {"table": "4", "arch": "resnext38", "config": "22x10d", "images_per_s": 500.0},
        ]
    )
    cost = imagenet.cost_estimate(speed)
    assert cost["hours per run"].tolist() == pytest.approx([100 * 1_281_167 / 1000 / 3600, 60 * 1_281_167 / 500 / 3600])
    assert cost["hours for 5 runs"].tolist() == pytest.approx((5 * cost["hours per run"]).tolist())


def test_imagenet_datasets_missing_and_tables_not_run(tmp_path):
    status = imagenet.dataset_status(tmp_path)
    assert list(status.dataset) == ["imagenet", "imagenet32", "imagenet64"] and not status.found.any()
    t = imagenet.paper_table("3")
    assert (t["our top-1"] == "not run").all() and t["paper top-1"].tolist()[3] == 38.41
    summ = pd.DataFrame(
        [
            {
                "dataset": "imagenet32",
                "arch": "resnext29",
                "config": "37x10d",
                "recipe": "imagenet32",
                "top1": 40.0,
                "top5": 18.0,
                "runs": 5,
                "top1_sem": 0.1,
            }
        ]
    )
    t = imagenet.paper_table("3", summ)
    assert t[t["paper model"] == "ResNeXt-29, 37x10d"].iloc[0]["our top-1"] == "40.00 ± 0.10 (5)"
    t = imagenet.paper_table("3", summ.assign(recipe="cifar"))  # another recipe's runs are not this table's
    assert (t["our top-1"] == "not run").all()


def test_imagenet_throughput_measures_a_model(monkeypatch):
    """With a clock that advances 0.5 s per reading, the one timed step of 2 images takes 0.5 s: 4 images/s."""
    ticks = iter(range(100))
    monkeypatch.setattr(sgd, "time", SimpleNamespace(perf_counter=lambda: 0.5 * next(ticks)))
    speed = imagenet.measure_throughput([("3", "resnext29", "1x4d")], batch_size=2, steps=1)
    assert speed.iloc[0]["resolution"] == 32 and speed.iloc[0]["batch"] == 2
    assert speed.iloc[0]["images_per_s"] == 2 * 1 / 0.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arch", "resnext29", "--config", "0x4d", "--dataset", "cifar10"], "config must have C >= 1"),
        (
            ["--arch", "resnext50", "--config", "1x4d", "--dataset", "cifar10"],
            "resnext50/101 are the ImageNet (224x224)",
        ),
        (
            ["--arch", "resnext29", "--config", "1x4d", "--dataset", "imagenet"],
            "--arch resnext29 does not fit --dataset imagenet",
        ),
        (
            ["--arch", "resnext29", "--config", "1x4d", "--dataset", "cifar10", "--seed", "-1"],
            "must be an integer >= 0",
        ),
        (["--arch", "resnext29", "--config", "1x4d", "--dataset", "svhn"], "invalid choice: 'svhn'"),
        (
            ["--arch", "resnext29", "--config", "1x4d", "--dataset", "cifar10", "--epochs", "0"],
            "must be an integer >= 1",
        ),
    ],
)
def test_cli_train_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err, err


@pytest.mark.parametrize(
    "epochs, statistic", [(1, "final epoch"), (3, "mean of the last 3 epochs"), (12, "mean of the last 10 epochs")]
)
def test_cli_train_reports_errors_over_the_epochs_it_averaged(tmp_path, monkeypatch, capsys, epochs, statistic):
    """`cepaper train` says top-1 and top-5 *errors*, and over how many epochs they are averaged: the CIFAR
    statistic's 10, or all of a shorter run's (the training itself is stubbed: one record of ``epochs``)."""
    from cepaper import cli
    from cepaper.cli import train as cli_train

    def grid(configs, dataset, train, test, seeds, **kw):
        history = {"test_top1": [90.0 - e for e in range(epochs)], "test_top5": [50.0] * epochs}
        meta = dict(dataset=dataset, arch=kw["net"].arch, recipe=kw["recipe_name"], params=1000, wall_s=1.0)
        return [dict(meta, config=c, seed=s, history=history) for c in configs for s in seeds]

    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))
    monkeypatch.setattr(cli_train, "_load_split", lambda data, args, split, n, flag: toy(8))
    monkeypatch.setattr(grids, "train_recipe_grid", grid)
    argv = ["train", "--arch", "resnext29", "--config", "2x4d", "--dataset", "cifar10", "--epochs", str(epochs)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    top1 = np.mean([90.0 - e for e in range(epochs)][-10:])
    assert f"top-1 error {top1:.2f}%  top-5 error 50.00%" in out and f"; {statistic})" in out, out


def test_cli_train_missing_data_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(
            ["train", "--arch", "resnext29", "--config", "1x4d", "--dataset", "cifar10", "--data-root", str(tmp_path)]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and "cifar10 not found" in err and "download" in err, err


def test_section_parameters_are_checked():
    assert cifar.check_params(["cifar10"], 2, None) == (["cifar10"], 2, None)
    with pytest.raises(ValueError, match="datasets must be a non-empty list among cifar10, cifar100, got \\['svhn'\\]"):
        cifar.check_params(["svhn"], 1, 1)
    with pytest.raises(ValueError, match="n_runs must be an integer >= 1, got 0"):
        cifar.check_params(["cifar10"], 0, 1)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        cifar.check_params(["cifar10"], 1, 0)
    with pytest.raises(ValueError, match="tables must be a non-empty list among 2a, 2b, 3, 4, got \\['1a'\\]"):
        imagenet.check_tables(["1a"])


def test_the_run_sentence_warns_only_for_a_scaled_down_network():
    """What the page says about its run is computed in the section: the scaled-down network is flagged as
    no evidence, ResNeXt-29 is not, and DDP is named only across several processes."""
    scaled = cifar.run_sentence([64], 1, ["cifar10"], 256, 256, 1, 1, 1.6, "given").data
    paper_scale = cifar.run_sentence(None, 3, ["cifar10"], None, None, None, 10, 1.6, "given", world_size=8).data
    assert "not the paper's experiment" in scaled and "torchrun" not in scaled
    assert "ResNeXt-29" in paper_scale and "not the paper's experiment" not in paper_scale
    assert "all training and all test images; the recipe’s 300 epoch(s)" in paper_scale
    assert "across 8 processes" in paper_scale


def test_check_grid_stops_a_run_that_did_not_train_every_epoch():
    runs = [{"config": "1x32d", "recipe": "cifar"}]
    record = {"history": {"epoch": [1, 2], "test_top1": [90.0, 80.0], "train_loss": [2.0, 1.5]}, "recipe": "cifar"}
    cifar.check_grid([record], runs, ["cifar10"], 1, 2, in_process=True)
    with pytest.raises(AssertionError, match="every epoch"):
        cifar.check_grid([record], runs, ["cifar10"], 1, 3, in_process=True)
    with pytest.raises(AssertionError, match="one record per model"):
        cifar.check_grid([record], runs, ["cifar10", "cifar100"], 1, 2, in_process=True)
