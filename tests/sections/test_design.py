"""cepaper.sections.design (the page 08_design): the vision-MLP channel block and the saved designs' views."""

import pytest
import torch

from cepaper.search import any_module, factories
from cepaper.sections import design as design_section


def test_mixer_channel_block_is_a_collegial_module():
    block = design_section.mixer_channel_block
    for m, n in [(1, 8), (3, 5)]:
        c = 64
        assert factories.param_count(block(m, n)) == 2 * c + (c * m * n + m * n) + (m * n * n + m * n) + (m * n * c + c)
    assert factories.member_fan_ins(block(1, 7)) == (64, 7, 7)
    x = torch.randn(2, 64, 16)
    assert block(4, 3)(x).shape == x.shape
    # m members summed: the grouped module equals the sum of its members' residual branches
    full = block(2, 3)
    members = [block(1, 3) for _ in range(2)]
    for i, mem in enumerate(members):
        mem.norm.load_state_dict(full.norm.state_dict())
        sl = slice(3 * i, 3 * (i + 1))
        mem.fc1.weight.data, mem.fc1.bias.data = full.fc1.weight[sl], full.fc1.bias[sl]
        mem.fc2.weight.data, mem.fc2.bias.data = full.fc2.weight[sl], full.fc2.bias[sl]
        mem.fc3.weight.data, mem.fc3.bias.data = full.fc3.weight[:, sl], full.fc3.bias / 2
    with torch.no_grad():
        assert torch.allclose(full(x) - x, sum(mem(x) - x for mem in members), atol=1e-5)


def test_block_designs_and_views():
    saved = design_section.block_designs("mixer", [2, 4, 8, 16, 32], 40, [4, 16, 64], readout="center", repeats=2)
    assert saved["baseline"] == "1x256" and set(saved["designs"]) == set(any_module.BUDGETS)
    assert saved["designs"]["params"]["primal"]["curve"]["n"] == [4, 16, 64, 256]
    rows = design_section.designs_table(saved)
    assert len(rows) == 6
    for r in rows:
        d = saved["designs"][{v: k for k, v in design_section.BUDGET_NAMES.items()}[r["budget"]]][r["objective"]]
        assert r["verdict"] == ("optimum" if d["improves"] else "no improvement found") == d["verdict"]
        assert r["ensemble (baseline)"] == f"{d['config']} ({d['baseline']})"
    timings = design_section.latency_table(saved)
    assert [r["objective"] for r in timings] == list(saved["designs"]["latency"])
    for r in timings:
        d = saved["designs"]["latency"][r["objective"]]
        assert r["IQR (ms)"] == round(1e3 * d["latency"]["iqr"], 3) and r["timings resolve it"] in "✓✗"
    gap = design_section.latency_vs_flops(saved)
    assert gap["width_ratio"] == gap["latency_n"] / gap["flops_n"] and gap["flops_design_latency_ratio"] > 0
    lat, flops = saved["designs"]["latency"]["primal"], saved["designs"]["flops"]["primal"]
    assert gap["flops_design_dominates"] == (
        saved["flops_design_latency"] <= lat["cost"] and flops["var_ratio"] <= lat["var_ratio"]
    )
    assert gap["latency_verdict"] == lat["verdict"] and gap["latency_notes"] == lat["notes"]
    design_section.plot_budgets([saved])


def test_latency_vs_flops_says_when_the_flop_design_dominates():
    def saved(flops_latency, flops_var, lat_var, verdict="optimum"):
        lat = dict(n=16, config="2x16", cost=2.0, baseline_cost=4.0, var_ratio=lat_var, verdict=verdict, notes=["x"])
        flops = dict(n=4, config="9x4", var_ratio=flops_var)
        return {
            "designs": {"flops": {"primal": flops}, "latency": {"primal": lat}},
            "flops_design_latency": flops_latency,
        }

    gap = design_section.latency_vs_flops(saved(1.5, 0.5, 0.8))  # faster and smoother: dominates
    assert gap["flops_design_dominates"] and gap["width_ratio"] == 4 and gap["flops_design_latency_ratio"] == 0.375
    assert not design_section.latency_vs_flops(saved(2.5, 0.5, 0.8))["flops_design_dominates"]  # slower
    assert not design_section.latency_vs_flops(saved(1.5, 0.9, 0.8))["flops_design_dominates"]  # rougher
    gap = design_section.latency_vs_flops(saved(1.5, 0.5, 1.2, "no improvement found"))
    assert gap["latency_verdict"] == "no improvement found" and gap["latency_notes"] == ["x"]


