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
# # Lemma 1: the ensemble NTK converges to the Neural Mean Kernel
#
# This notebook reproduces **Fig. 2** and checks **Lemma 1** of Sec. 2 (Eqs. 3–6). A collegial
# ensemble sums $m$ independently drawn copies of the NTK-parameterized ReLU MLP $F_n$ of Eq. 3,
# $F_e = m^{-1/2}\sum_j F_n(\theta_j)$, so its NTK is the mean of its members' NTKs (Eq. 4),
# $K_e = \frac1m \sum_j K_n(\theta_j)$. By the strong law of large numbers $K_e$ converges almost
# surely, as $m\to\infty$, to the **Neural Mean Kernel** $K_n^\infty = \mathbb E_\theta[K_n(\theta)]$
# (Eq. 5, Lemma 1, Eq. 6), and since the members are independent $\mathrm{Var}(K_e) = \mathrm{Var}(K_n)/m$
# (Eq. 11).
#
# As in Fig. 2 the inputs are $x_\gamma = [\cos\gamma, \sin\gamma]$, $\gamma\in[-\pi,\pi]$, and we follow
# the diagonal entries $K[x_\gamma, x_\gamma]$ and the off-diagonal entries $K[x_0, x_\gamma]$.
# We show (a) the ensemble NTK of the first $m$ members smoothing as $m$ grows, (b) the NMK (the Monte
# Carlo mean over draws) at width $n$ and at a wider net against the analytic infinite-width kernel
# $K^\infty$ (the paper's black line came from a $\times100$ wider net; the analytic kernel is the exact
# reference), then $\mathrm{Var}(K_e)$ against $m$ with its fitted slope, and how much the NMK depends on $n$.
#
# Two scales run this page: the quick profile (the notebook's own defaults) in seconds on a CPU with narrow
# members ($n = 64$), and the paper profile (`profiles/paper.yaml`) with the paper's $L = 4$, $n = 1000$
# and $m$ up to 100. The header below names the profile of the run shown here.

# %% tags=["parameters"]
profile: str = "quick"
results_dir: str = ""  # where this run saves: set by `cepaper run`; "" = $CEPAPER_RESULTS, else scratch
seed: int = 0
device: str = "cpu"
depth: int = 4  # L, hidden layers of every member
n: int = 64  # width of every hidden layer
n_gamma: int = 41  # angles gamma in [-pi, pi]
m_max: int = 32  # largest ensemble of panel (a)
draws: int = 2048  # member draws at width n (NMK, spread, Var vs m)
ms: list = [1, 2, 4, 8, 16, 32, 64]  # multiplicities of the Var(K_e) fit
blocks: int = 16  # jackknife blocks of the slope interval
level: float = 0.99  # coverage of the slope interval
widths: list = [8, 16, 32, 256]  # other widths of the NMK study; the largest is the "wide net"
width_draws: list = [8192, 4096, 2048, 256]
z_max: float = 5.0  # |NMK - K_inf| allowed (max over all entries and widths), in SE

# %% tags=["remove-input"]
from cepaper.book import pages, results
from cepaper.sections import lemma1 as section

widths, width_draws, z_max = section.check_params(n, widths, width_draws, z_max)
run = results.Run(
    "lemma1",
    profile,
    seed=seed,
    device=device,
    params=dict(
        depth=depth,
        n=n,
        n_gamma=n_gamma,
        m_max=m_max,
        draws=draws,
        ms=ms,
        blocks=blocks,
        level=level,
        widths=widths,
        width_draws=width_draws,
        z_max=z_max,
    ),
    results_dir=results_dir,
)
section.show(run.header(), pages.show(section.setup_table(depth, n, m_max, ms, widths)))

# %% [markdown]
# ## Member NTKs over independent draws
#
# `mlp_ntk_sampler` draws a batch of members as one `CollegialMLP` and computes each member's NTK by
# the structured path (one batched forward and backward). `circle_inputs` gives $x_0$, the $x_\gamma$
# and the entries we keep: the $G$ diagonal entries, then the $G$ off-diagonal ones.

# %%
drawn = section.draw_kernels(n_gamma, depth, n, draws, widths, width_draws, seed=seed, device=device)

# %% [markdown]
# ## Saving the results
#
# The running ensemble $K_e(m)$ of the first $m$ members (panel a), the Monte Carlo moments at every
# width (panel b and the width study), and $\mathrm{Var}(K_e)$ against $m$ with the slope of its
# log–log fit. The slope's interval is a delete-one-block jackknife over the member draws.

# %%
section.save(run, drawn, depth, m_max, ms, blocks=blocks, level=level)

