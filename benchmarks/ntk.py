"""NTK engine benchmark: structured MLP NTK against torch.func and naive autograd; Monte Carlo rate.

Every number is a ratio of times measured in this one process (best of several interleaved repeats),
so a shared or busy machine affects both sides alike. Run from the repository root::

    python benchmarks/ntk.py            # a table
    python benchmarks/ntk.py --json     # the table, then one JSON object as the last line

1. The full 65 x 65 NTK (``x_0`` and 64 points ``x_gamma``) of the L = 4, n = 1000 MLP of Eq. 3 in
   float32: the structured path (:func:`cepaper.ntk.member_ntk`), ``torch.func`` ``vmap(jacrev)``
   with contraction (:func:`cepaper.ntk.jacobian_ntk`), and naive per-input autograd gradients
   (:func:`cepaper.ntk.naive_ntk`); the structured time is also compared with one batched forward
   and backward of the same network by autograd (the FLOP floor it should stay within 1.5x of), and
   with the bare matrix products it cannot avoid (the ``L - 1`` hidden-layer products of the forward
   pass and the ``L - 1`` of the sensitivities' backward pass, each ``N x n`` by ``n x n``, with
   preallocated outputs). ``t_naive / t_gemm_floor`` is then the most any exact method built on these
   products can gain over naive gradients on this machine (``speedup_vs_naive_ceiling``).
2. Monte Carlo at n = 64 (L = 4, two inputs, the three NTK entries): draws per second of
   :func:`cepaper.montecarlo.mc_moments` against the rate of only drawing the same weights the same way
   (:func:`draw_weights`: the same generator, chunks, two random streams in parallel threads and
   intra-op threads, interleaved with the same repeats), and against a per-draw Python loop
   (:func:`cepaper.montecarlo.module_ntk_sampler`). Each stream's generator is single-threaded, so the
   Monte Carlo runs with ``--mc-threads 1`` (default); its rate with torch's default thread count is
   reported beside it.
"""

import argparse
import json
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import best_of  # noqa: E402

from cepaper import montecarlo, ntk
from cepaper.models.mlp import CollegialMLP, hidden_widths  # noqa: E402
from cepaper.sections import lemma1


def ntk_timings(depth, n, n_points, repeats, slow_repeats):
    """Seconds for the full NTK by each path, plus one autograd forward + backward."""
    model = CollegialMLP(2, n, depth=depth, generator=torch.Generator().manual_seed(0))
    _, x, _ = lemma1.circle_inputs(n_points - 1)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    structured = lambda: ntk.member_ntk(model, x)
    square = [w[0].detach() for w in model.weights if w.shape[-1] == w.shape[-2] == n]
    a, out = torch.randn(len(x), n), torch.empty(len(x), n)

    def gemm_floor():  # 2 (L - 1) products N x n x n
        for w in square:
            torch.mm(a, w.T, out=out)
            torch.mm(a, w, out=out)

    structured(), fwd_bwd(), gemm_floor()  # warm-up
    t_struct, t_fb, t_gemm = best_of([structured, fwd_bwd, gemm_floor], repeats)
    gflops = 2 * 2 * len(square) * len(x) * n * n / t_gemm / 1e9
    jac = lambda: ntk.jacobian_ntk(model, x)
    naive = lambda: ntk.naive_ntk(model, x)
    k_jac = jac()  # warm-up, and a correctness check
    err = ((ntk.member_ntk(model, x)[0] - k_jac).abs().max() / k_jac.abs().max()).item()
    t_jac, t_naive = best_of([jac, naive], slow_repeats)
    return dict(
        t_structured_s=t_struct,
        t_fwd_bwd_s=t_fb,
        t_gemm_floor_s=t_gemm,
        gemm_floor_gflops=gflops,
        t_jacrev_s=t_jac,
        t_naive_s=t_naive,
        max_rel_diff_structured_vs_jacrev=err,
    )


def draw_weights(n_in, widths, draws, chunk, seed=0):
    """The weights :func:`cepaper.montecarlo.mc_moments` draws for
    :func:`cepaper.montecarlo.mlp_ntk_sampler`, and nothing
    else: one ``CollegialMLP`` of ``t`` members per chunk, from the Monte Carlo's generator, in the
    sampler's two random streams (parallel threads). Yields the models (the floor of the Monte Carlo)."""
    g = torch.Generator().manual_seed(int(seed))
    for i in range(0, draws, chunk):
        yield CollegialMLP(n_in, widths, m=min(chunk, draws - i), generator=g, streams=2)


