"""The book's page *Design your own ensemble* (notebook ``08_design``): Algorithms 1 and 2 of
:mod:`cepaper.search.any_module` on two blocks the paper never studied.

* :func:`mixer_channel_block`: the channel MLP of a vision MLP (MLP-Mixer's, Tolstikhin et al. 2021),
  ``C -> [m n] -> [m n] -> C`` on ``(C, T)`` tokens, its middle layer grouped: ``m`` members
  ``C -> n -> n -> C`` whose outputs are summed (as the ResNeXt block sums its paths, Fig. 5).
* ``torchvision:resnet50:layer1``: the first stage of torchvision's ResNet-50 (three Bottleneck blocks),
  ``groups = m``, ``width_per_group = n`` (:class:`cepaper.search.factories.TorchvisionFactory`).

:func:`block_designs` fits alpha (Algorithm 1) and runs Algorithm 2 under three budgets (params,
FLOPs, latency measured here), :func:`save_blocks` saves it for every block; :func:`alpha_table`,
:func:`optima_tables`, :func:`latency_sentence`, :func:`plot_budgets` and :func:`check` read the saved results.
"""

import numpy as np
import torch
from torch import nn

from cepaper import search
from cepaper.alpha import any_member
from cepaper.search import any_module, factories
from cepaper.sections._shared import markdown, quiet_tail_warnings, show  # noqa: F401 (the notebook's)

#: The page's two blocks: factory spec, one example's input shape, baseline ``(m_tilde, n_tilde)``.
BLOCKS = {
    "mixer": dict(
        title="vision-MLP channel block",
        spec="cepaper.sections.design:mixer_channel_block",
        input_shape=(64, 16),
        baseline=(1, 256),
    ),
    "resnet50_layer1": dict(
        title="torchvision ResNet-50, stage 1",
        spec="torchvision:resnet50:layer1",
        input_shape=(64, 8, 8),
        baseline=(1, 64),
    ),
}
BUDGET_NAMES = {"params": "parameters", "flops": "FLOPs", "latency": "latency"}


class MixerChannelBlock(nn.Module):
    """``x + W_3 GELU(W_2 GELU(W_1 LN(x)))`` on ``(N, C, T)``: ``W_1: C -> m n`` and ``W_3: m n -> C`` dense,
    ``W_2`` grouped (``m`` blocks ``n x n``), all 1x1 ``Conv1d`` with biases; ``LN`` over channels.
    Member fan-ins ``(C, n, n)``, so Eq. 9's sum is ``1/C + 2/n``."""

    def __init__(self, channels, m, n):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Conv1d(channels, m * n, 1)
        self.fc2 = nn.Conv1d(m * n, m * n, 1, groups=m)
        self.fc3 = nn.Conv1d(m * n, channels, 1)

    def forward(self, x):
        h = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return x + self.fc3(nn.functional.gelu(self.fc2(nn.functional.gelu(self.fc1(h)))))


def mixer_channel_block(m, n, channels=64):
    """Factory ``(m, n) -> MixerChannelBlock(channels, m, n)`` (64 channels: :data:`BLOCKS`)."""
    return MixerChannelBlock(channels, m, n)


