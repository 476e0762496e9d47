"""cepaper.sections.design (the page 08_design): the vision-MLP channel block and the saved designs' views."""

import torch

from cepaper import factories
from cepaper import generic
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
    assert saved["baseline"] == "1x256" and set(saved["designs"]) == set(generic.BUDGETS)
    assert saved["designs"]["params"]["primal"]["curve"]["n"] == [4, 16, 64, 256]
    rows = design_section.designs_table(saved)
    assert len(rows) == 6 and all("latency (ms)" in r for r in rows if r["budget"] == "latency")
    gap = design_section.latency_vs_flops(saved)
    assert gap["width_ratio"] == gap["latency_n"] / gap["flops_n"] and gap["flops_design_latency_ratio"] > 0
    design_section.plot_budgets([saved])
