"""Algorithm 1 on any factory against the specialized path: the Fig. 5 block's alpha fit, both ways.

Run from the repository root::

    python benchmarks/design_alpha.py            # the quick sizes of notebook 03_alpha, a table
    python benchmarks/design_alpha.py --json     # the same, then one JSON object as the last line

The same scalar function twice, in this one process, at the same widths, trials and seed:

* specialized: :func:`cepaper.alpha.sweeps.module_sweep` ``("bottleneck")``
  (:class:`cepaper.models.bottleneck.BottleneckDraws`, all draws of a chunk as grouped convolutions, one
  hand-written backward), then :func:`cepaper.alpha.fit.sweep_result`;
* generic: :func:`cepaper.alpha.any_member.fit_member_alpha` on :func:`fig5_block`, the Fig. 5 block written as a plain
  factory ``(m, n) -> nn.Module`` (grouped ``nn.Conv2d``; nothing in the library knows it), whose member
  ``factory(1, n)`` is drawn and differentiated by the general ``torch.func`` path.

Both sides use the default inputs and read-out of :data:`cepaper.alpha.sweeps.DEFAULTS` (a 256 x 3 x 3 Gaussian
input, channel 0 at the centre, correlation 0.5), and the same bootstrap size. The ratio generic /
specialized of wall times is the number issue 13 asks for (target: at most about 3); the two alphas
are different draws of the same law, so their intervals should overlap. ``--repeats R`` runs the pair
``R`` times interleaved and keeps the best of each (a busy machine then affects both alike).
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cepaper.alpha import any_member, fit, sweeps

TARGET_RATIO = 3.0
#: The quick profile of notebook 03_alpha: T = 300 draws at 12 log-spaced widths 1..128.
QUICK = dict(trials=300, width_max=128, num_widths=12)


class Fig5Block(nn.Module):
    """The Fig. 5 block, ``m`` paths of width ``n``: ``x + sqrt(1/n) W3 phi(sqrt(2/(9n)) W2 * phi(sqrt(2/n_in) W1 x))``
    with ``W1: n_in -> m n`` (1x1), ``W2`` grouped 3x3 (``m`` groups, pad 1), ``W3: m n -> n_in`` (1x1), no bias,
    no BN; weights N(0, 1) drawn from torch's global generator (NTK parameterization, as
    :mod:`cepaper.models.bottleneck`). Input and output ``(N, n_in, H, W)``."""

    def __init__(self, m, n, n_in=256):
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, m * n, 1, bias=False)
        self.conv2 = nn.Conv2d(m * n, m * n, 3, padding=1, groups=m, bias=False)
        self.conv3 = nn.Conv2d(m * n, n_in, 1, bias=False)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.normal_(conv.weight)
        self.scales = (math.sqrt(2 / n_in), math.sqrt(2 / (9 * n)), math.sqrt(1 / n))

    def forward(self, x):
        h = torch.relu(self.scales[0] * self.conv1(x))
        h = torch.relu(self.scales[1] * self.conv2(h))
        return x + self.scales[2] * self.conv3(h)


def fig5_block(m, n):
    """Factory ``(m, n) -> Fig5Block(m, n)``: the Fig. 5 block as any user would write it."""
    return Fig5Block(m, n)


def specialized(widths, trials, seed, n_boot, threads):
    """``sweeps.module_sweep("bottleneck")`` then ``fit.sweep_result``: seconds and the result."""
    t = time.perf_counter()
    sw = sweeps.module_sweep("bottleneck", widths, trials, seed=seed, threads=threads)
    res = fit.sweep_result(sw, n_boot=n_boot)
    return time.perf_counter() - t, res


def generic(widths, trials, seed, n_boot, threads):
    """``any_member.fit_member_alpha(fig5_block)`` with the bottleneck's default scalar function."""
    o = sweeps.DEFAULTS["bottleneck"]
    t = time.perf_counter()
    res = any_member.fit_member_alpha(
        fig5_block,
        (o["n_in"], o["spatial"], o["spatial"]),
        widths,
        trials,
        seed,
        readout=o["readout"],
        corr=o["corr"],
        input_seed=o["input_seed"],
        n_boot=n_boot,
        progress=False,
        threads=threads,
    )
    return time.perf_counter() - t, res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=QUICK["trials"], help="draws per width (quick profile: 300)")
    p.add_argument("--width-max", type=int, default=QUICK["width_max"], help="widths: log grid 1..width_max")
    p.add_argument("--num-widths", type=int, default=QUICK["num_widths"], help="number of widths")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples of both fits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs of the pair; the best of each is kept")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the library's Monte Carlo default is 1)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    widths = sweeps.log_grid(1, args.width_max, args.num_widths)
    torch.set_num_threads(args.threads)
    best = {"specialized": (math.inf, None), "generic": (math.inf, None)}
    for _ in range(args.repeats):
        for name, run in (("specialized", specialized), ("generic", generic)):
            s, res = run(widths, args.trials, args.seed, args.n_boot, args.threads)
            if s < best[name][0]:
                best[name] = (s, res)
    (t_s, r_s), (t_g, r_g) = best["specialized"], best["generic"]
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": args.threads,
        "widths": list(widths),
        "trials": args.trials,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "repeats": args.repeats,
        "load_average": os.getloadavg()[0],
        "specialized_s": t_s,
        "generic_s": t_g,
        "generic_over_specialized": t_g / t_s,
        "target_ratio": TARGET_RATIO,
        "within_target": t_g / t_s <= TARGET_RATIO,
        "alpha_specialized": r_s["alpha"],
        "alpha_specialized_ci": r_s["alpha_ci"],
        "alpha_generic": r_g["alpha"],
        "alpha_generic_ci": r_g["alpha_ci"],
        "terms_max_abs_diff": max(abs(a - b) for a, b in zip(r_s["fits"]["diag"]["term"], r_g["fits"]["diag"]["term"])),
    }
    print(f"machine: {out['machine']}; {args.threads} thread(s); load average {out['load_average']:.2f}")
    print(
        f"Fig. 5 block, T = {args.trials} at {len(widths)} widths {widths[0]}..{widths[-1]}, "
        f"{args.n_boot} bootstrap resamples (best of {args.repeats})"
    )
    print(f"{'path':<12} {'seconds':>9} {'alpha':>7}  interval")
    for name, t, r in (("specialized", t_s, r_s), ("generic", t_g, r_g)):
        print(f"{name:<12} {t:>9.2f} {r['alpha']:>7.3f}  [{r['alpha_ci'][0]:.3f}, {r['alpha_ci'][1]:.3f}]")
    print(
        f"generic / specialized = {t_g / t_s:.2f} (target <= {TARGET_RATIO:g}: "
        f"{'met' if out['within_target'] else 'NOT met'})"
    )
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
