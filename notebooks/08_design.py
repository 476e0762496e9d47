# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Design your own ensemble
#
# The paper derives its ResNeXt modules from one block (Fig. 5), one $\alpha$ (Sec. 4.2) and one budget
# (parameters or FLOPs). Nothing in Algorithms 1 and 2 is specific to that block: all they need is a
# factory $(m, n) \mapsto$ module of $m$ members of width $n$. `cepaper.search.any_module` reads everything else from
# the built modules — the member's fan-ins for $\sum_l 1/\text{fan-in}_l$ (Eq. 9), its parameters, FLOPs or
# measured latency for $\beta(n)$ (Eqs. 8, 15) — so the method applies to any PyTorch block:
#
# 1. **Algorithm 1**: fit $\alpha$ of Eq. 9, $\mathrm{Var}(K_n) \propto e^{\alpha \sum_l 1/\text{fan-in}_l} - 1$,
#    by Monte Carlo over draws of the member `factory(1, n)` (`design.fit_member_alpha`);
# 2. **Algorithm 2**: with that $\alpha$, the primal (Eq. 12: lowest $\mathrm{Var}(K)$ at the baseline's
#    budget) and dual (Eq. 14: cheapest at the baseline's $\mathrm{Var}(K)$) optima, under the parameter,
#    FLOP or **latency** budget (`design.design_module`).
#
# This page applies both to two blocks the paper never studied:
#
# * the **channel MLP of a vision MLP** (MLP-Mixer's), $x + W_3\,\mathrm{GELU}(W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}(x)))$
#   on 64 channels × 16 tokens, whose hidden layer $W_2$ is grouped: $m$ members $64 \to n \to n \to 64$,
#   summed. The baseline is the usual $4\times$ expansion, $1 \times 256$;
# * **stage 1 of torchvision's ResNet-50** (three Bottleneck blocks, $64 \to 256$ channels), built by
#   torchvision itself with `groups` $= m$ and `width_per_group` $= n$; the baseline is ResNet-50's
#   $1 \times 64$ (ResNeXt-50 32×4d is the same stage with $m = 32$, $n = 4$).
#
# From the command line the same steps are `cepaper fit-alpha --module torchvision:resnet50:layer1
# --input-shape 64,8,8 --readout mean` and `cepaper design --module torchvision:resnet50:layer1 --input-shape 64,8,8
# --baseline 1x64 --budget latency --alpha A`. The read-out matters: these blocks end in a ReLU after the
# shortcut sum, so the default `center` read-out (one output unit) is off in a share of the draws (in every
# draw for the project's own Fig. 5 block, whose NTK is then exactly 0: `fit-alpha` says so and names
# `--readout mean`); `mean` reads every unit. `fit-alpha` never saves an $\alpha \le 0$. The quick profile
# (the notebook's own defaults) fits $\alpha$ with few draws, so its intervals are wide; the paper profile uses
# $T = 1000$ draws at more widths. The header below names the profile of the run shown here.

# %% tags=["parameters"]
profile: str = "quick"
results_dir: str = ""  # where this run saves: set by `cepaper run`; "" = $CEPAPER_RESULTS, else scratch
seed: int = 0
device: str = "cpu"
widths: list = [2, 4, 8, 16, 32]  # member widths n of the alpha fit (Algorithm 1)
trials: int = 100  # weight draws per width
readout: str = "mean"  # scalar read-out of the member's output: mean, center, random
ns: list = [1, 2, 4, 8, 16, 32, 64, 128, 256]  # widths searched by Algorithm 2 (with the baseline's)
batch: int = 8  # examples in the FLOPs and latency input
repeats: int = 5  # timed forward + backward passes per latency (median)
threads: int = 1  # CPU threads of the fits and of the latencies

# %% tags=["remove-input"]
from cepaper.book import pages, results
from cepaper.sections import design as section

# Widths whose draws have a heavy tail are listed in the table below ("heavy-tailed widths": there the
# interval of alpha is too narrow); the fit's warning about each would only repeat that here.
section.quiet_tail_warnings()

run = results.Run(
    "design",
    profile,
    seed=seed,
    device=device,
    params=dict(widths=widths, trials=trials, readout=readout, ns=ns, batch=batch, repeats=repeats, threads=threads),
    results_dir=results_dir,
)
section.show(run.header())

# %% [markdown]
# ## Fit α, then search under three budgets
#
# For each block: Algorithm 1 on its member, then Algorithm 2 with the fitted $\alpha$, primal and dual,
# under parameters, FLOPs and latency (median seconds of a forward + backward pass, on the machine that
# builds this page). The searched widths are powers of two up to the baseline's.

# %%
section.save_blocks(run, widths, trials, ns, readout, batch, repeats, seed, device, threads)

# %% tags=["hide-input"]
saved = section.load_blocks(run)
pages.show(section.alpha_table(saved))

