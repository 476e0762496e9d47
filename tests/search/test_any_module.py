"""cepaper.search.any_module, factories and alpha.any_member: Algorithms 1 and 2 read from any module factory, against
independent computations."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cepaper import ntk, search
from cepaper.alpha import any_member, fit, sweeps
from cepaper.models import bottleneck as blocks
from cepaper.models.resnext import ResNeXtBottleneck
from cepaper.search import any_module, factories, networks

SHAPE = (256, 32, 32)


def bottleneck(m, n):
    """The paper's Fig. 5 block as a collegial module: ResNeXt ``m x n d``, 256 -> [mn, mn] -> 256."""
    return ResNeXtBottleneck(256, 256, m * n, groups=m)


class NTKMLP(nn.Module):
    """``m`` Eq. 3 MLPs of width ``n`` as 1x1 grouped Conv1d (block-diagonal), NTK parameterization."""

    def __init__(self, n0, m, n, depth):
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Conv1d(n0, m * n, 1, bias=False)]
            + [nn.Conv1d(m * n, m * n, 1, groups=m, bias=False) for _ in range(depth - 2)]
            + [nn.Conv1d(m * n, m, 1, groups=m, bias=False)]
        )
        for layer in self.layers:
            nn.init.normal_(layer.weight)
        self.scales = [math.sqrt(2 / n0)] + [math.sqrt(2 / n)] * (depth - 2) + [math.sqrt(1 / n)]

    def forward(self, x):
        h = x
        for i, (layer, s) in enumerate(zip(self.layers, self.scales)):
            h = s * layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h.mean(1, keepdim=True)


def mlp(m, n, n0=16, depth=3):
    return NTKMLP(n0, m, n, depth)


class LinearMLP(nn.Module):
    """``m`` members as one stack of block-diagonal Linear layers (``nn.Linear`` with bias)."""

    def __init__(self, n0, m, n):
        super().__init__()
        self.members = nn.ModuleList(
            [nn.Sequential(nn.Linear(n0, n), nn.ReLU(), nn.Linear(n, n), nn.ReLU(), nn.Linear(n, 1)) for _ in range(m)]
        )

    def forward(self, x):
        return torch.stack([f(x) for f in self.members]).mean(0)


# ---------------------------------------------------------------------------------------------- fan-ins


def fake_timer(clock):
    """A clock that advances by ``clock["next"]`` (the cost the module last set) at each reading."""

    def timer():
        clock["t"] += clock["next"]
        clock["next"] = 0.0
        return clock["t"]

    return timer


def test_bottleneck_sum_inv_fan_in_equals_search():
    fm, ns = any_module.FactoryModule(bottleneck, SHAPE), np.array([1, 2, 3, 10, 64, 128])
    np.testing.assert_allclose(fm.sum_inv_fan_in(ns), search.BottleneckDesign().sum_inv_fan_in(ns), rtol=1e-14)
    assert fm.fan_ins(10) == (256, 90, 10)  # BN has no fan-in: not counted
    hidden = any_module.FactoryModule(bottleneck, SHAPE, layers="hidden")  # drops 1/w_in, = fan_in_layers="width"
    np.testing.assert_allclose(
        hidden.sum_inv_fan_in(ns), search.BottleneckDesign(fan_in_layers="width").sum_inv_fan_in(ns)
    )
    assert fm.sum_inv_fan_in(np.array([[4, 8]])).shape == (1, 2)
    assert np.ndim(fm.sum_inv_fan_in(4)) == 0


def test_mlp_sum_inv_fan_in_hand_formula():
    ns = np.array([1, 5, 48])
    all_ = any_module.FactoryModule(mlp, (16, 1)).sum_inv_fan_in(ns)
    np.testing.assert_allclose(all_, 1 / 16 + 2 / ns, rtol=1e-14)  # 1/n0 + (L-1)/n, L = 3
    hidden = any_module.FactoryModule(mlp, (16, 1), layers="hidden").sum_inv_fan_in(ns)
    np.testing.assert_allclose(hidden, search.MLPDesign(16, 3).sum_inv_fan_in(ns), rtol=1e-14)
    lin = any_module.FactoryModule(lambda m, n: LinearMLP(16, m, n), (16,))
    assert lin.fan_ins(7) == (16, 7, 7)


def test_member_fan_ins_equals_fit_fan_ins():
    for module in (
        bottleneck(4, 8),
        LinearMLP(5, 2, 3),
        nn.Sequential(nn.Conv1d(6, 4, 3, groups=2), nn.Conv3d(4, 2, 2)),
    ):
        assert factories.member_fan_ins(module) == sweeps.fan_ins(module)


# ---------------------------------------------------------------------------------------------- costs


def test_bottleneck_params_and_flops_equal_search():
    fm, small = any_module.FactoryModule(bottleneck, SHAPE), any_module.FactoryModule(bottleneck, (256, 8, 8), batch=2)
    for m, n in itertools.product((1, 2, 4, 32), (1, 4, 10, 64)):
        assert fm.cost(n, "params", groups=m) == search.BottleneckDesign().cost(n, "params", groups=m)
        # FlopCounterMode counts 2 x MACs of the convs only (no BN, ReLU or residual sum)
        convs = search.BottleneckDesign(resolution=8, flops="2macs")
        assert small.cost(n, "flops", groups=m) == 2 * convs.cost(n, "flops", m)
    assert fm.cost(10, "flops", groups=4) == search.BottleneckDesign(flops="2macs").cost(10, "flops", groups=4)


def test_mlp_params_hand_count():
    for m, n in ((1, 5), (3, 7)):
        assert any_module.FactoryModule(mlp, (16, 1)).cost(n, "params", m) == m * (16 * n + n * n + n)
        assert any_module.FactoryModule(mlp, (16, 1)).cost(n, "params", m) == search.MLPDesign(16, 3).cost(
            n, "params", m
        )
        lin = any_module.FactoryModule(lambda m, n: LinearMLP(16, m, n), (16,))
        assert lin.cost(n, "params", m) == m * ((16 * n + n) + (n * n + n) + (n + 1))


def test_frozen_parameters_are_not_counted():
    def frozen(m, n):
        net = nn.Sequential(nn.Linear(3, n), nn.Linear(n, 1))
        net[0].weight.requires_grad_(False)
        return net

    assert any_module.FactoryModule(frozen, (3,)).cost(4, "params") == 4 + 4 + 1