def block_designs(block, widths, trials, ns, readout="mean", batch=8, repeats=10, seed=0, device="cpu", threads=1):
    """Algorithm 1 then Algorithm 2 for ``block`` (a key of :data:`BLOCKS`).

    Args:
        widths, trials, readout: of :func:`cepaper.alpha.any_member.fit_member_alpha` (the member ``factory(1, n)``).
        ns: widths searched by Algorithm 2 (the baseline's ``n_tilde`` is added).
        batch, repeats: of the FLOPs/latency input and of each latency (median of ``repeats``).
    Returns:
        dict: ``block``, ``title``, ``spec``, ``input_shape``, ``baseline``, ``alpha`` (the fit's dict,
        without per-width samples), ``designs`` (budget -> objective -> :func:`design_module` result),
        ``flops_design_latency`` (seconds of the FLOP-primal ensemble, measured), ``threads``.
    """
    info = BLOCKS[block]
    factory = factories.load_factory(info["spec"])
    torch.set_num_threads(threads)
    fitted = any_member.fit_member_alpha(
        factory, info["input_shape"], widths, trials, seed, readout, progress=False, device=device, n_boot=500
    )
    alpha = fitted["alpha"]
    if not alpha > 0:
        raise ValueError(f"{block}: fitted alpha must be > 0 to search, got {alpha!r}; raise trials or widths")
    m_tilde, n_tilde = info["baseline"]
    ns = sorted({int(n) for n in ns if int(n) <= n_tilde} | {n_tilde})
    module = any_module.FactoryModule(
        factory, info["input_shape"], batch=batch, device=device, repeats=repeats, seed=seed
    )
    designs = {
        b: {
            o: any_module.design_module(
                factory, info["input_shape"], info["baseline"], o, b, alpha, ns=ns, module=module
            )
            for o in search.OBJECTIVES
        }
        for b in any_module.BUDGETS
    }
    fp = designs["flops"]["primal"]
    return {
        "block": block,
        "title": info["title"],
        "spec": info["spec"],
        "input_shape": list(info["input_shape"]),
        "baseline": f"{m_tilde}x{n_tilde}",
        "batch": batch,
        "repeats": repeats,
        "threads": threads,
        "alpha": {k: v for k, v in fitted.items() if k not in ("fits", "samples")}
        | {"heavy_tail_widths": fitted["fits"][fitted["entry"]]["heavy_tail_widths"]},
        "designs": designs,
        "flops_design_latency": module.cost(fp["n"], "latency", groups=fp["m"]),
    }


def paper_block_step6(input_shape=(256, 32, 32), alpha=search.ALPHA_BOTTLENECK):
    """The paper's own Fig. 5 block (``ResNeXtBottleneck(256, 256, m n, groups=m)``) through the generic path,
    baseline ``1x128``: step 6 on the block alone or on ResNeXt-29 built from it (``ResNeXtCifar`` on 3x32x32),
    FLOPs as ``2 x MACs`` (``FlopCounterMode``) or ``2 x MACs`` + one per conv output (``2macs+acts``, the
    specialized path's convention), beside the paper's optimum (:data:`cepaper.sections.paper.MODELS`).

    Returns:
        list of rows: budget, FLOP convention, what step 6 matches, the generic design, the paper's, and ✓/✗.
    """
    from cepaper.models.resnext import ResNeXtBottleneck, ResNeXtCifar
    from cepaper.sections import paper

    block = lambda m, n: ResNeXtBottleneck(256, 256, m * n, groups=m)
    printed = {
        r["budget"]: r["config"]
        for r in paper.MODELS
        if r["arch"] == "resnext29"
        and r["role"] == "optimum"
        and r["from_baseline"] == "1x128d"
        and r["objective"] == "primal"
    }
    modules = {f: any_module.FactoryModule(block, input_shape, flops=f) for f in ("2macs", "2macs+acts")}
    words = {"2macs": "2 × MACs", "2macs+acts": "2 × MACs + one per conv output"}
    rows = []
    for budget, flops, network in (
        ("params", "2macs", None),
        ("params", "2macs", ResNeXtCifar),
        ("flops", "2macs", None),
        ("flops", "2macs", ResNeXtCifar),
        ("flops", "2macs+acts", ResNeXtCifar),
    ):
        d = any_module.design_module(
            block,
            input_shape,
            (1, 128),
            "primal",
            budget,
            alpha,
            module=modules[flops],
            network=network,
            network_input_shape=(3, 32, 32),
        )
        rows.append(
            {
                "budget": BUDGET_NAMES[budget],
                "FLOPs counted as": words[flops] if budget == "flops" else "—",
                "step 6 matches": "the block" if network is None else "ResNeXt-29 built from it",
                "generic design": d["config"].replace("x", "×"),
                "paper": printed[budget].replace("x", "×"),
                "same as the paper": "✓" if f"{d['config']}d" == printed[budget] else "✗",
            }
        )
    return rows