def mc_timings(depth, n, draws, chunk, loop_draws, repeats, threads):
    """Draws per second of Monte Carlo, of drawing the weights only, and of a per-draw loop."""
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    widths = hidden_widths(n, depth)
    sampler = montecarlo.mlp_ntk_sampler(x, widths=widths)

    def rng_only():  # same draws, streams, chunks, threads
        with montecarlo.intra_op_threads(threads):
            for _ in draw_weights(2, widths, draws, chunk):
                pass

    mc = lambda: montecarlo.mc_moments(sampler, draws, chunk=chunk, seed=0, threads=threads)
    mc_default = lambda: montecarlo.mc_moments(sampler, draws, chunk=chunk, seed=0)
    loop = montecarlo.module_ntk_sampler(lambda g: CollegialMLP(2, widths, generator=g), x)
    per_draw = lambda: montecarlo.mc_moments(loop, loop_draws, chunk=loop_draws, seed=0, threads=threads)
    fns = [mc, rng_only, per_draw, mc_default]
    for f in fns:  # warm-up
        f()
    t_mc, t_rng, t_loop, t_def = best_of(fns, repeats)  # interleaved: the same repeats for all
    return dict(
        mc_draws_per_s=draws / t_mc,
        rng_draws_per_s=draws / t_rng,
        loop_draws_per_s=loop_draws / t_loop,
        mc_default_threads_draws_per_s=draws / t_def,
        t_mc_s=t_mc,
        t_rng_s=t_rng,
        t_loop_s=t_loop,
        t_mc_default_threads_s=t_def,
        mc_draws=draws,
        mc_chunk=chunk,
        mc_threads=threads,
        loop_draws=loop_draws,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--repeats", type=int, default=9, help="repeats of the fast measurements")
    p.add_argument("--slow-repeats", type=int, default=2, help="repeats of jacrev and naive")
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--mc-draws", type=int, default=4096)
    p.add_argument("--mc-chunk", type=int, default=256)
    p.add_argument(
        "--mc-threads",
        type=int,
        default=1,
        help="intra-op threads of the Monte Carlo (its generator is single-threaded)",
    )
    a = p.parse_args(argv)

    r = ntk_timings(4, a.width, 65, a.repeats, a.slow_repeats)
    r.update(mc_timings(4, 64, a.mc_draws, a.mc_chunk, 256, a.repeats, a.mc_threads))
    r.update(
        speedup_vs_jacrev=r["t_jacrev_s"] / r["t_structured_s"],
        speedup_vs_naive=r["t_naive_s"] / r["t_structured_s"],
        speedup_vs_naive_ceiling=r["t_naive_s"] / r["t_gemm_floor_s"],
        structured_over_gemm_floor=r["t_structured_s"] / r["t_gemm_floor_s"],
        structured_over_fwd_bwd=r["t_structured_s"] / r["t_fwd_bwd_s"],
        mc_fraction_of_rng=r["mc_draws_per_s"] / r["rng_draws_per_s"],
        mc_fraction_of_rng_default_threads=r["mc_default_threads_draws_per_s"] / r["rng_draws_per_s"],
        mc_speedup_vs_loop=r["mc_draws_per_s"] / r["loop_draws_per_s"],
        machine=f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        width=a.width,
    )

    rows = [
        (f"65x65 NTK, L=4, n={a.width}: structured", f"{1e3 * r['t_structured_s']:9.2f} ms", ""),
        (
            "  one autograd forward + backward",
            f"{1e3 * r['t_fwd_bwd_s']:9.2f} ms",
            f"structured / fwd+bwd = {r['structured_over_fwd_bwd']:.2f}  (target <= 1.5)",
        ),
        (
            "  its unavoidable matrix products alone",
            f"{1e3 * r['t_gemm_floor_s']:9.2f} ms",
            f"structured / products = {r['structured_over_gemm_floor']:.2f}  ({r['gemm_floor_gflops']:.0f} GFLOP/s)",
        ),
        (
            "  torch.func vmap(jacrev) + contraction",
            f"{1e3 * r['t_jacrev_s']:9.1f} ms",
            f"speedup {r['speedup_vs_jacrev']:7.1f}x  (target >= 60)",
        ),
        (
            "  naive per-input autograd",
            f"{1e3 * r['t_naive_s']:9.1f} ms",
            f"speedup {r['speedup_vs_naive']:7.1f}x  (target >= 500; ceiling here "
            f"{r['speedup_vs_naive_ceiling']:.0f}x)",
        ),
        (f"Monte Carlo n=64, 2 inputs, {a.mc_threads} thread(s)", f"{r['mc_draws_per_s']:9.0f} /s", ""),
        (
            "  drawing the weights only",
            f"{r['rng_draws_per_s']:9.0f} /s",
            f"fraction {r['mc_fraction_of_rng']:.2f}  (target >= 0.70)",
        ),
        (
            "  per-draw Python loop",
            f"{r['loop_draws_per_s']:9.0f} /s",
            f"speedup {r['mc_speedup_vs_loop']:7.1f}x  (target >= 3)",
        ),
        (
            f"  mc_moments with {torch.get_num_threads()} threads (default)",
            f"{r['mc_default_threads_draws_per_s']:9.0f} /s",
            f"fraction of drawing {r['mc_fraction_of_rng_default_threads']:.2f}",
        ),
    ]
    print(f"# NTK benchmark on {r['machine']} (best of interleaved repeats; ratios in one process)")
    for name, value, note in rows:
        print(f"{name:44s} {value:>14s}   {note}")
    print(f"# structured vs jacrev max relative difference: {r['max_rel_diff_structured_vs_jacrev']:.1e}")
    if a.json:
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}))


if __name__ == "__main__":
    main()
