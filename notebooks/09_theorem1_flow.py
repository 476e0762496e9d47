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
# # Theorem 1 under its own assumptions: the exponents of n and of m, apart
#
# Theorem 1 (Eq. 7) says the ensemble NTK moves by $O_p(1/(mn))$ during training. The [Fig. 9
# section](02_theorem1.ipynb) fits one exponent of $mn$ over single models and ensembles pooled,
# trained as the paper trains them: ReLU networks, mini-batch SGD. That pooled slope cannot tell
# Theorem 1's $-1$ from footnote 1's rigorous rate $n^{-1/2} m^{-1}$, and the theorem is proved
# under other assumptions: **gradient flow** on the L2 loss, an **analytic activation**, and the
# first order in $1/n$ (Appendix F). This section tests it under each of them.
#
# **The grid.** The paper's NTK-parameterized MLP with $L = 4$ hidden layers, on the first `n_train`
# MNIST images with $\pm 1$ parity targets, in float64:
#
# * the **exponent of $n$**: single models ($m = 1$) over `widths`;
# * the **exponent of $m$**: ensembles of constant width `n_m` over `ms`.
#
# **The readings**, declared in `cepaper.sections.theorem1_flow.READINGS` before any number was read:
#
# * `gd-relu` (**primary**): full-batch gradient descent with a small step, the Euler discretization
#   of the gradient flow the theorem is stated for, on the ReLU network of Eq. 3;
# * `sgd-relu`: mini-batch SGD, as Fig. 9 trains, at the same training time $t = \text{lr} \times$ steps;
# * `gd-gelu`: gradient flow with GELU, an analytic activation as the proof assumes, under the same
#   $\sqrt{2/n_{l-1}}$ scales.
#
# **The perturbative rule.** A configuration enters a fit only when the mean over seeds of its relative
# change $|K_T - K_0| / |K_0|$ (probe mean) stays below 20%; narrower nets are drawn but left out.
#
# **The entry.** The verdicts read the mean of $|K_T - K_0|$ over all pairs of `n_probe` probe inputs,
# which has far less noise than the one off-diagonal entry Fig. 9 plots; that entry is shown beside it.

# %% tags=["parameters"]
profile: str = "quick"
results_dir: str = ""  # where this run saves: set by `cepaper run`; "" = $CEPAPER_RESULTS, else scratch
seed: int = 0  # first seed; the runs use seeds seed, ..., seed + n_seeds - 1
n_seeds: int = 2
device: str = "cpu"
data_root: str = None  # None: $CEPAPER_DATA
n_train: int = 64  # the first n_train MNIST training images
target: str = "parity"  # +1 for even digits, -1 for odd ones
depth: int = 4  # hidden layers L (Fig. 9: L = 4)
widths: list = [16, 32, 64]  # single models m = 1: the exponent of n
ms: list = [1, 2, 4]  # ensembles of width n_m: the exponent of m
n_m: int = 16
readings: list = ["gd-relu", "sgd-relu", "gd-gelu"]
steps: int = 40  # gradient steps of every reading (training time lr * steps)
lr: float = 0.1
batch_size: int = 16  # the SGD reading's mini-batch
max_rel_change: float = 0.2  # the perturbative rule
n_probe: int = 4  # probe inputs: the first n_probe training images
threads: int = 1  # torch CPU threads

# %% tags=["remove-input"]
from cepaper.book import pages, results
from cepaper.sections import theorem1_flow as section

section.set_threads(threads)
seeds = list(range(seed, seed + n_seeds))
run = results.Run(
    "theorem1_flow",
    profile,
    params=dict(
        n_train=n_train,
        target=target,
        depth=depth,
        widths=widths,
        ms=ms,
        n_m=n_m,
        readings=readings,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        max_rel_change=max_rel_change,
        n_probe=n_probe,
        seeds=seeds,
    ),
    seed=seed,
    device=device,
    results_dir=results_dir,
)
section.show(run.header())

# %% [markdown]
# ## Training
# Every configuration is trained once per seed and reading; the run cache resumes an interrupted grid.

# %% tags=["hide-input"]
section.train_and_save(
    run,
    n_train,
    target,
    data_root,
    widths,
    ms,
    n_m,
    seeds,
    readings,
    steps=steps,
    lr=lr,
    batch_size=batch_size,
    max_rel_change=max_rel_change,
    cache=results.checkpoint_dir("theorem1_flow", profile),
    depth=depth,
    n_probe=n_probe,
    device=device,
)

# %% [markdown]
# ## The two exponents under each reading

# %% tags=["remove-input"]
change, fits, configs = section.load_frames(run)
pages.figure(
    section.plot(change, fits, configs),
    "The change of the ensemble NTK during training, |K_T − K_0| (seed means, mean over probe pairs), "
    "against the width of single models (left) and the multiplicity at constant width (right), one colour "
    "per reading, with the fitted slopes; hollow points change by more than the perturbative rule allows "
    "and enter no fit.",
    run=run,
)

# %% tags=["remove-input", "full-width"]
pages.show(section.table(fits))

# %% tags=["remove-input"]
section.exponents_sentence(fits)
