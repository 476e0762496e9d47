"""`cepaper params` and `cepaper design`: tables, JSON, and exit status 2 with a clear message."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cepaper import cli, complexity
from cepaper.cli import alpha as cli_alpha
from cepaper.models.resnext import ResNeXtBottleneck
from cepaper.sections import paper

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def empty_results(tmp_path, monkeypatch):
    """No fitted alpha in the results store unless a test saves one."""
    monkeypatch.setenv("CEPAPER_RESULTS", str(tmp_path))


def run_json(capsys, *argv):
    assert cli.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def fails(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    assert e.value.code == 2
    return capsys.readouterr().err


def test_params_json(capsys):
    r = run_json(capsys, "params", "--arch", "resnext50", "--config", "32x4d")
    assert r["params"] == 25_028_904 and r["flops"] == 2 * r["macs"] and r["config"] == "32x4d"
    r = run_json(capsys, "params", "--arch", "resnext29", "--config", "37x10d", "--classes", "100")
    assert r["params"] == complexity.resnext_cifar(37, 10, classes=100)["params"] and r["classes"] == 100
    r = run_json(capsys, "params", "--arch", "mlp", "--depth", "6", "--width", "500", "--inputs", "748")
    assert r["params"] == 748 * 500 + 4 * 500 * 500 + 500


def test_params_table(capsys):
    assert cli.main(["params", "--arch", "resnext38", "--config", "22x10d"]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "36,25" in out and "resolution" in out


def test_design_json(capsys):
    r = run_json(capsys, "design", "--arch", "resnext29", "--baseline", "1x128d")
    assert (r["n"], r["m"], r["config"]) == (10, 37, "37x10d")
    assert r["alpha"] == paper.ALPHA_BOTTLENECK and "paper" in r["alpha_source"]
    for key in ("m_exact", "params", "baseline_params", "flops", "baseline_flops", "rho", "var_ratio"):
        assert key in r
    r = run_json(capsys, "design", "--arch", "resnext29", "--baseline", "1x128d", "--objective", "dual")
    assert r["config"] == "10x10d" and round(r["rho"], 1) == 3.3
    r = run_json(capsys, "design", "--arch", "resnext29", "--baseline", "1x128d", "--budget", "flops")
    assert r["config"] == "44x8d"
    r = run_json(capsys, "design", "--arch", "resnext50", "--baseline", "1x64d", "--alpha", "1.6", "--curve")
    assert r["config"] == "12x10d" and len(r["curve"]["n"]) == 64 and r["alpha_source"] == "given"


def test_design_mlp(capsys):
    r = run_json(
        capsys, "design", "--arch", "mlp", "--depth", "6", "--width", "500", "--inputs", "748", "--objective", "dual"
    )
    assert (r["n"], r["m"]) == (48, 12)


def test_design_table_says_where_alpha_comes_from(capsys):
    assert cli.main(["design", "--arch", "resnext29", "--baseline", "1x128d", "--curve"]) == 0
    out = capsys.readouterr().out
    assert "37x10d" in out and "the paper's alpha" in out and "m_primal" in out


def test_design_uses_a_fitted_alpha_only_when_asked(capsys):
    from cepaper.book import results

    with pytest.raises(SystemExit):
        cli.main(["design", "--arch", "resnext29", "--baseline", "1x128d", "--alpha", "fit"])
    assert "--alpha fit: no stored fit alpha/fit_bottleneck" in capsys.readouterr().err
    results.Run("alpha", "quick").save("fit_bottleneck", {"alpha": 1.2, "alpha_ci": [1.1, 1.3]})
    results.Run("alpha", "cli").save("fit_bottleneck", {"alpha": 1.7, "alpha_ci": [1.65, 1.75]})
    r = run_json(capsys, "design", "--arch", "resnext29", "--baseline", "1x128d")
    assert r["alpha"] == 1.6 and r["alpha_source"] == "the paper's alpha (Sec. 4.2)", "no store is read by default"
    r = run_json(capsys, "design", "--arch", "resnext29", "--baseline", "1x128d", "--alpha", "fit")
    assert r["alpha"] == 1.7 and r["alpha_source"].startswith("fitted: alpha/fit_bottleneck: profile `cli`")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["params", "--arch", "resnet7", "--config", "1x4d"], "argument --arch: invalid choice"),
        (["params", "--arch", "resnext29", "--config", "32by4"], "argument --config: config must look like CxDd"),
        (["params", "--arch", "resnext29", "--config", "0x4d"], "argument --config: config must have C >= 1"),
        (["params", "--arch", "resnext29"], "--config is required for --arch resnext29"),
        (
            ["params", "--arch", "resnext29", "--config", "1x4d", "--classes", "0"],
            "argument --classes: must be an integer >= 1, got '0'",
        ),
        (["params", "--arch", "mlp", "--depth", "6", "--width", "-5", "--inputs", "3"], "argument --width: must be"),
        (["params", "--arch", "mlp", "--depth", "6", "--inputs", "3"], "--arch mlp needs --width"),
        (["params", "--arch", "mlp", "--depth", "1", "--width", "5", "--inputs", "3"], "depth must be >= 2"),
        (["params", "--arch", "resnext29", "--config", "1x4d", "--width", "5"], "--width only apply to --arch mlp"),
        (
            ["design", "--arch", "resnext29", "--baseline", "1x128d", "--alpha", "0"],
            "argument --alpha: must be a number > 0",
        ),
        (
            ["design", "--arch", "resnext29", "--baseline", "1x128d", "--alpha", "x"],
            "argument --alpha: must be a number > 0",
        ),
        (["design", "--arch", "resnext29", "--baseline", "1x128d", "--objective", "both"], "argument --objective"),
        (["design", "--arch", "resnext29", "--baseline", "1x8d", "--n", "400"], "budget: no integer m >= 1"),
        (["design", "--arch", "bottleneck", "--baseline", "1x64d", "--classes", "10"], "--classes does not apply"),
    ],
)
def test_bad_input_exits_2(capsys, argv, message):
    assert message in fails(capsys, *argv)


def test_console_entry_point_exit_status():
    """The module runs as a command and exits with status 2 on bad input."""
    ok = subprocess.run(
        [sys.executable, "-m", "cepaper", "params", "--arch", "bottleneck", "--config", "1x64d", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    block = ResNeXtBottleneck(256, 256, 64)  # the Fig. 5 block 1x64d, built
    assert ok.returncode == 0 and json.loads(ok.stdout)["params"] == sum(p.numel() for p in block.parameters())
    bad = subprocess.run(
        [sys.executable, "-m", "cepaper", "design", "--arch", "resnext29", "--baseline", "12"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--baseline" in bad.stderr


def test_params_torchvision_module(capsys):
    r = run_json(capsys, "params", "--module", "torchvision:resnet50", "--config", "32x4", "--input-shape", "3,224,224")
    assert r["params"] == 25_028_904 and r["flops"] == complexity.complexity("resnext50", "32x4d")["flops"]


FACTORY = '''
from torch import nn

def block(m, n):
    """m two-layer members of width n on 8 inputs, summed: 8 -> [mn] -> 1 (1x1 Conv1d)."""
    return nn.Sequential(nn.Conv1d(8, m * n, 1), nn.ReLU(), nn.Conv1d(m * n, 1, 1))
'''


def test_fit_alpha_factory_module(tmp_path, capsys):
    from cepaper.book import results

    path = tmp_path / "my_block.py"
    path.write_text(FACTORY)
    r = run_json(
        capsys,
        "fit-alpha",
        "--module",
        f"{path}:block",
        "--input-shape",
        "8,3",
        "--trials",
        "8",
        "--widths",
        "2",
        "4",
        "8",
        "--readout",
        "mean",
        "--seed",
        "1",
    )
    assert r["module"] == f"{path}:block" and r["readout"] == "mean" and r["input_shape"] == [8, 3]
    assert r["widths"] == [2, 4, 8] and r["trials"] == 8 and len(r["alpha_ci"]) == 2
    record = results.load("alpha", "cli", cli_alpha.module_fit_name(f"{path}:block"))
    assert record["data"]["alpha"] == r["alpha"] and record["provenance"]["seed"] == 1
    for argv, message in (
        ([f"{path}:block"], "needs --input-shape"),
        ([f"{path}:nope", "--input-shape", "8,3"], "has no function 'nope'"),
        (["resnet", "--input-shape", "8,3"], "must be bottleneck, mlp, FILE.py:FUNC"),
        ([f"{path}:block", "--input-shape", "8,3", "--depth", "3"], "--depth only apply"),
        (["mlp", "--input-shape", "8,3"], "only apply to a factory"),
    ):
        assert message in fails(capsys, "fit-alpha", "--module", *argv, "--trials", "4")


def test_design_module_alpha_fit_reads_that_factorys_stored_fit(tmp_path, capsys, monkeypatch):
    from cepaper.book import results
    from cepaper.search import any_module, factories

    path = tmp_path / "my_block.py"
    path.write_text(FACTORY + "\n\ndef other(m, n):\n    return block(m, n)\n")
    spec = f"{path}:block"
    design_args = ["design", "--module", spec, "--input-shape", "8,3", "--baseline", "1x16", "--alpha", "fit"]
    err = fails(capsys, *design_args)
    assert f"--alpha fit: no stored fit for --module {spec}" in err
    assert f"run `cepaper fit-alpha --module {spec} --input-shape C,H,W` first" in err
    fitted = run_json(
        capsys,
        "fit-alpha",
        "--module",
        spec,
        "--input-shape",
        "8,3",
        "--trials",
        "8",
        "--widths",
        "2",
        "4",
        "8",
        "--readout",
        "mean",
    )
    assert "no stored fit for --module" in fails(capsys, *design_args[:2], f"{path}:other", *design_args[3:])
    r = run_json(capsys, *design_args)
    ref = any_module.design_module(factories.load_factory(spec), (8, 3), (1, 16), alpha=fitted["alpha"])
    assert r["alpha"] == fitted["alpha"] and (r["n"], r["m"], r["var_ratio"]) == (ref["n"], ref["m"], ref["var_ratio"])
    assert r["alpha_source"].startswith(
        "fitted on the member factory(1, n), input 8x3, mean read-out: alpha/fit_module_"
    )
    monkeypatch.chdir(tmp_path)  # the same file, named relative to another folder
    assert run_json(capsys, "design", "--module", "my_block.py:block", *design_args[3:])["alpha"] == fitted["alpha"]
    assert fitted["saved"].endswith(f"{cli_alpha.module_fit_name(spec)}.json")
    assert results.find("alpha", cli_alpha.module_fit_name(spec), profiles=("cli",))["data"]["module"] == spec


# --- an NTK that is all zero, an alpha that is not > 0 -----------------------------------------------

POST_RELU = '''
from cepaper.models.resnext import ResNeXtBottleneck

def block(m, n):
    """The project's Fig. 5 block (ReLU after the shortcut sum), 16 channels: the centre unit of channel 0
    is x = -1.55 on input 0 (seed 0), the branch adds about 0.1: the unit is off in every draw."""
    return ResNeXtBottleneck(16, 16, m * n, groups=m)
'''


def test_fit_alpha_names_an_all_zero_ntk_and_the_read_out_that_fixes_it(tmp_path, capsys):
    from cepaper.book import results

    path = tmp_path / "post_relu.py"
    path.write_text(POST_RELU)
    argv = ["fit-alpha", "--module", f"{path}:block", "--input-shape", "16,3,3", "--trials", "4", "--widths", "2", "4"]
    err = fails(capsys, *argv)
    assert "NTK is exactly 0 in all 4 draws at width 2 with the 'center' read-out" in err
    assert "--readout mean" in err
    assert results.find("alpha", cli_alpha.module_fit_name(f"{path}:block"), profiles=("cli",)) is None
    r = run_json(capsys, *argv, "--readout", "mean")  # the fix the message names
    assert r["alpha"] is not None and r["readout"] == "mean"


def planted_fit(alpha, zero_draws=(0.25, 0.0)):
    """What fit_member_alpha returns, with a planted alpha (the Monte Carlo is not what is tested here)."""
    return {
        "alpha": alpha,
        "alpha_ci": [alpha - 0.1, alpha + 0.1],
        "C": None,
        "C_ci": [None, None],
        "intercept": 0.0,
        "entry": "diag",
        "module": "m",
        "options": {},
        "widths": [4, 8],
        "trials": 50,
        "seed": 0,
        "seconds": 0.1,
        "device": "cpu",
        "readout": "center",
        "init": "factory",
        "input_shape": [8, 3],
        "zero_draws": list(zero_draws),
        "fits": {},
    }


@pytest.mark.parametrize("alpha", [-0.03, 0.0])
def test_fit_alpha_never_saves_an_alpha_at_or_below_zero(tmp_path, capsys, monkeypatch, alpha):
    from cepaper.alpha import any_member
    from cepaper.book import results

    path = tmp_path / "my_block.py"
    path.write_text(FACTORY)
    spec = f"{path}:block"
    monkeypatch.setattr(any_member, "fit_member_alpha", lambda *a, **k: planted_fit(alpha))
    err = fails(capsys, "fit-alpha", "--module", spec, "--input-shape", "8,3", "--trials", "50", "--widths", "4", "8")
    assert f"alpha = {alpha:.3g} [{alpha - 0.1:.3g}, {alpha + 0.1:.3g}]" in err and "this fit is not saved" in err
    assert "--readout mean" in err and "widths 4 (25%)" in err and "more --trials (now 50)" in err
    assert "--init eq3 (the paper's Eq. 3 draw" in err
    assert results.find("alpha", cli_alpha.module_fit_name(spec), profiles=("cli",)) is None
    design = ["design", "--module", spec, "--input-shape", "8,3", "--baseline", "1x16", "--alpha", "fit"]
    assert "no stored fit for --module" in fails(capsys, *design)
    monkeypatch.setattr(any_member, "fit_member_alpha", lambda *a, **k: planted_fit(0.7))
    run_json(capsys, "fit-alpha", "--module", spec, "--input-shape", "8,3", "--trials", "50", "--widths", "4", "8")
    assert run_json(capsys, *design)["alpha"] == 0.7


def test_design_refuses_a_stored_alpha_at_or_below_zero(tmp_path, capsys):
    from cepaper.book import results

    path = tmp_path / "my_block.py"
    path.write_text(FACTORY)
    spec = f"{path}:block"
    run = results.Run("alpha", "cli", params={}, seed=0, store=True)  # a record written before the refusal
    run.save(cli_alpha.module_fit_name(spec), planted_fit(-0.03) | {"module": spec})
    err = fails(capsys, "design", "--module", spec, "--input-shape", "8,3", "--baseline", "1x16", "--alpha", "fit")
    assert f"the stored fit for --module {spec} has alpha = -0.03 <= 0" in err and "--readout mean" in err
    results.Run("alpha", "cli", params={}, seed=0, store=True).save("fit_bottleneck", planted_fit(-0.5))
    err = fails(capsys, "design", "--arch", "resnext29", "--baseline", "1x128d", "--alpha", "fit")
    assert "the stored fit alpha/fit_bottleneck has alpha = -0.5 <= 0" in err


def test_fit_alpha_builtin_bottleneck_never_saves_an_alpha_at_or_below_zero(capsys, monkeypatch):
    from cepaper.alpha import fit
    from cepaper.book import results

    monkeypatch.setattr(fit, "measure_alpha", lambda *a, **k: planted_fit(-0.2) | {"module": "bottleneck"})
    err = fails(capsys, "fit-alpha", "--module", "bottleneck", "--trials", "50", "--readout", "random")
    assert "alpha = -0.2" in err and "--readout mean (a read-out over every output unit, not the random one" in err
    assert results.find("alpha", "fit_bottleneck", profiles=("cli",)) is None


BLOCK = """
from cepaper.models.resnext import ResNeXtBottleneck