def paper_block_alpha(widths, trials, readout="mean", seed=0, device="cpu", threads=1):
    """Algorithm 1 on the paper's own Fig. 5 block (``ResNeXtBottleneck(256, 256, n)``, input 256 x 3 x 3) three
    ways: the generic fit with the factory's initialization (PyTorch's default, BatchNorm), the generic fit in
    Eq. 3's parameterization (``init="eq3"``), and the specialized sweep of :mod:`cepaper.alpha.sweeps` on the same
    function (post-sum ReLU, the same read-out, inputs and seeds: the same draws as ``eq3``).

    Returns:
        list of rows: how the member is drawn, alpha, its interval, widths and draws.
    """
    from cepaper.alpha import fit
    from cepaper.models.resnext import ResNeXtBottleneck

    block = lambda m, n: ResNeXtBottleneck(256, 256, m * n, groups=m)
    kw = dict(progress=False, device=device, n_boot=500, threads=threads)
    fits = [
        (
            "generic, the factory's initialization",
            any_member.fit_member_alpha(block, (256, 3, 3), widths, trials, seed, readout, **kw),
        ),
        (
            'generic, Eq. 3\'s parameterization (init="eq3")',
            any_member.fit_member_alpha(block, (256, 3, 3), widths, trials, seed, readout, init="eq3", **kw),
        ),
        (
            "specialized sweep (cepaper.alpha.sweeps), post-sum ReLU",
            fit.measure_alpha("bottleneck", widths, trials, seed, post_relu=True, readout=readout, **kw),
        ),
    ]
    return [
        {
            "member drawn by": how,
            "α": round(r["alpha"], 3),
            "95% interval": f"[{r['alpha_ci'][0]:.3f}, {r['alpha_ci'][1]:.3f}]",
            "read-out": readout,
            "widths": ", ".join(map(str, r["widths"])),
            "draws per width": r["trials"],
        }
        for how, r in fits
    ]


def save_blocks(run, widths, trials, ns, readout, batch, repeats, seed, device, threads):
    """:func:`block_designs` of every block of :data:`BLOCKS`, each saved on ``run`` under the block's name."""
    for block in BLOCKS:
        run.save(block, block_designs(block, widths, trials, ns, readout, batch, repeats, seed, device, threads))


def load_blocks(run):
    """The saved :func:`block_designs` of every block of :data:`BLOCKS`, in order, from ``run``."""
    return [run.load(block) for block in BLOCKS]


def alpha_table(saved):
    """One row per saved :func:`block_designs` (``saved``: a list of them): the block, its factory and input,
    the fitted alpha (Algorithm 1) with its 95% interval, the widths and draws, and the heavy-tailed widths."""
    return [
        {
            "block": s["title"],
            "factory": s["spec"],
            "input (one example)": " × ".join(map(str, s["input_shape"])),
            "α": round(s["alpha"]["alpha"], 3),
            "95% interval": f"[{s['alpha']['alpha_ci'][0]:.3f}, {s['alpha']['alpha_ci'][1]:.3f}]",
            "widths": ", ".join(map(str, s["alpha"]["widths"])),
            "draws per width": s["alpha"]["trials"],
            "read-out": s["alpha"]["readout"],
            "heavy-tailed widths": ", ".join(map(str, s["alpha"]["heavy_tail_widths"])) or "none",
        }
        for s in saved
    ]


def optima_tables(saved):
    """What the page shows of the optima of each saved :func:`block_designs` (``saved``: a list of them): its
    title, :func:`designs_table` and, where there are latency designs, :func:`latency_table`."""
    from cepaper.book import pages

    shown = []
    for s in saved:
        shown += [
            markdown(f"**{s['title']}** (baseline {s['baseline'].replace('x', '×')}, α = {s['alpha']['alpha']:.3f})"),
            pages.show(designs_table(s), digits=3),
        ]
        if latency_table(s):
            shown += [
                markdown("Under latency, the medians and spreads of the timings:"),
                pages.show(latency_table(s), 3),
            ]
    return shown


