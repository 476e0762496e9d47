"""The benchmark scripts run end to end at toy sizes and print the JSON they promise (no timing is
asserted: the numbers are ratios for a person to read, not pass/fail criteria)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_json(script, *args):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--json", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_ntk_benchmark_json():
    r = run_json("ntk.py", "--width", "48", "--repeats", "1", "--slow-repeats", "1",
                 "--mc-draws", "64", "--mc-chunk", "32")
    for key in ("speedup_vs_jacrev", "speedup_vs_naive", "speedup_vs_naive_ceiling", "mc_fraction_of_rng",
                "t_structured_s", "t_gemm_floor_s", "t_jacrev_s", "t_naive_s", "structured_over_fwd_bwd"):
        assert r[key] > 0, key
    assert r["width"] == 48
    assert r["max_rel_diff_structured_vs_jacrev"] < 1e-4       # the timed paths compute the same kernel