# %% [markdown]
# ### Does the generic fit recover the block's α?
#
# `fit_member_alpha` draws the member with the factory's own initialization unless told otherwise: for
# PyTorch modules the standard parameterization with its norms, which is not the paper's draw. With
# `init="eq3"` (`cepaper fit-alpha --init eq3`) it redraws the member in Eq. 3's parameterization: weights
# $\theta \sim N(0, 1)$ scaled by $\sqrt{2/\text{fan-in}}$ (the last layer by $\sqrt{1/\text{fan-in}}$), norms
# off, biases 0. On the paper's own block (the project's `ResNeXtBottleneck`, whose ReLU follows the shortcut
# sum) that is the specialized sweep's draw, weight for weight, so the two fits agree to rounding; the factory's
# initialization is another function, with another α:

# %%
run.save("paper_block_alpha", section.paper_block_alpha(widths, trials, readout, seed, device, threads))

# %% tags=["hide-input"]
pages.show(run.load("paper_block_alpha"))

# %% [markdown]
# ## The primal and dual curves
#
# Left: the primal objective, the ensemble's $\mathrm{Var}(K)$ over the baseline's at the $m_p(n)$ that spends
# the baseline's budget; right: the dual efficiency $\rho$ (baseline's budget over the ensemble's) at the
# $m_d(n)$ that matches the baseline's $\mathrm{Var}(K)$. One curve per budget; dots mark the optima.

# %% tags=["hide-input"]
pages.figure(
    section.plot_budgets(saved),
    f"Algorithm 2 on two blocks the paper never studied (rows): the primal Var(K_e)/Var(K_ñ) at m_p(n) (left) and "
    f"the dual efficiency ρ at m_d(n) (right), one curve per budget (parameters, FLOPs, latency on {device}), "
    f"optima marked; α fitted with {trials} draws per width",
    run=run,
)

# %% [markdown]
# ## The optima
#
# Step 6 of Algorithm 2 makes $m$ an integer: for the primal, the $m$ at which the whole module
# $m \times n$ costs the baseline's budget (for latency found by bracketing measured latencies, since latency
# is not affine in $m$); for the dual, the nearest integer to $m_d(n)$. $\rho$ is the baseline's cost over
# the ensemble's, in the budget's own unit. The curves above take $m_p(n) = \beta_s/\beta(n)$, as if the
# cost of $m$ members were $m$ times one member's; that holds for parameters and FLOPs up to the layers
# the members share, but not for latency (fixed overheads, better use of the machine by wider layers), so
# under latency the integer $m$ of step 6, measured, can differ much from the curve's $m_p(n)$.

# %% tags=["hide-input"]
section.show(*section.optima_tables(saved))

# %% [markdown]
# ### What step 6 matches, and how FLOPs are counted
#
# Above, step 6 matches the cost of the block itself, and FLOPs are `FlopCounterMode`'s: $2 \times$ the
# multiply-adds of convs and matmuls, nothing for norms, activations or sums. The paper matches the *whole
# network* built from the block (Sec. 4.2.1: "after adjusting to the whole network"), and the counts behind its
# FLOP optimum include one FLOP per conv output (`search.BottleneckDesign`'s convention). Both are arguments of
# `design_module` (`network=`, a factory of the whole network or a number of blocks; `flops=`: `macs`, `2macs`,
# `2macs+acts`) and of `cepaper design --module` (`--network`, `--network-blocks`, `--flops-convention`). On
# the paper's own block, baseline $1 \times 128$, $\alpha = 1.6$, the generic path gives:

# %% tags=["hide-input"]
pages.show(section.paper_block_step6())

# %% [markdown]
# Counting MACs instead of $2 \times$ MACs changes nothing (a common factor cancels in Eqs. 12-14 and in step
# 6); the one FLOP per conv output moves the FLOP optimum from $n = 7$ to the paper's $n = 8$.

# %% [markdown]
# ## Latency is not FLOPs
#
# Counting FLOPs favours many narrow members; on a real machine a grouped layer with many small groups
# usually runs below its FLOP rate, which can move the latency optimum to wider members. How far apart the
# two are on the machine that built this page, and what the FLOP-optimal ensemble costs in time. A latency
# is the median of the timed passes (robust to the odd slow pass), reported with its interquartile range (IQR);
# a design that does not beat the baseline on its own budget (primal: lower $\mathrm{Var}(K)$ at the baseline's
# latency; dual: faster at the baseline's $\mathrm{Var}(K)$) reads "no improvement found", and where the spread
# of the timings exceeds the differences that decide the optimum (between widths, between $m$ and $m \pm 1$ in
# step 6, between design and baseline) the note says so: on a shared CPU that is common.

# %% tags=["hide-input"]
section.latency_sentence(saved)

# %% [markdown]
# ## Checks
#
# Sec. 3 on each block, checked on this run: the primal design at the baseline's parameters has a lower
# $\mathrm{Var}(K)$ than the baseline, and strong duality holds at the counted budgets (measured latency is
# noisy, so it is reported above, not checked). A check that does not hold is reported here and at the top of
# the page; it does not stop the run. A fitted $\alpha \le 0$, or a primal design off the baseline's
# parameters by more than 10%, would make the page wrong: the run stops.

# %% tags=["hide-input"]
section.check(run, saved)
pages.checks(run.load("checks"))
