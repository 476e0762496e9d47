"""Timing helpers shared by the benchmarks (ratios are measured in one process)."""

import time


def best_of(fns, repeats):
    """Best wall time of each callable, the repeats interleaved (round-robin) to share the noise."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
    return best