def gap_block(flops_latency=1.5, verdict="optimum", alpha=1.2, params=1000):
    """A saved block_designs with what the latency sentence and the checks read: a FLOP design 9x4 and a latency
    design 2x16 (baseline 1x256, 4 s a batch of 8), parameter and FLOP designs at ``params`` against 1000."""
    one = dict(n=4, config="9x4", var_ratio=0.5, params=params, baseline_params=1000, strong_duality=True)
    lat = dict(n=16, config="2x16", cost=2.0, baseline_cost=4.0, var_ratio=0.8, verdict=verdict, notes=["noisy"])
    return {
        "block": "toy",
        "title": "Toy block",
        "batch": 8,
        "alpha": {"alpha": alpha},
        "designs": {b: {"primal": one, "dual": one} for b in ("params", "flops")} | {"latency": {"primal": lat}},
        "flops_design_latency": flops_latency,
    }


def test_latency_sentence_says_what_the_latency_search_found():
    found, none = design_section.latency_sentence([gap_block(), gap_block(5.0, "no improvement found")]).data.split(
        "\n"
    )
    assert found == (
        "* **Toy block**: FLOP optimum 9x4 (n = 4); latency search: optimum 2x16 (n = 16), 4× wider members. At the "
        "baseline's FLOPs the FLOP-optimal ensemble takes 0.38× the baseline's time (4e+03 ms per batch of 8); the "
        "latency search's 0.50×. The FLOP design dominates it (as fast and at least as smooth). Note: noisy."
    )
    assert "latency search: no improvement found (its best, 2x16, does not beat the baseline)." in none
    assert "takes 1.25×" in none and "dominates" not in none


def test_check_records_the_checks_and_stops_a_wrong_page():
    class Run:
        def __init__(self):
            self.checks = []

        def check(self, name, holds, detail):
            self.checks.append((name, holds))

    run = Run()
    design_section.check(run, [gap_block()])
    assert run.checks == [(name, True) for name, _, _ in design_section.checks([gap_block()])] and len(run.checks) == 2
    with pytest.raises(RuntimeError, match="toy: fitted alpha -0.1 must be > 0"):
        design_section.check(Run(), [gap_block(alpha=-0.1)])
    with pytest.raises(RuntimeError, match="toy: step 6 missed the budget"):
        design_section.check(Run(), [gap_block(params=1200)])


def test_paper_block_step6_rows():
    """The paper's block through the generic path (2x2 input: the FLOP ratios do not depend on it)."""
    rows = design_section.paper_block_step6((256, 2, 2))
    got = [
        (r["budget"], r["step 6 matches"][:3], r["generic design"], r["paper"], r["same as the paper"]) for r in rows
    ]
    assert got == [
        ("parameters", "the", "35×10", "37×10d", "✗"),
        ("parameters", "Res", "37×10", "37×10d", "✓"),
        ("FLOPs", "the", "53×7", "44×8d", "✗"),
        ("FLOPs", "Res", "51×7", "44×8d", "✗"),
        ("FLOPs", "Res", "44×8", "44×8d", "✓"),
    ]


@pytest.mark.filterwarnings("ignore:the draws at width index")  # T = 16: heavy tails at narrow widths
def test_paper_block_alpha_rows():
    rows = design_section.paper_block_alpha((2, 4, 8), 16)
    generic_init, eq3, specialized = (r["α"] for r in rows)
    assert eq3 == specialized and eq3 != generic_init  # the same draws; the factory's own draw is another function
    assert rows[1]["95% interval"] == rows[2]["95% interval"] and rows[0]["draws per width"] == 16
