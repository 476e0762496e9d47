"""The benchmark scripts run end to end at toy sizes and print the JSON they promise (no timing is
asserted: the numbers are ratios for a person to read, not pass/fail criteria). What is checked is
that each reported ratio is the ratio of the reported times, and that the floor a time is compared
with does the same work as the timed code."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cepaper import montecarlo, ntk

ROOT = Path(__file__).resolve().parents[1]


def run_json(script, *args):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def quotient_interval(a, b, eps=5e-7):
    """Bounds of ``a / b`` for ``a``, ``b`` rounded to 6 decimals (the JSON's rounding), widened by its own."""
    return (a - eps) / (b + eps) - eps, (a + eps) / max(b - eps, 1e-300) + eps


# ratio key -> (numerator, denominator), as the benchmark defines them
RATIOS = {
    "speedup_vs_jacrev": ("t_jacrev_s", "t_structured_s"),
    "speedup_vs_naive": ("t_naive_s", "t_structured_s"),
    "speedup_vs_naive_ceiling": ("t_naive_s", "t_gemm_floor_s"),
    "structured_over_gemm_floor": ("t_structured_s", "t_gemm_floor_s"),
    "structured_over_fwd_bwd": ("t_structured_s", "t_fwd_bwd_s"),
    "mc_fraction_of_rng": ("t_rng_s", "t_mc_s"),
    "mc_speedup_vs_loop": ("mc_draws_per_s", "loop_draws_per_s"),
}


def test_ntk_benchmark_json():
    r = run_json(
        "ntk.py", "--width", "48", "--repeats", "1", "--slow-repeats", "1", "--mc-draws", "64", "--mc-chunk", "32"
    )
    for key, (num, den) in RATIOS.items():
        lo, hi = quotient_interval(r[num], r[den])
        assert lo <= r[key] <= hi, (key, r[key], r[num], r[den])
    for rate, time in (("mc_draws_per_s", "t_mc_s"), ("rng_draws_per_s", "t_rng_s")):
        lo, hi = quotient_interval(r["mc_draws"], r[time])
        assert lo <= r[rate] <= hi, rate
    assert r["width"] == 48 and (r["mc_draws"], r["mc_chunk"], r["mc_threads"]) == (64, 32, 1)
    assert r["max_rel_diff_structured_vs_jacrev"] < 1e-4  # the timed paths compute the same kernel


@pytest.fixture
def ntk_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("ntk")


def test_monte_carlo_floor_draws_the_samplers_weights(ntk_bench):
    """The "drawing only" floor draws exactly the weights the Monte Carlo uses (same generator, chunks
    and two random streams): the NTKs of its models are the Monte Carlo's samples, chunk by chunk."""
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    widths = (6, 6, 6)
    samples = montecarlo.mc_samples(montecarlo.mlp_ntk_sampler(x, widths=widths), 10, chunk=4, seed=0)
    models = list(ntk_bench.draw_weights(2, widths, 10, 4, seed=0))
    assert [m.m for m in models] == [4, 4, 2] and all(m.streams == 2 for m in models)
    assert torch.equal(torch.cat([ntk.member_ntk(m, x) for m in models]), samples)


def test_design_alpha_benchmark_json():
    """The generic fit of the Fig. 5 factory against the specialized sweep: the ratio is the ratio of the
    reported times, the two paths read the same s(n), and the factory's member is the specialized block."""
    r = run_json("design_alpha.py", "--trials", "6", "--width-max", "8", "--num-widths", "3", "--n-boot", "10")
    assert r["generic_over_specialized"] == pytest.approx(r["generic_s"] / r["specialized_s"], rel=1e-12)
    assert r["widths"] == [1, 3, 8] and r["trials"] == 6 and r["terms_max_abs_diff"] < 1e-15
    assert r["within_target"] == (r["generic_over_specialized"] <= r["target_ratio"])


def test_design_alpha_factory_is_the_specialized_block(monkeypatch):
    """Same weights, same NTK: the factory's member built from the seed of a BottleneckDraws draw."""
    from cepaper.alpha import any_member
    from cepaper.models import bottleneck

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = importlib.import_module("design_alpha")
    x = bottleneck.block_inputs(256, 3, 2, 0.5, "gaussian", 0)
    v = ntk.readout_vector("center", (256, 3, 3), 0)
    draws = bottleneck.BottleneckDraws(5, [11, 12], v, 256, False)
    mine = bench.fig5_block(1, 5)
    for t in range(2):
        ref = draws.draw(t)
        for name in ("conv1", "conv2", "conv3"):
            getattr(mine, name).weight.data.copy_(getattr(ref, name).weight)
        torch.testing.assert_close(
            ntk.naive_ntk(any_member.Readout(mine, v), x),
            bottleneck.bottleneck_ntk(draws, x)[t].float(),
            rtol=1e-4,
            atol=1e-5,
        )


def test_train_benchmark_json():
    """Our CIFAR epoch and the official-style loop on the same model; the batched ensemble against the
    list of its members: each ratio is the ratio of the reported rates, and the two ensemble paths
    compute the same function."""
    r = run_json(
        "train.py",
        "--images",
        "16",
        "--repeats",
        "1",
        "--stages",
        "8",
        "16",
        "16",
        "--config",
        "2x4d",
        "--workers",
        "1",
        "--mlp-m",
        "3",
        "--mlp-width",
        "4",
        "--mlp-steps",
        "1",
        "--mlp-batch",
        "8",
    )
    for k in ("ours_cifar", "ours_cifar_1gpu"):
        lo, hi = quotient_interval(r["t_official_s"], r[f"t_{k}_s"])
        assert lo <= r[f"{k}_over_official"] <= hi, k
        assert r[f"{k}_images_per_s"] == pytest.approx(16 / r[f"t_{k}_s"], rel=1e-4)
    lo, hi = quotient_interval(r["t_mlp_list_s"], r["t_mlp_batched_s"])
    assert lo <= r["mlp_speedup_vs_list"] <= hi
    assert r["mlp_max_abs_diff"] < 1e-5 and r["mlp_m"] == 3 and r["cifar_images"] == 16


def test_train_benchmark_members_are_the_batched_ensemble(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = importlib.import_module("train")
    from cepaper.models.mlp import CollegialMLP

    batched = CollegialMLP(5, 4, m=3, depth=2, outputs=2, generator=torch.Generator().manual_seed(0))
    members = bench.members_of(batched)
    x = torch.randn(7, 5)
    torch.testing.assert_close(sum(f(x) for f in members) / 3**0.5, batched(x))