def latency_sentence(saved):
    """Markdown, one item per saved :func:`block_designs` (``saved``: a list of them): the FLOP optimum, what the
    latency search found (an optimum and how much wider its members are, or no improvement on the baseline), the
    time each design takes against the baseline's, whether the FLOP design dominates, and the timing notes."""
    lines = []
    for s in saved:
        gap = latency_vs_flops(s)
        if gap["latency_verdict"] == "optimum":
            found = f"optimum {gap['latency_config']} (n = {gap['latency_n']}), {gap['width_ratio']:.3g}× wider members"
        else:
            found = f"no improvement found (its best, {gap['latency_config']}, does not beat the baseline)"
        dominates = (
            " The FLOP design dominates it (as fast and at least as smooth)." if gap["flops_design_dominates"] else ""
        )
        lines.append(
            f"* **{s['title']}**: FLOP optimum {gap['flops_config']} (n = {gap['flops_n']}); latency search: {found}. "
            f"At the baseline's FLOPs the FLOP-optimal ensemble takes {gap['flops_design_latency_ratio']:.2f}× the "
            f"baseline's time ({1e3 * gap['baseline_latency']:.3g} ms per batch of {s['batch']}); the latency "
            f"search's {gap['latency_design_latency_ratio']:.2f}×.{dominates}"
            + "".join(f" Note: {note}." for note in gap["latency_notes"])
        )
    return markdown("\n".join(lines))


def designs_table(saved):
    """One row per budget and objective of a saved :func:`block_designs`: the verdict (``"optimum"`` or
    ``"no improvement found"``), the best design and its costs (:func:`cepaper.verdicts.judge`); the
    latency timings are :func:`latency_table`'s."""
    return [
        {
            "budget": BUDGET_NAMES[budget],
            "objective": objective,
            "verdict": d["verdict"],
            "ensemble (baseline)": f"{d['config']} ({d['baseline']})",
            "params (baseline)": f"{d['params']:,} ({d['baseline_params']:,})",
            "ρ (budget)": round(d["rho"], 3),
            "Var(K) ratio": round(d["var_ratio"], 3),
        }
        for budget, by in saved["designs"].items()
        for objective, d in by.items()
    ]


def latency_table(saved):
    """The latency designs of a saved :func:`block_designs`: the median latency and IQR of the design and
    of the baseline, and whether the timings' spread resolves the decisions."""
    return [
        {
            "objective": objective,
            "ensemble": d["config"],
            "latency (ms)": round(1e3 * d["cost"], 3),
            "IQR (ms)": round(1e3 * d["latency"]["iqr"], 3),
            "baseline latency (ms)": round(1e3 * d["baseline_cost"], 3),
            "baseline IQR (ms)": round(1e3 * d["baseline_latency"]["iqr"], 3),
            "timings resolve it": "✓" if d["timings_resolved"] else "✗",
        }
        for objective, d in saved["designs"].get("latency", {}).items()
    ]


def latency_vs_flops(saved):
    """How far the latency-primal design lies from the FLOP-primal one: widths, ensembles, the measured latency
    of each against the baseline's, the latency design's verdict and notes, and whether the FLOP design
    dominates it (as fast, measured, and at least as smooth)."""
    f, lat = saved["designs"]["flops"]["primal"], saved["designs"]["latency"]["primal"]
    base = lat["baseline_cost"]
    flops_latency = saved["flops_design_latency"]
    return {
        "flops_n": f["n"],
        "flops_config": f["config"],
        "latency_n": lat["n"],
        "latency_config": lat["config"],
        "latency_verdict": lat["verdict"],
        "latency_notes": lat["notes"],
        "width_ratio": lat["n"] / f["n"],
        "baseline_latency": base,
        "flops_design_latency_ratio": flops_latency / base,
        "latency_design_latency_ratio": lat["cost"] / base,
        # the FLOP design is as fast (measured) and at least as smooth: the latency search adds nothing
        "flops_design_dominates": bool(flops_latency <= lat["cost"] and f["var_ratio"] <= lat["var_ratio"]),
    }


