"""Algorithm 1 benchmark: the Fig. 8 sweep of the bottleneck block, and its NTK paths compared.

Run from the repository root::

    python benchmarks/alpha.py                  # both parts, a table
    python benchmarks/alpha.py --json           # the same, then one JSON object as the last line
    python benchmarks/alpha.py --skip-sweep     # only the ratios (a few seconds)

0. Threads: a short sweep with one CPU thread against torch's default (the library uses one).
1. Ratios, measured in this one process (best of interleaved repeats, so a busy machine affects all
   sides alike): seconds per draw of the block's NTK on two inputs by the batched structured path
   (:func:`cepaper.models.bottleneck.bottleneck_ntk`, grouped convolutions over ``T`` draws, one
   hand-written backward), by autograd through the same grouped module (one backward per input),
   by a per-draw loop of :func:`cepaper.ntk.empirical_ntk` on a standalone block, and the floor of
   only drawing the same weights.
2. The Fig. 8 sweep: ``T = 2000`` draws at 16 log-spaced widths from 1 to 256 (float32 compute,
   float64 accumulation) of the default scalar function, its wall time against the 120 s target of
   issue 5, and the fitted alpha. The load average is printed: on a shared machine the wall time
   moves with it, the ratios much less.
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import best_of  # noqa: E402

from cepaper import ntk
from cepaper.alpha import fit, sweeps
from cepaper.models import bottleneck as B  # noqa: E402

TARGET_S = 120.0


def path_ratios(n, draws, loop_draws, repeats, options):
    """Seconds per draw of each NTK path at width ``n`` (structured, autograd, per-draw loop, drawing)."""
    o = sweeps.module_options("bottleneck", **options)
    x = B.block_inputs(o["n_in"], o["spatial"], 2, o["corr"], o["input"], o["input_seed"])
    v = ntk.readout_vector(o["readout"], (o["n_in"], o["spatial"], o["spatial"]), o["input_seed"])
    seeds = list(range(draws))
    block = B.BottleneckDraws(n, seeds, v, o["n_in"], o["post_relu"])
    singles = [block.draw(t) for t in range(loop_draws)]
    structured = lambda: B.bottleneck_ntk(block, x)
    draw_only = lambda: B.BottleneckDraws(n, seeds, v, o["n_in"], o["post_relu"])
    autograd = lambda: B.bottleneck_ntk(block, x, method="autograd")
    loop = lambda: [ntk.empirical_ntk(s, x, method="jacobian") for s in singles]
    torch.testing.assert_close(
        B.bottleneck_ntk(block, x)[:loop_draws].float(), torch.stack(loop()).float(), rtol=1e-3, atol=1e-4
    )
    structured(), autograd()  # warm-up
    t_s, t_a, t_d = best_of([structured, autograd, draw_only], repeats)
    (t_l,) = best_of([loop], repeats)
    return {
        "n": n,
        "draws": draws,
        "structured_ms_per_draw": 1e3 * t_s / draws,
        "autograd_ms_per_draw": 1e3 * t_a / draws,
        "loop_ms_per_draw": 1e3 * t_l / loop_draws,
        "draw_only_ms_per_draw": 1e3 * t_d / draws,
        "autograd_over_structured": t_a / t_s,
        "loop_over_structured": (t_l / loop_draws) / (t_s / draws),
        "draw_over_structured": t_d / t_s,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=2000, help="draws per width of the sweep")
    p.add_argument("--num-widths", type=int, default=16, help="log-spaced widths from 1 to 256")
    p.add_argument("--readout", default=None, help="bottleneck read-out (default: the library's)")
    p.add_argument("--spatial", type=int, default=None, help="bottleneck input size (default: the library's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the library's Monte Carlo default is 1)")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    options = {k: v for k, v in (("readout", args.readout), ("spatial", args.spatial)) if v is not None}
    default_threads = torch.get_num_threads()
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": args.threads,
        "options": sweeps.module_options("bottleneck", **options),
        "load_before": os.getloadavg()[0],
    }
    # threads: a short sweep with 1 thread against torch's default, interleaved
    small = lambda th: sweeps.module_sweep(
        "bottleneck", sweeps.log_grid(1, 256, args.num_widths), 50, threads=th, **options
    )
    t1, td = best_of([lambda: small(1), lambda: small(default_threads)], 2)
    out["threads_check"] = {
        "trials": 50,
        "one_thread_s": t1,
        "default_threads": default_threads,
        "default_threads_s": td,
        "default_over_one": td / t1,
    }
    torch.set_num_threads(args.threads)
    print(f"machine: {out['machine']}; load average {out['load_before']:.2f}")
    print(f"scalar function: {out['options']}")
    tc = out["threads_check"]
    print(
        f"sweep with T = 50: 1 thread {tc['one_thread_s']:.2f} s, {default_threads} threads "
        f"{tc['default_threads_s']:.2f} s (x{tc['default_over_one']:.2f}); running with {args.threads}"
    )
    rows = [path_ratios(n, d, 8, args.repeats, options) for n, d in ((4, 256), (32, 128), (128, 32))]
    out["paths"] = rows
    print("\n1. NTK of the block on two inputs, ms per draw (x: ratio to the structured path); drawing the")
    print("   weights is a separate cost, the same for every path")
    print(
        f"{'n':>5} {'draws':>6} {'structured':>11} {'autograd':>10} {'x':>6} {'torch.func loop':>16} {'x':>7} "
        f"{'drawing':>8} {'x':>6}"
    )
    for r in rows:
        print(
            f"{r['n']:>5} {r['draws']:>6} {r['structured_ms_per_draw']:>11.3f} {r['autograd_ms_per_draw']:>10.3f} "
            f"{r['autograd_over_structured']:>6.1f} {r['loop_ms_per_draw']:>16.2f} {r['loop_over_structured']:>7.1f} "
            f"{r['draw_only_ms_per_draw']:>8.3f} {r['draw_over_structured']:>6.2f}"
        )
    if not args.skip_sweep:
        widths = sweeps.log_grid(1, 256, args.num_widths)
        start = time.perf_counter()
        sw = sweeps.module_sweep("bottleneck", widths, args.trials, seed=0, threads=args.threads, **options)
        wall = time.perf_counter() - start
        res = fit.sweep_result(sw)
        out["sweep"] = {
            "widths": list(widths),
            "trials": args.trials,
            "seconds": wall,
            "target_s": TARGET_S,
            "within_target": wall <= TARGET_S,
            "alpha": res["alpha"],
            "alpha_ci": res["alpha_ci"],
            "alpha_offdiag": res["fits"]["offdiag"]["alpha"],
            "alpha_offdiag_ci": res["fits"]["offdiag"]["alpha_ci"],
            "load_after": os.getloadavg()[0],
        }
        s = out["sweep"]
        print(
            f"\n2. Fig. 8 sweep: T = {args.trials} at {len(widths)} widths {widths[0]}..{widths[-1]}: "
            f"{wall:.1f} s (target {TARGET_S:.0f} s: {'met' if s['within_target'] else 'NOT met'}; "
            f"load average {s['load_after']:.2f})"
        )
        print(
            f"   alpha (diag) = {s['alpha']:.3f} [{s['alpha_ci'][0]:.3f}, {s['alpha_ci'][1]:.3f}], "
            f"alpha (offdiag) = {s['alpha_offdiag']:.3f} "
            f"[{s['alpha_offdiag_ci'][0]:.3f}, {s['alpha_offdiag_ci'][1]:.3f}]"
        )
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