def test_flops_hand_macs_conv_and_linear():
    x = torch.randn(2, 6, 9, 11)
    conv = nn.Conv2d(6, 8, (3, 5), stride=(1, 2), padding=(1, 0), groups=2)
    h_out, w_out = 9, (11 - 5) // 2 + 1
    assert any_module.flop_count(conv, x) == 2 * (2 * 8 * h_out * w_out * (6 // 2 * 3 * 5))
    assert any_module.flop_count(nn.Linear(7, 5), torch.randn(3, 7)) == 2 * 3 * 7 * 5
    fm = any_module.FactoryModule(lambda m, n: nn.Linear(7, m * n), (7,), batch=3)
    assert fm.cost(5, "flops", groups=2) == 2 * 3 * 7 * 10


# ---------------------------------------------------------------------------------------------- Algorithm 2


@pytest.mark.parametrize("objective", ["primal", "dual"])
def test_bottleneck_design_equals_search_block_curve(objective):
    ref = search.curve(search.BottleneckDesign(), 128, 1.6)
    d = any_module.design_module(bottleneck, SHAPE, (1, 128), objective, "params", alpha=1.6)
    for k in ("n", "beta", "sum_inv_fan_in", "var_k", "m_primal", "m_dual", "rho_dual", "var_primal"):
        np.testing.assert_allclose(d["curve"][k], ref[k], rtol=1e-12)
    assert d["curve"]["beta_s"] == ref["beta_s"]
    opt = search.optimum(ref, objective)
    assert d["n"] == opt["n"] == 10 == networks.design("resnext29", "1x128d", objective, alpha=1.6)["n"]
    assert d["m_curve"] == pytest.approx(opt["m"], rel=1e-12)
    assert d["strong_duality"]
    # step 6 on the module itself: factory(m, 10) costs the baseline 1x128 block
    fm = any_module.FactoryModule(bottleneck, SHAPE)
    c1, c2, base = fm.cost(10, "params", 1), fm.cost(10, "params", 2), fm.cost(128, "params", 1)
    if objective == "primal":
        assert d["m_exact"] == pytest.approx((base - (2 * c1 - c2)) / (c2 - c1), rel=1e-12)
        assert d["m"] == math.floor(d["m_exact"] + 0.5)
        assert fm.cost(10, "params", d["m"]) == d["params"]
    else:
        assert d["m"] == round(opt["m"])
    assert d["baseline_params"] == base == 214016


def test_factory_module_works_with_search_curve_and_optimum():
    fm = any_module.FactoryModule(bottleneck, (256, 8, 8))
    c = search.curve(fm, 32, 1.6, "flops", ns=range(1, 33))
    ref = search.curve(search.BottleneckDesign(resolution=8, flops="2macs"), 32, 1.6, "flops")
    np.testing.assert_allclose(c["beta"], ref["beta"], rtol=0)
    assert search.optimum(c, "primal") == search.optimum(ref, "primal")
    assert search.optimum(c, "dual") == search.optimum(ref, "dual")
    assert search.BUDGETS == ("params", "flops")  # search's own budgets are unchanged
    with pytest.raises(ValueError, match="budget must be one of params, flops"):
        search.curve(search.BottleneckDesign(), 64, 1.6, "latency")


# ---------------------------------------------------------------------------------------------- latency


class FakeClock:
    """A timer that advances by the next of ``steps`` at every call pair (start, stop)."""

    def __init__(self, durations):
        self.durations, self.t, self.calls = list(durations), 0.0, 0

    def __call__(self):
        if self.calls % 2:
            self.t += self.durations[(self.calls // 2) % len(self.durations)]
        self.calls += 1
        return self.t


def test_latency_median_and_iqr_from_fake_clock():
    durations = [0.004, 0.001, 0.003, 0.002, 0.005]
    rec = any_module.latency(nn.Linear(3, 2), torch.randn(4, 3), repeats=5, warmup=2, timer=FakeClock(durations))
    assert rec["median"] == pytest.approx(np.median(durations))
    assert rec["iqr"] == pytest.approx(np.percentile(durations, 75) - np.percentile(durations, 25))
    assert rec["times"] == pytest.approx(durations) and rec["repeats"] == 5


def test_latency_budget_through_design_curve():
    # cost(n, m) = n * m milliseconds from the fake clock: the cheapest member per unit is found
    clock = {"t": 0.0, "next": 0.0}

    class Timed(nn.Module):
        def __init__(self, m, n):
            super().__init__()
            self.lin, self.cost = nn.Linear(4, m * n), 1e-3 * m * n

        def forward(self, x):
            clock["next"] = self.cost
            return self.lin(x)

    timer = fake_timer(clock)

    fm = any_module.FactoryModule(Timed, (4,), repeats=3, warmup=1, timer=timer)
    c = search.curve(fm, 8, 1.0, "latency", m_tilde=1)
    np.testing.assert_allclose(c["beta"], 1e-3 * np.arange(1, 9))
    np.testing.assert_allclose(c["beta_iqr"], 0.0, atol=1e-15)
    d = any_module.design_module(Timed, (4,), (1, 8), "dual", "latency", alpha=1.0, module=fm)
    assert d["latency"]["median"] == pytest.approx(1e-3 * d["m"] * d["n"])
    assert d["baseline_latency"]["median"] == pytest.approx(8e-3)


def test_primal_latency_m_brackets_the_baseline_when_latency_is_not_affine_in_m():
    clock = {"t": 0.0, "next": 0.0}

    class Sqrt(nn.Module):  # latency sqrt(m n) ms: not affine in m
        def __init__(self, m, n):
            super().__init__()
            self.lin, self.cost = nn.Linear(2, m * n), 1e-3 * math.sqrt(m * n)

        def forward(self, x):
            clock["next"] = self.cost
            return self.lin(x)

    timer = fake_timer(clock)

    fm = any_module.FactoryModule(Sqrt, (2,), repeats=1, warmup=0, timer=timer)
    base = fm.cost(8, "latency", groups=1)
    for n in (1, 3, 5):
        m_exact = any_module.module_m(fm, n, base, "latency")
        lo = math.floor(m_exact)
        assert fm.cost(n, "latency", lo) <= base <= fm.cost(n, "latency", lo + 1)
        assert lo <= 8 / n <= lo + 1 and m_exact == pytest.approx(8 / n, abs=0.1)  # exact: 8 / n
    d = any_module.design_module(Sqrt, (2,), (1, 8), "primal", "latency", alpha=1.0, module=fm)
    assert d["m"] == math.floor(d["m_exact"] + 0.5) and abs(d["m"] - 8 / d["n"]) <= 1


def test_latency_real_clock_is_positive():
    rec = any_module.latency(nn.Linear(8, 8), torch.randn(2, 8), repeats=3, warmup=1)
    assert rec["median"] > 0 and rec["iqr"] >= 0


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_errors_name_the_argument():
    def broken(m, n):
        raise RuntimeError("no such layer")

    with pytest.raises(ValueError, match=r"factory: factory\(1, 4\) raised RuntimeError: no such layer"):
        any_module.FactoryModule(broken, (3,)).cost(4)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        any_module.FactoryModule(bottleneck, SHAPE).cost(0)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        any_module.FactoryModule(bottleneck, SHAPE).sum_inv_fan_in([4, 0])
    with pytest.raises(ValueError, match="budget must be one of params, flops, latency, got 'energy'"):
        any_module.FactoryModule(bottleneck, SHAPE).cost(4, "energy")
    with pytest.raises(ValueError, match="budget must be one of params, flops, latency"):
        any_module.design_module(bottleneck, SHAPE, (1, 8), budget="energy")
    with pytest.raises(ValueError, match="module: ReLU has no weight layers"):
        any_module.FactoryModule(lambda m, n: nn.ReLU(), (3,)).sum_inv_fan_in(4)
    with pytest.raises(ValueError, match="factory must be a callable"):
        any_module.FactoryModule("resnext", (3,))
    with pytest.raises(ValueError, match=r"factory: factory\(1, 4\) must return a torch.nn.Module, got int"):
        any_module.FactoryModule(lambda m, n: 3, (3,)).cost(4)
    with pytest.raises(ValueError, match="input_shape entry must be an integer >= 1, got 0"):
        any_module.FactoryModule(bottleneck, (256, 0, 32))
    with pytest.raises(ValueError, match="baseline must be 'CxD'"):
        any_module.design_module(bottleneck, SHAPE, "one by 64")
    with pytest.raises(ValueError, match="objective must be one of primal, dual"):
        any_module.design_module(bottleneck, SHAPE, (1, 8), objective="best")
    with pytest.raises(ValueError, match="has no trainable parameters"):
        any_module.FactoryModule(lambda m, n: nn.Linear(3, n).requires_grad_(False), (3,)).cost(4)
    with pytest.raises(ValueError, match="readout must be one of center, mean, random"):
        any_member.fit_member_alpha(mlp, (16, 1), readout="max")


# ---------------------------------------------------------------------------------------------- Algorithm 1


def test_inputs_and_readouts_equal_the_block_and_mlp_ones():
    torch.testing.assert_close(
        any_member.member_inputs((8, 3, 3), 2, 0.5, 7), blocks.block_inputs(8, 3, 2, 0.5, seed=7), rtol=0, atol=0
    )
    torch.testing.assert_close(
        any_member.member_inputs((16,), 2, 0.3, 1), sweeps.mlp_inputs(16, 2, 0.3, 1), rtol=0, atol=0
    )
    center = torch.zeros(8, 5, 5)
    center[0, 2, 2] = 1.0  # the Fig. 5 block's centre unit: channel 0 at the centre pixel
    torch.testing.assert_close(ntk.readout_vector("center", (8, 5, 5)), center, rtol=0, atol=0)
    torch.testing.assert_close(ntk.readout_vector("mean", (8, 5, 5)), torch.full((8, 5, 5), 1 / 200**0.5))
    assert torch.equal(ntk.readout_vector("random", (8, 5, 5), 3), ntk.readout_vector("random", (8, 5, 5), 3))
    assert any_member.READOUTS is ntk.READOUTS and any_member.readout_vector is ntk.readout_vector


def test_readout_member_is_scalar_inner_product():
    member, v = nn.Conv2d(3, 4, 3, padding=1), ntk.readout_vector("random", (4, 5, 5), seed=2)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(any_member.Readout(member, v)(x), (member(x) * v).flatten(1).sum(1))


def test_member_draws_are_seeded_and_independent():
    v = ntk.readout_vector("center", (1, 1))
    g = torch.Generator().manual_seed(5)
    a, b = any_member.member_draw(mlp, 4, g, v), any_member.member_draw(mlp, 4, g, v)
    a2 = any_member.member_draw(mlp, 4, torch.Generator().manual_seed(5), v)
    assert not torch.equal(a.member.layers[0].weight, b.member.layers[0].weight)
    assert torch.equal(a.member.layers[0].weight, a2.member.layers[0].weight)


def test_member_alpha_agrees_with_the_library_mlp_fit():
    """NTK-parameterized MLP factory (grouped Conv1d) vs fit.measure_alpha('mlp'): same widths, trials,
    seed, inputs and s(n); different weight draws, so the two alphas agree within their intervals."""
    widths, trials = (2, 4, 8, 16), 300
    mine = any_member.fit_member_alpha(mlp, (16, 1), widths, trials, layers="hidden", progress=False)
    ref = fit.measure_alpha("mlp", widths=widths, trials=trials, n_in=16, depth=3, n_boot=200)
    np.testing.assert_allclose(mine["fits"]["diag"]["term"], ref["fits"]["diag"]["term"], rtol=1e-14)
    np.testing.assert_allclose(mine["fits"]["diag"]["term"], [sweeps.mlp_term(n, 3, 16) for n in widths])
    lo, hi = mine["alpha_ci"]
    rlo, rhi = ref["alpha_ci"]
    assert lo < mine["alpha"] < hi and max(lo, rlo) < min(hi, rhi)  # intervals overlap
    assert abs(mine["alpha"] - ref["alpha"]) < 0.5 * ((hi - lo) + (rhi - rlo))
    assert mine["readout"] == "center" and mine["widths"] == list(widths)


# ---------------------------------------------------------------------------------------------- CLI

FACTORY_FILE = """
from cepaper.models.resnext import ResNeXtBottleneck

def block(m, n):
    return ResNeXtBottleneck(256, 256, m * n, groups=m)

def small(m, n):
    return ResNeXtBottleneck(16, 16, m * n, groups=m)
"""


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "my_block.py"
    path.write_text(FACTORY_FILE)
    return path


def cli_json(capsys, *argv):
    from cepaper import cli

    assert cli.main([*argv, "--json"]) == 0
    import json

    return json.loads(capsys.readouterr().out)


def cli_fails(capsys, *argv):
    from cepaper import cli

    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    assert e.value.code == 2
    return capsys.readouterr().err


def test_cli_params_module(capsys, factory_file):
    r = cli_json(capsys, "params", "--module", f"{factory_file}:block", "--config", "4x16", "--input-shape", "256,8,8")
    assert r["params"] == search.BottleneckDesign().cost(16, "params", groups=4)
    assert r["flops"] == search.BottleneckDesign(resolution=8, flops="2macs").cost(16, "flops", groups=4)
    assert r["sum_inv_fan_in"] == pytest.approx(float(search.BottleneckDesign().sum_inv_fan_in(16)), rel=1e-14)
    r = cli_json(capsys, "params", "--module", "torch.nn:Linear", "--config", "3x5", "--input-shape", "3")
    assert (r["params"], r["flops"], r["member_fan_ins"]) == (3 * 5 + 5, 2 * 3 * 5, [1])  # Linear(m, n): member 1 -> n


def test_cli_design_module_equals_library(capsys, factory_file):
    for objective in ("primal", "dual"):
        r = cli_json(
            capsys,
            "design",
            "--module",
            f"{factory_file}:block",
            "--input-shape",
            "256,32,32",
            "--baseline",
            "1x128",
            "--objective",
            objective,
            "--alpha",
            "1.6",
        )
        d = any_module.design_module(bottleneck, SHAPE, (1, 128), objective, alpha=1.6)
        assert (r["n"], r["m"], r["config"]) == (d["n"], d["m"], d["config"]) == (10, d["m"], f"{d['m']}x10")
        assert "curve" not in r
    from cepaper import cli

    assert (
        cli.main(
            [
                "design",
                "--module",
                f"{factory_file}:small",
                "--input-shape",
                "16,4,4",
                "--baseline",
                "1x8",
                "--budget",
                "flops",
            ]
        )
        == 0
    )
    assert "optimum n" in capsys.readouterr().out


def test_cli_design_module_latency_on_cpu(capsys, factory_file):
    r = cli_json(
        capsys,
        "design",
        "--module",
        f"{factory_file}:small",
        "--input-shape",
        "16,4,4",
        "--baseline",
        "1x4",
        "--budget",
        "latency",
        "--objective",
        "dual",
        "--alpha",
        "1.6",
        "--curve",
        "--repeats",
        "3",
    )
    assert r["latency"]["median"] > 0 and len(r["curve"]["beta_iqr"]) == 4


def test_cli_module_errors(capsys, factory_file, tmp_path):
    base = ["--input-shape", "256,8,8", "--config", "1x4"]
    assert "module: file nowhere.py does not exist" in cli_fails(capsys, "params", "--module", "nowhere.py:f", *base)
    assert "has no function 'nope'" in cli_fails(capsys, "params", "--module", f"{factory_file}:nope", *base)
    assert "module must be FILE.py:FUNC" in cli_fails(capsys, "params", "--module", str(factory_file), *base)
    assert "cannot import 'no_such_pkg'" in cli_fails(capsys, "params", "--module", "no_such_pkg:f", *base)
    err = cli_fails(capsys, "params", "--module", "cepaper.models.resnext:ResNeXtBottleneck", *base)
    assert "--module cepaper.models.resnext:ResNeXtBottleneck: factory(1, 4) raised TypeError" in err and "w_b" in err
    assert "one of --arch or --module is required" in cli_fails(capsys, "params", "--config", "1x4")
    assert "--module needs --input-shape" in cli_fails(
        capsys, "params", "--module", f"{factory_file}:block", "--config", "1x4"
    )
    assert "either --arch or --module" in cli_fails(
        capsys, "params", "--arch", "resnext29", "--module", f"{factory_file}:block", *base
    )
    assert "--input-shape: must be comma-separated" in cli_fails(
        capsys, "params", "--module", f"{factory_file}:block", "--input-shape", "256,x", "--config", "1x4"
    )
    assert "--budget latency needs --module" in cli_fails(
        capsys, "design", "--arch", "resnext29", "--baseline", "1x64d", "--budget", "latency"
    )


def test_cli_module_paths_that_are_not_python_files(capsys, tmp_path):
    """Issue: a folder passed as FILE said "does not exist", a non-.py file was an internal error."""
    base = ["--input-shape", "256,8,8", "--config", "1x4"]
    (tmp_path / "pkg.py").mkdir()
    (tmp_path / "notes.txt").write_text("def f(m, n): pass\n")
    err = cli_fails(capsys, "params", "--module", f"{tmp_path / 'pkg.py'}:f", *base)
    assert f"module: {tmp_path / 'pkg.py'} is a folder, not a file (give FILE.py:FUNC)" in err
    err = cli_fails(capsys, "params", "--module", f"{tmp_path}:f", *base)
    assert "is a folder, not a file" in err
    err = cli_fails(capsys, "params", "--module", f"{tmp_path / 'notes.txt'}:f", *base)
    assert f"module: {tmp_path / 'notes.txt'} is not a Python file (its name must end in .py" in err


FACTORY_FAULTS = {
    "import-exit": ("import sys\nsys.exit(3)\ndef f(m, n): pass\n", "importing {file} raised SystemExit(3)"),
    "import-raise": ("raise RuntimeError('no GPU here')\n", "importing {file} raised RuntimeError: no GPU here"),
    "call-exit": ("def f(m, n):\n    exit(0)\n", ") raised SystemExit(0)"),
    "call-raise": ("def f(m, n):\n    raise KeyError('w')\n", ") raised KeyError: 'w'"),
}


@pytest.mark.parametrize("fault", FACTORY_FAULTS)
@pytest.mark.parametrize("command", ["params", "design", "fit-alpha"])
def test_a_factory_that_exits_or_raises_is_one_clear_line(capsys, tmp_path, fault, command):
    """Issue: a factory that called sys.exit ended `cepaper` with its own status and no message; one
    that raised at import was an internal error. Either is one line naming the factory (its file, at
    import), status 2."""
    source, message = FACTORY_FAULTS[fault]
    file = tmp_path / "bad.py"
    file.write_text(source)
    argv = {
        "params": ["--config", "1x4"],
        "design": ["--baseline", "1x4", "--alpha", "1.6"],
        "fit-alpha": ["--trials", "2", "--widths", "4", "8"],
    }[command]
    err = cli_fails(capsys, command, "--module", f"{file}:f", "--input-shape", "16,4,4", *argv)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message.format(file=file) in err and (fault.startswith("import") or f"--module {file}:f: " in err), err


def test_a_package_factory_that_raises_at_import_is_one_clear_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "badpkg_factory.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    err = cli_fails(capsys, "params", "--module", "badpkg_factory:f", "--input-shape", "16,4,4", "--config", "1x4")
    assert "module: importing badpkg_factory raised RuntimeError: no GPU here" in err and "internal" not in err, err


def test_a_factorys_prints_go_to_stderr_so_json_stays_json(capsys, tmp_path):
    """Issue: a factory that printed (at import or when called) broke `--json` output."""
    from cepaper import cli

    file = tmp_path / "chatty.py"
    file.write_text(
        f"print('importing')\n{FACTORY_FILE}\ndef chatty(m, n):\n    print('building', m, n)\n    return small(m, n)\n"
    )
    argv = ["--module", f"{file}:chatty", "--input-shape", "16,4,4", "--json"]
    for command, more in (("params", ["--config", "2x4"]), ("design", ["--baseline", "1x4", "--alpha", "1.6"])):
        assert cli.main([command, *argv, *more]) == 0
        out, err = capsys.readouterr()
        assert isinstance(json.loads(out), dict) and "importing" in err and "building 1 4" in err, command


def test_a_forward_that_raises_is_a_forward_error_naming_the_input():
    """Issue 24: an input of the wrong shape ended as torch's raw message (an internal error, status 1)."""
    fm = any_module.FactoryModule(lambda m, n: ResNeXtBottleneck(16, 16, m * n, groups=m), (3, 4, 4))
    raised = r"input_shape \(3, 4, 4\)\) on device cpu raised RuntimeError"
    with pytest.raises(factories.ForwardError, match=raised) as e:
        fm.cost(4, "flops")
    assert e.value.input_shape == (3, 4, 4) and e.value.device == "cpu" and "16 channels" in e.value.raised
    with pytest.raises(factories.ForwardError, match="raised SystemExit"):
        factories.run_forward(Exits(), torch.zeros(2, 3))


class Exits(nn.Module):
    def forward(self, x):
        raise SystemExit(4)


@pytest.mark.parametrize(
    "command, argv",
    [
        ("params", ["--config", "2x4"]),
        ("design", ["--baseline", "1x4", "--alpha", "1.6", "--budget", "flops"]),
        ("fit-alpha", ["--trials", "2", "--widths", "4"]),
    ],
)
def test_a_wrong_input_shape_names_the_flag_and_what_was_tried(capsys, factory_file, command, argv):
    """Issue 24: an input-shape mismatch was torch's raw message with exit 1; now one line naming
    --input-shape, the shape tried, --device and what the forward raised, status 2."""
    err = cli_fails(capsys, command, "--module", f"{factory_file}:small", "--input-shape", "3,4,4", *argv)
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert f"cepaper {command}: error: --input-shape 3,4,4 with --device cpu: the module's forward" in err, err
    assert "raised RuntimeError: " in err and "16 channels" in err, err


@pytest.mark.parametrize(
    "device, message",
    [("foo", "--device must be 'cpu', 'cuda' or 'cuda:<index>', got 'foo'"), ("cuda", "--device 'cuda' asked for")],
)
@pytest.mark.parametrize("command", ["params", "design", "fit-alpha"])
def test_a_factorys_device_goes_through_trains_device_check(capsys, factory_file, command, device, message):
    """Issue 24: `--device cuda`/`--device foo` with --module skipped the GPU check of train and fit-alpha and
    ended as torch's raw message, status 1."""
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is here: --device cuda is valid")
    more = {"params": ["--config", "2x4"], "design": ["--baseline", "1x4"], "fit-alpha": ["--trials", "2"]}[command]
    spec = ["--module", f"{factory_file}:small", "--input-shape", "16,4,4", "--device", device]
    err = cli_fails(capsys, command, *spec, *more)
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_a_factory_that_leaves_a_thread_running_does_not_keep_the_command_alive(tmp_path):
    """Issue 24: a non-daemon thread started by the factory kept the command alive forever; now the command
    ends with its own status and one warning naming the factory, and --json stays JSON."""
    import subprocess
    import sys
    from pathlib import Path

    file = tmp_path / "threads.py"
    file.write_text(
        f"import threading, time\n{FACTORY_FILE}\n"
        "def spawn(m, n):\n    threading.Thread(target=time.sleep, args=(600,)).start()\n    return small(m, n)\n"
    )
    source = Path(__file__).resolve().parents[2]
    run = lambda *argv: subprocess.run(
        [sys.executable, "-m", "cepaper", *argv, "--module", f"{file}:spawn"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=source,
        env={"PYTHONPATH": str(source), "CEPAPER_RESULTS": str(tmp_path)},
    )
    ok = run("params", "--config", "2x4", "--input-shape", "16,4,4", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["params"] > 0, ok.stderr
    assert f"cepaper params: warning: --module {file}:spawn left " in ok.stderr, ok.stderr
    bad = run("design", "--baseline", "1x4", "--budget", "flops", "--input-shape", "3,4,4")  # fails after a build
    assert bad.returncode == 2 and "--input-shape 3,4,4" in bad.stderr and "left " in bad.stderr, bad.stderr


@pytest.mark.parametrize("readout", any_member.READOUTS)
def test_member_alpha_on_a_conv_factory_runs_every_readout(readout, capsys):
    def conv(m, n):  # the Fig. 5 branch with biases, no BN, no output ReLU
        return nn.Sequential(
            nn.Conv2d(8, m * n, 1),
            nn.ReLU(),
            nn.Conv2d(m * n, m * n, 3, padding=1, groups=m),
            nn.ReLU(),
            nn.Conv2d(m * n, 8, 1),
            nn.BatchNorm2d(8),
        )

    r = any_member.fit_member_alpha(conv, (8, 3, 3), widths=(2, 4), trials=8, readout=readout, n_boot=20, progress=True)
    assert r["readout"] == readout and np.isfinite(r["alpha"]) and len(r["alpha_ci"]) == 2
    np.testing.assert_allclose(r["fits"]["diag"]["term"], [1 / 8 + 1 / (9 * n) + 1 / n for n in (2, 4)])
    assert "alpha sweep" in capsys.readouterr().err  # the tqdm bar


# --- torchvision families by name ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, arch",
    [
        ("resnet50", "resnext50"),
        ("resnext50_32x4d", "resnext50"),
        ("wide_resnet50_2", "resnext50"),
        ("resnext101_32x8d", "resnext101"),
    ],
)
def test_torchvision_factory_counts_equal_complexity(name, arch):
    from cepaper import complexity

    factory = factories.load_factory(f"torchvision:{name}")
    assert isinstance(factory, factories.TorchvisionFactory) and repr(factory) == f"torchvision:{name}"
    for m, n in [(1, 64), (32, 4), (12, 10), (3, 7)][: 4 if arch == "resnext50" else 1]:
        assert factories.param_count(factory(m, n)) == complexity.complexity(arch, f"{m}x{n}d")["params"]
    assert factories.torchvision_factory(name).baseline == factories.TORCHVISION[name][1]


def test_torchvision_factory_flops_and_stages():
    import torchvision

    from cepaper import complexity

    fm = any_module.FactoryModule(factories.load_factory("torchvision:resnet50"), (3, 64, 64))
    assert fm.cost(4, "flops", 32) == complexity.complexity("resnext50", "32x4d", resolution=64)["flops"]
    full = torchvision.models.resnext50_32x4d()
    for k in (1, 4):
        stage = factories.load_factory(f"torchvision:resnext50_32x4d:layer{k}")
        assert factories.param_count(stage(32, 4)) == factories.param_count(getattr(full, f"layer{k}"))
    x = torch.randn(1, 64, 8, 8)
    assert factories.load_factory("torchvision:resnet50:layer1")(2, 3)(x).shape == (1, 256, 8, 8)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("torchvision:resnet18", "must be one of resnet50"),
        ("torchvision:resnet50:layer9", "layer1..layer4"),
        ("torchvision:resnet50:", "torchvision stage must be layer1..layer4, got '' in 'torchvision:resnet50:'"),
    ],
)
def test_torchvision_factory_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        factories.load_factory(spec)


# --- batched draws of the member (Algorithm 1 on any factory) -------------------------------------


class ItemGate(nn.Module):
    """A member ``vmap`` cannot batch (``.item()`` in its forward): the sampler falls back to one NTK per draw."""

    def __init__(self, m, n):
        super().__init__()
        self.a, self.b = nn.Linear(4, m * n), nn.Linear(m * n, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h if h.sum().item() >= 0 else -h)


@pytest.mark.parametrize(
    "factory, shape",
    [
        (lambda m, n: ResNeXtBottleneck(8, 8, m * n, groups=m), (8, 3, 3)),  # BN (eval), grouped 3x3, ReLU
        (lambda m, n: nn.Sequential(nn.Linear(5, m * n), nn.Tanh(), nn.Linear(m * n, 1)), (5,)),
        (mlp, (16, 1)),
    ],
)
def test_batched_member_ntk_equals_naive_autograd_per_draw(factory, shape):
    """The vmap over draws gives each draw's NTK: against cepaper.ntk.naive_ntk (one autograd.grad per
    input) on the very same draws, which the sampler takes from the generator in the same order."""
    from cepaper import ntk

    x = any_member.member_inputs(shape, 3, 0.5, 1)
    with torch.no_grad():
        out = factories.build(factory, 1, 3)(x)
    v = ntk.readout_vector("random", tuple(out.shape[1:]), 2)
    k = any_member.member_ntk_sampler(factory, 3, x, v)(5, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    ref = torch.stack([ntk.naive_ntk(any_member.member_draw(factory, 3, g, v), x) for _ in range(5)])
    assert k.shape == (5, 3, 3)
    torch.testing.assert_close(k, ref, rtol=1e-5, atol=1e-6)
    loop = any_member.member_ntk_sampler(factory, 3, x, v, "loop")(5, torch.Generator().manual_seed(7))
    torch.testing.assert_close(loop, ref, rtol=1e-5, atol=1e-6)


def test_member_sampler_falls_back_to_one_ntk_per_draw():
    from cepaper import ntk

    x = any_member.member_inputs((4,), 2, 0.5, 0)
    v = ntk.readout_vector("center", (1,), 0)
    with pytest.warns(UserWarning, match="cannot be batched over draws"):
        k = any_member.member_ntk_sampler(ItemGate, 3, x, v)(4, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    ref = torch.stack([ntk.naive_ntk(any_member.member_draw(ItemGate, 3, g, v), x) for _ in range(4)])
    torch.testing.assert_close(k, ref, rtol=1e-5, atol=1e-6)


def test_member_alpha_batched_equals_loop_and_chunks_do_not_change_draws(monkeypatch):
    """Same draws whatever the method or the chunk size: the fits agree to float32 rounding."""
    conv = lambda m, n: nn.Sequential(nn.Conv2d(4, m * n, 1), nn.ReLU(), nn.Conv2d(m * n, 2, 3))
    kw = dict(widths=(2, 4), trials=12, n_boot=20, progress=False)
    a = any_member.fit_member_alpha(conv, (4, 3, 3), **kw)
    b = any_member.fit_member_alpha(conv, (4, 3, 3), method="loop", **kw)
    monkeypatch.setattr(any_member, "MEMBER_CHUNK_MAX", 5)
    c = any_member.fit_member_alpha(conv, (4, 3, 3), **kw)
    for r in (b, c):
        np.testing.assert_allclose(r["fits"]["diag"]["second"], a["fits"]["diag"]["second"], rtol=1e-5)
        assert r["alpha"] == pytest.approx(a["alpha"], rel=1e-4, abs=1e-6)


def test_member_chunk_counts_weights_and_activations():
    member = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 1))
    x = torch.zeros(2, 10)
    per = (2 + 2) * (10 * 20 + 20 + 20 + 1) + 3 * (2 * 20 + 2 * 20 + 2 * 1 + 2 * 1)  # 3 x every module's output
    assert any_member.member_chunk(member, x) == min(any_member.MEMBER_CHUNK_MAX, any_member.MEMBER_CHUNK_FLOATS // per)


# --- factory(m, n) must be m members factory(1, n) ------------------------------------------------


def deeper_when_m_gt_1(m, n):
    extra = [nn.Linear(m * n, m * n), nn.ReLU()] if m > 1 else []
    return nn.Sequential(nn.Linear(4, m * n), nn.ReLU(), *extra, nn.Linear(m * n, 1))


@pytest.mark.parametrize(
    "factory, message",
    [
        (
            lambda m, n: nn.Sequential(nn.Linear(4, m * n), nn.ReLU() if m == 1 else nn.Tanh(), nn.Linear(m * n, 1)),
            r"their layers differ: \('1', 'ReLU'\) at m = 1 vs \('1', 'Tanh'\) at m = 3",
        ),
        (
            lambda m, n: nn.Sequential(nn.Linear(4, m * n + (m > 1)), nn.ReLU(), nn.Linear(m * n + (m > 1), 1)),
            r"parameter 0.weight has shape \(13, 4\) at m = 3 and \(4, 4\) at m = 1",
        ),
        (
            lambda m, n: nn.Sequential(nn.Conv2d(4, m * n, 1), nn.ReLU(), nn.Conv2d(m * n, m * n, 3)),  # not grouped
            r"parameter 2.weight has shape \(12, 12, 3, 3\) at m = 3 and \(4, 4, 3, 3\) at m = 1",
        ),
        (deeper_when_m_gt_1, r"it has 3 Linear layer\(s\) and factory\(1, 4\) 2: neither shared nor one per member"),
        (
            lambda m, n: nn.Sequential(*[nn.Linear(4, n) for _ in range(m)], *[nn.Tanh() for _ in range(m * m)]),
            r"it has 9 Tanh layer\(s\) and factory\(1, 4\) 1",
        ),
        (
            lambda m, n: nn.ModuleList([nn.Linear(4, m * n) for _ in range(m)]),  # members wider with m
            r"its 180 trainable parameters are not factory\(1, 4\)'s 20 plus 2 more members of at most 20 each "
            r"\(got 80 per added member\)",
        ),
    ],
)
def test_a_member_that_changes_with_m_is_an_error(factory, message):
    fm = any_module.FactoryModule(factory, (4,) if "Conv" not in repr(factory(1, 4)) else (4, 5, 5))
    assert fm.cost(4, "params", 1) > 0  # m = 1 alone is a module like any other
    with pytest.raises(
        ValueError,
        match=r"factory: factory\(3, 4\) must be 3 members factory\(1, 4\) differing "
        r"only in width, but " + message,
    ):
        fm.cost(4, "params", groups=3)


def test_members_stacked_shared_or_replicated_pass_the_check():
    """Grouped layers with a shared norm (the Fig. 5 block), replicated members, and both mixed."""

    class Mixed(nn.Module):
        def __init__(self, m, n):
            super().__init__()
            self.members = nn.ModuleList([nn.Linear(4, n) for _ in range(m)])
            self.head = nn.Linear(n, 1)

        def forward(self, x):
            return self.head(sum(f(x) for f in self.members))

    for factory, shape in ((bottleneck, (256, 4, 4)), (lambda m, n: LinearMLP(3, m, n), (3,)), (Mixed, (4,))):
        fm = any_module.FactoryModule(factory, shape)
        c1, c2, c5 = (fm.cost(4, "params", m) for m in (1, 2, 5))
        assert c5 - c1 == 4 * (c2 - c1) > 0  # affine in m, as the check promises


def test_cli_member_that_changes_with_m_exits_2(tmp_path, capsys):
    path = tmp_path / "bad_block.py"
    path.write_text(
        "from torch import nn\n\ndef dense(m, n):\n"
        "    return nn.Sequential(nn.Conv1d(8, m * n, 1), nn.ReLU(), nn.Conv1d(m * n, m * n, 1))\n"
    )
    err = cli_fails(capsys, "params", "--module", f"{path}:dense", "--config", "4x2", "--input-shape", "8,3")
    assert f"--module {path}:dense: factory(4, 2) must be 4 members factory(1, 2) differing only in width" in err
    err = cli_fails(capsys, "design", "--module", f"{path}:dense", "--baseline", "1x8", "--input-shape", "8,3")
    assert "must be 2 members factory(1, " in err  # step 6 solves m through factory(2, n)


@pytest.mark.parametrize("objective, what", [("primal", "the baseline's params"), ("dual", "the baseline's Var")])
def test_a_budget_no_integer_m_meets_is_an_error(objective, what):
    """Widths whose single member already costs more than the baseline 1x4 (already raised by networks.integer_m)."""
    small = lambda m, n: ResNeXtBottleneck(16, 16, m * n, groups=m)
    with pytest.raises(
        ValueError,
        match=rf"budget: no integer m >= 1 meets {what}.*use a larger baseline or a "
        rf"smaller n",
    ):
        any_module.design_module(small, (16, 4, 4), (1, 4), objective, alpha=1.6, ns=[64, 128])


def test_an_all_zero_ntk_stops_the_fit_and_names_another_read_out():
    post_relu = lambda m, n: ResNeXtBottleneck(16, 16, m * n, groups=m)  # centre unit off in every draw
    calls = []
    real = any_member.member_ntk_sampler

    def counted(factory, n, *a, **k):
        calls.append(n)
        return real(factory, n, *a, **k)

    kw = dict(widths=(2, 4, 8), trials=4, n_boot=20, progress=False)
    import unittest.mock

    with unittest.mock.patch.object(any_member, "member_ntk_sampler", counted):
        with pytest.raises(ValueError, match=r"NTK is exactly 0 in all 4 draws at width 2 with the 'center' read-out"):
            any_member.fit_member_alpha(post_relu, (16, 3, 3), **kw)
    assert set(calls) == {2}  # stopped at the first width, not after the whole sweep
    with pytest.raises(ValueError, match=r"use another read-out, readout='center' or readout='random'"):
        any_member.check_nonzero_ntk(np.zeros((3, 2, 2)), 5, "mean")
    any_member.check_nonzero_ntk(np.array([[[0.0, 0.0], [0.0, 1e-30]]]), 5, "mean")  # one non-zero entry: fine
    r = any_member.fit_member_alpha(post_relu, (16, 3, 3), readout="mean", **kw)
    assert np.isfinite(r["alpha"]) and r["zero_draws"] == [0.0, 0.0, 0.0]


@pytest.mark.filterwarnings("ignore:the draws at width index")  # planted zeros: a heavy tail of K^2
def test_zero_draws_counts_the_draws_whose_entry_is_exactly_zero(monkeypatch):
    """A sampler that plants K = 0 in every third draw: zero_draws is that share, per width."""

    def planted(factory, n, x, v, method="batched", init="factory"):
        def sample(t, generator):
            k = 1.0 + torch.rand(t, 2, 2, generator=generator)
            k[torch.randint(0, 3, (t,), generator=generator) == 0] = 0.0
            return k

        return sample

    monkeypatch.setattr(any_member, "member_ntk_sampler", planted)
    r = any_member.fit_member_alpha(mlp, (16, 1), widths=(2, 4), trials=300, n_boot=20, progress=False)
    assert len(r["zero_draws"]) == 2 and all(0.25 < share < 0.42 for share in r["zero_draws"])  # 1/3 of 300


# --- latency: the median, the verdict, and what the timings' spread leaves open --------------------


class PlantedClock:
    """A timer that returns planted durations: ``table(m, n)`` lists the seconds of ``factory(m, n)``'s
    passes, taken in turn (cycling) at each (start, stop) pair while that module runs."""

    def __init__(self, table):
        self.table, self.t, self.calls, self.running, self.taken = table, 0.0, 0, None, {}

    def __call__(self):
        if self.calls % 2:
            times, k = self.table(*self.running), self.taken.get(self.running, 0)
            self.t += times[k % len(times)]
            self.taken[self.running] = k + 1
        self.calls += 1
        return self.t


class Planted(nn.Module):
    """``m`` members ``4 -> n -> 1`` (1x1 Conv1d, the second grouped): fan-ins ``(4, n)``, so Eq. 9's sum is
    ``1/4 + 1/n``; its forward tells ``clock`` which ``(m, n)`` runs."""

    def __init__(self, m, n, clock):
        super().__init__()
        self.a, self.b = nn.Conv1d(4, m * n, 1), nn.Conv1d(m * n, m, 1, groups=m)
        self.key, self.clock = (m, n), clock

    def forward(self, x):
        self.clock.running = self.key
        return self.b(torch.relu(self.a(x)))


def planted_design(table, objective="primal", ns=(1, 2, 4, 8), repeats=5):
    clock = PlantedClock(table)
    factory = lambda m, n: Planted(m, n, clock)
    fm = any_module.FactoryModule(factory, (4, 1), repeats=repeats, warmup=0, timer=clock)
    return any_module.design_module(factory, (4, 1), (1, 8), objective, "latency", alpha=1.0, ns=ns, module=fm), fm


MS = {1: 1.0, 2: 1.0, 4: 1.5, 8: 3.0}  # milliseconds per member: the median of every width's timings


def test_latency_is_the_median_of_skewed_timings_and_decides_the_optimum():
    """One pass in five of width 4 is 30x slower: the mean would move the optimum to n = 2, the median keeps 4."""
    spike = {4: 30.0}
    table = lambda m, n: [1e-3 * m * MS[n] * f for f in (1, 1, 1, 1, spike.get(n, 1.0))]
    var = np.expm1(1 / 4 + 1 / np.array([1, 2, 4, 8]))  # Eq. 9, alpha = 1
    medians = np.array([np.median(table(1, n)) for n in (1, 2, 4, 8)])
    means = np.array([np.mean(table(1, n)) for n in (1, 2, 4, 8)])
    assert (1, 2, 4, 8)[np.argmin(var * medians)] == 4 and (1, 2, 4, 8)[np.argmin(var * means)] == 2  # discriminates
    d, _ = planted_design(table)
    np.testing.assert_allclose(d["curve"]["beta"], medians, rtol=1e-12)
    assert d["n"] == 4 and d["m"] == 2 and d["m_exact"] == pytest.approx(2.0)  # 2 x 1.5 ms = the baseline's 3 ms
    assert d["latency"]["median"] == pytest.approx(3e-3) and d["baseline_latency"]["median"] == pytest.approx(3e-3)
    rec = any_module.latency(nn.Linear(2, 2), torch.randn(1, 2), repeats=5, warmup=0, timer=FakeClock([1, 1, 1, 1, 30]))
    assert rec["median"] == 1 and np.mean(rec["times"]) == 6.8 and rec["iqr"] == 0
    assert d["verdict"] == "optimum" and d["improves"] and d["var_ratio"] == pytest.approx(var[2] / 2 / var[3])
    assert d["timings_resolved"] and d["notes"] == []


def test_a_latency_design_that_does_not_beat_the_baseline_says_no_improvement_found():
    """Narrow members are cheap alone but any m > 1 pays 2.5 ms more (latency is not affine in m): the curve
    picks n = 1 (m_p = 15), step 6 affords m = 3 at the baseline's 3 ms, and Var(K) ends 1.8x the baseline's."""
    from cepaper.cli import design as cli_design

    ms = {1: 0.2, 2: 1.0, 4: 1.5, 8: 3.0}
    table = lambda m, n: [1e-3 * (m * ms[n] + 2.5 * (m > 1))]
    d, _ = planted_design(table, repeats=3)
    var = np.expm1(1 / 4 + 1 / np.array([1.0, 8.0]))
    assert (d["n"], d["m"], d["m_exact"]) == (1, 3, pytest.approx(2.5))
    assert d["var_ratio"] == pytest.approx(var[0] / 3 / var[1]) and d["var_ratio"] > 1
    assert not d["improves"] and d["verdict"] == "no improvement found"
    assert d["notes"][0].startswith("no width searched beats the baseline 1x8: at the best, 3x1, Var(K) is 1.8")
    text = cli_design.format_module_design(d | {"module": "planted"})
    assert "no improvement found" in text and "best width searched  1" in text and "optimum" not in text
    assert "latency IQR" in text and "baseline 0 s" in text


def test_the_timings_spread_is_named_when_it_exceeds_the_differences_that_decide():
    spread = lambda m, n: [1e-3 * m * MS[n] * f for f in (0.5, 0.75, 1.0, 1.25, 5.0)]  # IQR = median / 2
    d, fm = planted_design(spread)
    assert (d["n"], d["m"]) == (4, 2) and d["verdict"] == "optimum" and not d["timings_resolved"]
    assert d["latency"]["iqr"] == pytest.approx(0.5 * 3e-3) and d["baseline_latency"]["iqr"] == pytest.approx(1.5e-3)
    # Var(K) x q25: width 2 1.117 x 0.75 ms, width 8 0.455 x 2.25 ms, both below width 4's Var(K) x q75 =
    # 0.649 x 1.875 ms = 1.22; width 1 (2.49 x 0.75 ms) stays out
    assert any("decide the optimum width: at n = 2, 8, Var(K) x latency" in note for note in d["notes"])
    # m = 3 vs 2 members of width 4: 4.5 vs 3 ms, less than their mean IQR (2.25 + 1.5) / 2 ms apart
    assert any("step 6's m is not resolved: 3 and 2 members of width 4" in note for note in d["notes"])
    assert (3, 4) in fm.latencies
    dual, _ = planted_design(lambda m, n: [1e-3 * m * MS[n] * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)], "dual")
    assert (dual["n"], dual["m"], dual["verdict"]) == (4, 1, "optimum")  # 1.5 ms vs 3 ms: rho = 2
    assert any("the timings do not resolve which is faster" in note for note in dual["notes"])  # [0.75, 3] vs [1.5, 6]
    assert any(
        "has 1.426x the baseline's Var(K) (m = 1.43 rounded to 1; rounding ceil meets it)" in n for n in dual["notes"]
    )
    wild, _ = planted_design(lambda m, n: [1e-3 * m * MS[n] * f for f in (0.1, 0.2, 1.0, 5.0, 9.0)], "dual")
    assert any(
        note.startswith("the IQR exceeds the median for the baseline, 1x4, the member of width 1")
        for note in wild["notes"]
    )
    calm, _ = planted_design(lambda m, n: [1e-3 * m * MS[n] * f for f in (0.99, 1.0, 1.01)], "dual")
    assert calm["timings_resolved"] and calm["notes"] == [
        "1x4 has 1.426x the baseline's Var(K) (m = 1.43 rounded to 1; rounding ceil meets it)"
    ]


# --- step 6 on a whole network, the FLOP convention, the rounding of m ------------------------------


def test_flop_conventions_hand_count():
    x = torch.randn(2, 6, 9, 11)
    net = nn.Sequential(
        nn.Conv2d(6, 8, (3, 5), stride=(1, 2), padding=(1, 0), groups=2), nn.Flatten(), nn.Linear(288, 5)
    )
    macs = 2 * 8 * 9 * 4 * (3 * 3 * 5) + 2 * 288 * 5  # batch x outputs x (inputs per group x kernel), then the linear
    acts = 2 * 8 * 9 * 4 + 2 * 5  # one per output element of the conv and of the linear
    assert any_module.flop_count(net, x, "macs") == macs
    assert any_module.flop_count(net, x) == any_module.flop_count(net, x, "2macs") == 2 * macs
    assert any_module.flop_count(net, x, "2macs+acts") == 2 * macs + acts
    with pytest.raises(
        ValueError, match=r"flops convention must be one of macs, 2macs, 2macs\+acts, got '2macs\+adds'"
    ):
        any_module.flop_count(net, x, "2macs+adds")
    with pytest.raises(ValueError, match="flops must be one of macs, 2macs, 2macs"):
        any_module.FactoryModule(bottleneck, SHAPE, flops="flops")
    # the Fig. 5 block: 2macs+acts is search.BottleneckDesign's default convention, at any resolution
    fm = any_module.FactoryModule(bottleneck, (256, 4, 4), flops="2macs+acts")
    for m, n in ((1, 3), (4, 10)):
        assert fm.cost(n, "flops", m) == search.BottleneckDesign(resolution=4).cost(n, "flops", m)
    # a forward that needs values (.item()) cannot run on the meta device: counted on the CPU instead
    assert any_module.FactoryModule(ItemGate, (4,), batch=3).cost(5, "flops", 2) == 2 * 3 * (4 * 10 + 10 * 1)


@pytest.fixture(scope="module")
def fig5():
    """The Fig. 5 block at 2x2 (FLOP ratios do not depend on the resolution: stride 1, padding 1) and its
    FactoryModules under each FLOP convention, shared by the tests below (their costs are cached)."""
    from cepaper.models.resnext import ResNeXtCifar

    shape = (256, 2, 2)
    return {f: any_module.FactoryModule(bottleneck, shape, flops=f) for f in any_module.FLOPS} | {
        "net": ResNeXtCifar,
        "shape": shape,
    }


def test_generic_step6_on_resnext29_gives_the_papers_37x10d_and_44x8d(fig5):
    """The Fig. 5 block's curve, step 6 on ResNeXt-29 built from it (cepaper.models.resnext.ResNeXtCifar),
    against cepaper.complexity's counters and networks.network_m (the specialized path)."""
    from cepaper import complexity

    kw = dict(network=fig5["net"], network_input_shape=(3, 32, 32))
    d = any_module.design_module(
        bottleneck, fig5["shape"], (1, 128), "primal", "params", 1.6, module=fig5["2macs"], **kw
    )
    base = complexity.complexity("resnext29", "1x128d")["params"]
    assert d["config"] == "37x10" and d["step6"] == "the network ResNeXtCifar on 3x32x32"
    assert d["m_exact"] == pytest.approx(networks.network_m("resnext29", 10, base, "params"), rel=1e-12)
    assert (d["params"], d["baseline_params"]) == (complexity.complexity("resnext29", "37x10d")["params"], base)
    assert d["module_cost"] == search.BottleneckDesign().cost(10, "params", 37) and d["rho"] == base / d["params"]
    # the referee's reading: step 6 on the block alone gives 35x10
    alone = any_module.design_module(bottleneck, fig5["shape"], (1, 128), "primal", "params", 1.6, module=fig5["2macs"])
    assert alone["config"] == "35x10" and alone["step6"] == "the module"

    d = any_module.design_module(
        bottleneck, fig5["shape"], (1, 128), "primal", "flops", 1.6, module=fig5["2macs+acts"], **kw
    )
    flops = lambda cfg: search.flops_of(complexity.complexity("resnext29", cfg), "2macs+acts")
    ref = search.curve(search.BottleneckDesign(resolution=2), 128, 1.6, "flops")
    np.testing.assert_array_equal(d["curve"]["beta"], ref["beta"])
    assert d["config"] == "44x8" and (d["cost"], d["baseline_cost"]) == (flops("44x8d"), flops("1x128d"))
    assert d["m_exact"] == pytest.approx(
        networks.network_m("resnext29", 8, flops("1x128d"), "flops", flops="2macs+acts"), rel=1e-12
    )
    assert d["flops_convention"] == "2macs+acts" and d["verdict"] == "optimum"


def test_the_flop_convention_moves_the_optimum_only_through_the_acts(fig5):
    """2 x MACs and MACs differ by a factor, which cancels in Eqs. 12-14 and in step 6: both give 51x7, as the
    specialized path does with search.BottleneckDesign(flops="2macs"); only the acts term gives 44x8."""
    kw = dict(network=fig5["net"], network_input_shape=(3, 32, 32))
    two = any_module.design_module(
        bottleneck, fig5["shape"], (1, 128), "primal", "flops", 1.6, module=fig5["2macs"], **kw
    )
    one = any_module.design_module(
        bottleneck, fig5["shape"], (1, 128), "primal", "flops", 1.6, module=fig5["macs"], **kw
    )
    spec = networks.design("resnext29", "1x128d", budget="flops", module=search.BottleneckDesign(flops="2macs"))
    assert two["config"] == one["config"] == "51x7" and spec["config"] == "51x7d"
    assert two["cost"] == 2 * one["cost"] == spec["flops"] and two["m_exact"] == pytest.approx(one["m_exact"])


def test_step6_on_k_copies_of_the_module_keeps_m_and_scales_the_costs(fig5):
    alone = any_module.design_module(bottleneck, fig5["shape"], (1, 128), "primal", "flops", 1.6, module=fig5["2macs"])
    nine = any_module.design_module(
        bottleneck, fig5["shape"], (1, 128), "primal", "flops", 1.6, module=fig5["2macs"], network=9
    )
    assert alone["config"] == nine["config"] == "53x7" and nine["m_exact"] == pytest.approx(alone["m_exact"])
    assert (
        nine["cost"] == 9 * alone["cost"]
        and nine["params"] == 9 * alone["params"]
        and nine["step6"] == "9 x the module"
    )
    with pytest.raises(ValueError, match="network must be None, an int k >= 1"):
        any_module.design_module(bottleneck, fig5["shape"], (1, 128), module=fig5["2macs"], network="resnext29")
    with pytest.raises(ValueError, match=r"network \(a multiple of the module\) must be an integer >= 1, got 0"):
        any_module.design_module(bottleneck, fig5["shape"], (1, 128), module=fig5["2macs"], network=0)


@pytest.mark.parametrize(
    "budget, m_exact, nearest, floor, ceil",
    [("params", 35.2317, 35, 35, 36), ("flops", 52.9173, 53, 52, 53)],
)
def test_generic_primal_rounding_floor_and_ceil(fig5, budget, m_exact, nearest, floor, ceil):
    """Step 6 on the block (1x128 baseline): floor stays within the baseline's budget, ceil reaches it."""
    fm = fig5["2macs"]
    n = 10 if budget == "params" else 7
    base = fm.cost(128, budget)
    c1, c2 = fm.cost(n, budget, 1), fm.cost(n, budget, 2)
    assert (base - (2 * c1 - c2)) / (c2 - c1) == pytest.approx(m_exact, abs=1e-4)  # the hand solve of step 6
    for rounding, m in (("nearest", nearest), ("floor", floor), ("ceil", ceil)):
        d = any_module.design_module(
            bottleneck, fig5["shape"], (1, 128), "primal", budget, 1.6, module=fm, rounding=rounding
        )
        assert (d["n"], d["m"], d["rounding"]) == (n, m, rounding) and d["m_exact"] == pytest.approx(m_exact, abs=1e-4)
        assert d["cost"] == fm.cost(n, budget, m)
        over = [note for note in d["notes"] if "rounding floor stays within it" in note]
        assert bool(over) == (d["cost"] > base)
    lo = any_module.design_module(
        bottleneck, fig5["shape"], (1, 128), "primal", budget, 1.6, module=fm, rounding="floor"
    )
    hi = any_module.design_module(
        bottleneck, fig5["shape"], (1, 128), "primal", budget, 1.6, module=fm, rounding="ceil"
    )
    assert lo["cost"] <= base <= hi["cost"] and hi["m"] - lo["m"] == 1
    assert hi["var_ratio"] < lo["var_ratio"]  # more members: a smaller Var(K) (Eq. 11)
    dual = {
        r: any_module.design_module(bottleneck, fig5["shape"], (1, 128), "dual", budget, 1.6, module=fm, rounding=r)
        for r in ("floor", "ceil")
    }
    assert dual["ceil"]["var_ratio"] <= 1 <= dual["floor"]["var_ratio"] and dual["ceil"]["m"] == dual["floor"]["m"] + 1


# --- Algorithm 1 in Eq. 3's parameterization ---------------------------------------------------------


class SumBlock(ResNeXtBottleneck):
    """Fig. 5 as cepaper.models.bottleneck draws it by default: no ReLU after the shortcut sum."""

    def forward(self, x):
        y = torch.relu(self.bn_reduce(self.conv_reduce(x)))
        y = torch.relu(self.bn(self.conv_conv(y)))
        return self.bn_expand(self.conv_expand(y)) + self.shortcut(x)


def test_eq3_member_is_the_papers_bottleneck_draw():
    """eq3_member of the project's block is cepaper.models.bottleneck.Bottleneck with the same seed: weights,
    scales sqrt(2/16), sqrt(2/9n), sqrt(1/n), no norms, and the same function."""
    x, v = blocks.block_inputs(16, 3, 2, 0.5, seed=1), ntk.readout_vector("random", (16, 3, 3), seed=2)
    for block, post_relu in ((ResNeXtBottleneck, True), (SumBlock, False)):
        member = any_member.eq3_member(block(16, 16, 5), seed=11)
        ref = blocks.Bottleneck(5, v, n_in=16, post_relu=post_relu, seed=11)
        assert not any(isinstance(mod, nn.BatchNorm2d) for mod in member.modules())
        for a, b in ((member.conv_reduce, ref.conv1), (member.conv_conv, ref.conv2), (member.conv_expand, ref.conv3)):
            assert torch.equal(a.weight, b.weight)
        torch.testing.assert_close(any_member.Readout(member, v)(x), ref(x), rtol=1e-5, atol=1e-6)


def test_eq3_member_scales_each_layer_and_freezes_zero_biases():
    net = any_member.eq3_member(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 1)), 3)
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(6, 4, generator=g), torch.randn(1, 6, generator=g)
    x = torch.randn(5, 4)
    expect = math.sqrt(1 / 6) * torch.relu(math.sqrt(2 / 4) * x @ w1.T) @ w2.T
    torch.testing.assert_close(net(x), expect)
    assert isinstance(net[1], nn.Identity) and [k for k, p in net.named_parameters() if p.requires_grad] == [
        "0.weight",
        "3.weight",
    ]
    assert not net[0].bias.any() and not net[3].bias.any()
    with pytest.raises(ValueError, match="init must be one of factory, eq3, got 'ntk'"):
        any_member.fit_member_alpha(mlp, (16, 1), init="ntk")


@pytest.mark.filterwarnings("ignore:the draws at width index")  # T = 24: heavy tails at narrow widths
@pytest.mark.parametrize("block, post_relu", [(ResNeXtBottleneck, True), (SumBlock, False)])
def test_member_alpha_eq3_recovers_the_specialized_bottleneck_alpha(block, post_relu):
    """Generic Algorithm 1 with init="eq3" on the paper's block draws the very weights of the specialized sweep
    (cepaper.alpha.sweeps / fit.measure_alpha: same per-width seeds, per-draw seeds and draw order), computes their NTKs
    another way (torch.func over the autograd of the built module, against the block's structured formula), and
    so fits the same alpha, within float32 rounding: at small T the equality still tests every step."""
    factory = lambda m, n: block(256, 256, m * n, groups=m)
    widths, trials = (2, 4, 8), 24
    mine = any_member.fit_member_alpha(factory, (256, 3, 3), widths, trials, init="eq3", n_boot=200, progress=False)
    ref = fit.measure_alpha("bottleneck", widths=widths, trials=trials, post_relu=post_relu, n_boot=200)
    for key in ("mean", "second", "term"):
        np.testing.assert_allclose(mine["fits"]["diag"][key], ref["fits"]["diag"][key], rtol=2e-5)
    assert mine["alpha"] == pytest.approx(ref["alpha"], rel=1e-4, abs=1e-5)
    lo, hi = mine["alpha_ci"]
    assert lo <= ref["alpha"] <= hi and mine["init"] == "eq3"