# %% [markdown]
# ## (a) The ensemble NTK smooths as *m* grows
#
# Each slice at fixed $m$ is the NTK of one ensemble, the first $m$ members; the black line is $K^\infty$.
# A single member ($m = 1$) is a rough random function of $\gamma$; its fluctuations average out as $m$ grows.

# %% tags=["remove-input"]
pages.figure(
    section.lemma1_surface(run.load("ensemble")),
    f"The ensemble NTK K_e of the first m members (L = {depth}, n = {n}, m = 1..{m_max}) against the angle γ "
    "and log₂ m; left the diagonal K[x_γ, x_γ], right the off-diagonal K[x_0, x_γ]; black: the analytic K∞",
    paper="2(a)",
    run=run,
)
# %% [markdown]
# ## (b) The NMK against the infinite-width kernel
#
# The Monte Carlo mean over independent draws estimates the NMK $K^\infty_n$ (error bars: 2 standard
# errors). At width $n$ and at the wider net it lies on the analytic $K^\infty$; the shaded band is the
# spread of a single member, which the ensemble divides by $\sqrt m$.

# %% tags=["remove-input"]
pages.figure(
    section.lemma1_nmk(run.load("nmk")),
    f"The NMK (Monte Carlo mean over member draws, ±2 SE) at n = {n} and at n = {max(widths)} against the "
    f"analytic infinite-width K∞ (black), L = {depth}; band: ±1 standard deviation of a single member at n = {n}",
    paper="2(b)",
    run=run,
)
# %% [markdown]
# ## Var(Kₑ) against *m*
#
# Disjoint groups of $m$ members give independent ensembles; the sample variance of their NTKs,
# averaged over $\gamma$, falls as $1/m$ (Eq. 11). The fitted log–log slope and its interval (a
# delete-one-block jackknife with Student's $t$ at the nominal coverage `level`; the check below
# uses it, and the test suite checks the jackknife's standard error against its sampling
# distribution on synthetic draws):

# %% tags=["remove-input"]
pages.figure(
    section.lemma1_variance(run.load("variance")),
    f"Var(K_e) over disjoint ensembles of m = {min(ms)}..{max(ms)} members ({draws} draws at n = {n}), "
    "averaged over γ, log–log, with the fitted slope and its jackknife interval; Eq. 11 predicts slope −1",
    run=run,
)
pages.show(
    section.variance_rows(run.load("variance")),
    headers={"slope": "slope of log Var(K_e) in log m", "se": "jackknife SE", "blocks": "jackknife blocks"},
)

# %% [markdown]
# ## Does the NMK depend on the width?
#
# The paper observes "little to no dependence of the NMK on the widths". We quantify it by fitting
# $K^\infty_n - K^\infty = c(\gamma)/n$ over the widths, entry by entry. On the diagonal the Monte Carlo
# mean matches $K^\infty$ within a few standard errors at every width, even very narrow ones
# ($c \approx 0$; the largest $|z|$ is a maximum over all angles and widths).
# Off the diagonal narrow nets show a finite-width correction of order $1/n$, which at the paper's
# $n = 1000$ is a small fraction of a percent: too small for Fig. 2(b) to see. Table: the largest
# $|z|$-scores against $K^\infty$ and the largest off-diagonal deviation, relative to $K^\infty(x, x)$.

# %% tags=["remove-input"]
saved = run.load("nmk")
pages.figure(
    section.lemma1_width(saved),
    "How the NMK depends on the width n: left, the RMS over γ of (NMK_n − K∞)/K∞(x, x) against n, beside its "
    "Monte Carlo standard error (dashed) and the fit c/n (dotted); right, the coefficient c(γ) of the fit "
    f"NMK_n − K∞ = c/n (±2 SE) over n = {', '.join(map(str, sorted(widths + [n])))}",
    run=run,
)
section.show(
    pages.show(section.nmk_rows(saved), headers={"n": "width n", "draws": "member draws"}),
    section.width_sentence(saved),
)

# %% [markdown]
# ## Checks
#
# Lemma 1 and Eq. 11 checked on this run: the fitted slope's interval contains $-1$; the NMK's
# diagonal equals $K^\infty$ within `z_max` standard errors at every width, and at the widest net so
# does its off-diagonal; and the ensemble of the first `m_max` members lies within `z_max` of its
# standard error $\sigma\sqrt{1/m - 1/T}$ from the NMK of all $T$ draws at every $\gamma$ (a single
# member's spread would put it $\sqrt{m}$ times further out). A check that does not hold is reported
# here and at the top of the page; it does not stop the run.

# %% tags=["hide-input"]
section.check(run, z_max)
pages.checks(run.load("checks"))