def plot_budgets(saved_blocks):
    """Primal ``Var(K_e)/Var(K_ñ)`` at ``m_p(n)`` (left) and dual ``ρ(m_d(n), n)`` (right) per block (rows),
    one curve per budget, optima marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(saved_blocks), 2, figsize=(11, 3.6 * len(saved_blocks)), squeeze=False)
    fig.subplots_adjust(wspace=0.3, hspace=0.5, top=0.92, bottom=0.08, left=0.08, right=0.97)
    colors = {"params": "tab:red", "flops": "tab:blue", "latency": "tab:green"}
    for row, saved in zip(axes, saved_blocks):
        for budget, by in saved["designs"].items():
            for ax, objective, key in ((row[0], "primal", "var_ratio_primal"), (row[1], "dual", "rho_dual")):
                c, d = by[objective]["curve"], by[objective]
                ax.plot(c["n"], c[key], color=colors[budget], lw=1.8, label=BUDGET_NAMES[budget])
                y = np.asarray(c[key])[list(c["n"]).index(d["n"])]
                ax.plot([d["n"]], [y], "o", color=colors[budget], ms=6)
        row[0].set_yscale("log")
        row[0].axhline(1.0, color="gray", lw=0.8, ls=":")
        row[1].axhline(1.0, color="gray", lw=0.8, ls=":")
        for ax, objective, label in (
            (row[0], "primal", "Var(K_e) / Var(K_ñ) at m_p(n)"),
            (row[1], "dual", "efficiency ρ(m_d(n), n)"),
        ):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("member width n")
            ax.set_ylabel(label)
            ax.set_title(
                f"{objective}: {saved['title']} (baseline {saved['baseline'].replace('x', '×')}, "
                f"α = {saved['alpha']['alpha']:.2f})",
                fontsize=9,
            )
            ax.legend(fontsize=8)
    return fig


def checks(saved):
    """Algorithm 2 on each block checked on a run: ``[(name, holds, detail)]`` for
    :meth:`cepaper.book.results.Run.check`. ``saved``: :func:`block_designs` results. Checked, per block:
    the primal design at the baseline's parameters has a lower ``Var(K)`` than the baseline (Sec. 3);
    strong duality (``n_p = n_d``) at the counted budgets, parameters and FLOPs. Measured latency is
    noisy, so it is reported, not checked."""
    out = []
    for s in saved:
        d = s["designs"]
        primal = d["params"]["primal"]
        out.append(
            (
                f"{s['title']}: the primal design at the baseline's parameters has a lower Var(K) than the baseline",
                primal["var_ratio"] < 1,
                f"{primal['config']}: Var(K) ratio {primal['var_ratio']:.3f}",
            )
        )
        out.append(
            (
                f"{s['title']}: strong duality (n_p = n_d) at the parameter and FLOP budgets",
                all(
                    d[b]["primal"]["n"] == d[b]["dual"]["n"] and d[b]["primal"]["strong_duality"]
                    for b in ("params", "flops")
                ),
                "; ".join(f"{b}: n_p = {d[b]['primal']['n']}, n_d = {d[b]['dual']['n']}" for b in ("params", "flops")),
            )
        )
    return [(name, bool(holds), detail) for name, holds, detail in out]


def check(run, saved):
    """Record :func:`checks` of the saved :func:`block_designs` (``saved``: a list of them) on ``run``. A fitted
    alpha <= 0, or a primal design off the baseline's parameters by more than 10%, would make the page wrong:
    it raises ``RuntimeError`` instead."""
    for s in saved:
        if not s["alpha"]["alpha"] > 0:
            raise RuntimeError(f"{s['block']}: fitted alpha {s['alpha']['alpha']} must be > 0")
        primal = s["designs"]["params"]["primal"]
        if not abs(primal["params"] / primal["baseline_params"] - 1) < 0.1:
            raise RuntimeError(
                f"{s['block']}: step 6 missed the budget ({primal['params']:,} parameters against the baseline's "
                f"{primal['baseline_params']:,})"
            )
    for name, holds, detail in checks(saved):
        run.check(name, holds, detail)