def block(m, n):
    return ResNeXtBottleneck(256, 256, m * n, groups=m)
"""


def test_design_module_matches_a_network_under_a_flop_convention(tmp_path, capsys):
    path = tmp_path / "fig5.py"
    path.write_text(BLOCK)
    module = ["--module", f"{path}:block", "--input-shape", "256,2,2"]
    net = ["--network", "cepaper.models.resnext:ResNeXtCifar", "--network-input-shape", "3,32,32"]
    r = run_json(
        capsys, "design", *module, "--baseline", "1x128", *net, "--budget", "flops", "--flops-convention", "2macs+acts"
    )
    assert r["config"] == "44x8" and r["flops_convention"] == "2macs+acts"
    assert r["step6"] == "the network cepaper.models.resnext:ResNeXtCifar on 3x32x32"
    assert (
        r["cost"]
        == complexity.complexity("resnext29", "44x8d")["flops"] + complexity.complexity("resnext29", "44x8d")["acts"]
    )
    assert cli.main(["design", *module, "--baseline", "1x128", "--network-blocks", "9"]) == 0
    out = capsys.readouterr().out
    assert "35x10" in out and "step 6 matches" in out and "9 x the module" in out
    two = run_json(capsys, "params", *module, "--config", "4x8")
    one = run_json(capsys, "params", *module, "--config", "4x8", "--flops-convention", "macs")
    assert two["flops"] == 2 * one["flops"] and (two["flops_convention"], one["flops_convention"]) == ("2macs", "macs")
    for argv, message in (
        (
            ["design", *module, "--baseline", "1x128", *net, "--network-blocks", "9"],
            "either --network or --network-blocks",
        ),
        (
            ["design", *module, "--baseline", "1x128", "--network-input-shape", "3,32,32"],
            "--network-input-shape needs --network",
        ),
        (
            ["design", "--arch", "resnext29", "--baseline", "1x128d", "--flops-convention", "macs"],
            "only applies to --module",
        ),
        (
            ["design", "--arch", "resnext29", "--baseline", "1x128d", "--network-blocks", "3"],
            "--network-blocks only applies",
        ),
        (["design", *module, "--baseline", "1x128", "--flops-convention", "acts"], "invalid choice: 'acts'"),
    ):
        assert message in fails(capsys, *argv)


def test_fit_alpha_eq3_draw_of_the_papers_block_recovers_its_alpha(tmp_path, capsys):
    """--init eq3 on the project's Fig. 5 block (post-sum ReLU) draws exactly what fit-alpha --module bottleneck
    --post-relu draws: the same alpha; the record says which draw, and design --alpha fit names it."""
    path = tmp_path / "fig5.py"
    path.write_text(BLOCK)
    spec = f"{path}:block"
    common = ["--trials", "8", "--widths", "2", "4", "8", "--readout", "mean"]
    r = run_json(capsys, "fit-alpha", "--module", spec, "--input-shape", "256,3,3", "--init", "eq3", *common)
    ref = run_json(capsys, "fit-alpha", "--module", "bottleneck", "--post-relu", *common)
    assert r["init"] == "eq3" and r["alpha"] == pytest.approx(ref["alpha"], rel=1e-5)
    d = run_json(capsys, "design", "--module", spec, "--input-shape", "256,2,2", "--baseline", "1x16", "--alpha", "fit")
    assert ", Eq. 3 draw: alpha/fit_module_" in d["alpha_source"]
    assert "--init only apply to a factory" in fails(capsys, "fit-alpha", "--module", "bottleneck", "--init", "eq3")
