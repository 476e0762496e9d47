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
# # CIFAR-10/100: training the derived ResNeXts
#
# This section trains the models of **Sec. 4.2.1**: **Table 1a** (primal: the smoothest module at the
# baseline's parameter count, 37×10d for the ResNeXt-29 baseline 1×128d), **Table 1b** (dual: the
# cheapest module at the baseline's NTK variance, 10×10d, ρ ≈ 3.3), **Table 5** (App. C: primal at
# constant FLOPs, 44×8d) and **Figs. 6–7** (test error of models along the primal and the dual
# curve, with the curve). The models come from Algorithm 2 (`cepaper.search.networks.design`, see *Primal
# and dual*); the paper profile also trains every model the tables print, so that each printed row
# has its own runs whatever $\alpha$ the derivation used (a derived optimum that differs from the
# printed one is an extra row, labelled as such). They are trained with the recipe of Xie et al.
# [20] that the paper follows (`cepaper.training.recipes.RECIPES["cifar"]`): SGD with momentum 0.9, batch
# 128, lr 0.1, weight decay 5·10⁻⁴, 300 epochs, lr ÷10 at epochs 150 and 225, random crops of the
# image padded with 4 black pixels and horizontal flips, then per-channel normalization with the
# authors' constants (the same for CIFAR-10 and CIFAR-100); weights initialized as in the authors'
# code (He-normal with the fan-in, BatchNorm $\gamma = 1$, $\beta = 0$).
#
# The paper trained on 8 GPUs, so BatchNorm normalized over the 16 images of each GPU's share of
# the batch: the `cifar` recipe splits each batch of 128 into 8 micro-batches of 16 and accumulates
# their gradients. The two rows of Table 1b marked § were trained on a single GPU, BatchNorm over
# all 128: the `cifar_1gpu` recipe, which trains the models of those rows once more. Every row of
# the tables below stands beside the runs of its own recipe.
#
# The paper's statistic is the test error averaged over the last 10 epochs, then over 10 runs
# (Sec. 4.2.1; Tables 1 and 5 say "averaged over 10 runs"); ours is computed the same way:
#
# $$\bar e = \frac{1}{R}\sum_{r=1}^{R} \frac{1}{10}\sum_{t=T-9}^{T} e_{r,t}, \qquad
# \text{s.e.} = \frac{\operatorname{sd}_r\big(\tfrac{1}{10}\textstyle\sum_t e_{r,t}\big)}{\sqrt R},$$
#
# with $e_{r,t}$ the top-1 test error of run $r$ after epoch $t$ of $T$. The models are the
# primal optimum $n_p = \arg\min_n \mathrm{Var}(K_n)/m_p(n)$ with $m_p(n) = \beta_s/\beta(n)$
# (Eq. 12) and the dual optimum $n_d = \arg\max_n \rho(m_d(n), n)$ with
# $m_d(n) = \mathrm{Var}(K_n)/\mathrm{Var}(K_{\tilde n})$ (Eq. 14), $m$ made an integer by step 6.

# %% tags=["parameters"]
profile: str = "quick"
results_dir: str = ""  # where this run saves: set by `cepaper run`; "" = $CEPAPER_RESULTS, else scratch
seed: int = 0  # first seed; the runs use seeds seed, ..., seed + n_runs - 1
device: str = "cpu"
data_root: str = None  # None: $CEPAPER_DATA
datasets: list = ["cifar10"]  # cifar10 and/or cifar100
stages: list = [64]  # stage outputs; None: ResNeXt-29 (256, 512, 1024)
blocks: int = 1  # bottlenecks per stage (ResNeXt-29: 3)
baselines: list = ["1x32d"]  # baselines 1 x n~ d; the first one's curves are Figs. 6-7
primal_ns: list = [12]  # further widths n on the first baseline's primal curve (Figs. 6a/7a)
dual_ns: list = [12]  # further widths n on its dual curve (Figs. 6b/7b)
models: list[str] = []  # further configs CxDd to train (paper profile: every printed model)
alpha: float = None  # alpha of Eq. 9; None: the paper's 1.60 (networks.default_alpha)
n_runs: int = 1  # runs per model (paper: 10)
epochs: int = 1  # None: the recipe's 300 (milestones scale with epochs)
n_train: int = 256  # the first n_train training images; None: all 50,000
n_test: int = 256  # the first n_test test images; None: all 10,000
channels_last: bool = True  # faster on CPUs and GPUs alike
bf16: bool = False
threads: int = 1  # torch CPU threads (None: torch's default); 1 is fastest in a kernel on 2 cores
executor: str = "inprocess"  # the runs here, one after another; local/slurm: each a submitit job
gpus_per_run: int = 1  # with executor local/slurm: the GPUs of each run's job, one DDP rank each
wait: bool = True  # with executor local/slurm: False shows the finished runs and counts the others pending
rerun_stale: bool = False  # train again the finished runs that older training code made

# %% tags=["remove-input"]
from cepaper.book import pages, results
from cepaper.sections import cifar as section

datasets, n_runs, epochs = section.check_params(datasets, n_runs, epochs)
world, device, launcher = section.training_setup(
    "cifar", profile, device, executor, gpus_per_run, wait, rerun_stale, threads
)
scaled = not section.is_paper_scale(stages, blocks)
alpha_used, alpha_source = section.alpha_of(alpha)
run = results.Run(
    "cifar",
    profile,
    seed=seed,
    device=device,
    params=dict(
        datasets=datasets,
        stages=stages,
        blocks=blocks,
        baselines=baselines,
        primal_ns=primal_ns,
        dual_ns=dual_ns,
        models=models,
        alpha=alpha_used,
        n_runs=n_runs,
        epochs=epochs,
        n_train=n_train,
        n_test=n_test,
        channels_last=channels_last,
        bf16=bf16,
    ),
    results_dir=results_dir,
)
run.header()

# %% tags=["remove-input"]
section.run_sentence(stages, blocks, datasets, n_train, n_test, epochs, n_runs, alpha_used, alpha_source, world.size)

# %% [markdown]
# ## The models
# Algorithm 2 for each baseline: the primal and dual optima (parameter budget), the primal optimum
# at constant FLOPs, and models at further widths on the first baseline's primal and dual curves.
# `rho` is the baseline's parameter count over the model's; `var_ratio` is Var(K_e) over the
# baseline's (Eq. 11 at the integer m); both are undefined (—) for listed models, which are not
# derived from a baseline.

# %%
specs = section.save_models(run, baselines, primal_ns, dual_ns, models, stages, blocks, alpha_used, alpha_source)
pages.show(section.models_table(specs), {"gflops": 3, "rho": 2, "var_ratio": 3})

# %% [markdown]
# ## Training
# The grid: each model with the 8-GPU recipe (`cifar`, BatchNorm over 16 images), and the models of
# the rows marked § once more with the single-GPU recipe (`cifar_1gpu`, BatchNorm over 128); the
# last column names the paper rows each run stands beside. Each is trained `n_runs` times (seeds
# `seed`, `seed + 1`, …) on each dataset. Finished runs are kept under
# `_build/checkpoints/<profile>/cifar/`, and a running one saves a checkpoint after every epoch, so
# an interrupted grid resumes where it stopped. With `executor` `local` or `slurm` each run is a
# submitit job; a run whose job failed is left out of the tables below, and a sentence says how
# many are missing. A run made by older training code is reused and counted as stale, with the
# commit that made it (`rerun_stale` trains it again).
# Each such job has `gpus_per_run` GPUs (one DDP rank each). With
# `wait = False` the page does not wait for the jobs: it shows the runs that have finished and counts
# the others pending, and running it again gathers them (a run whose job is still queued or running
# is never submitted twice). Under `torchrun --nproc-per-node N -m cepaper run` every run trains
# across the N processes instead.

# %%
runs = section.grid(specs, scaled)
section.show(pages.show(runs))
records, notes = section.train(
    runs,
    datasets,
    list(range(seed, seed + n_runs)),
    data_root,
    n_train,
    n_test,
    stages,
    blocks,
    epochs=epochs,
    cache=results.checkpoint_dir("cifar", profile),
    device=device,
    channels_last=channels_last,
    bf16=bf16,
    launcher=launcher,
)
summ = section.save_grid(run, records, section.LAST_EPOCHS, scaled=scaled)
section.show(*notes, pages.show(summ, 3), section.runs_sentence(records))

# %% [markdown]
# ## Tables 1a, 1b and 5: the paper's errors beside ours
# The paper's columns are its printed numbers (`cepaper.sections.paper`; — where it prints none); ours are
# the top-1 test error (%) of each run averaged over its last 10 epochs (fewer in a shorter run),
# then mean ± standard error over runs (the number of runs in parentheses; no ± for one run), each
# with the recipe of its row: `cifar_1gpu` for the rows marked §, `cifar` for the others.

# %% tags=["remove-input"]
section.show(*section.paper_tables(run, specs))

# %% [markdown]
# ## Figs. 6–7: test error along the primal and the dual curve
# Points: our models on the first baseline's primal (left) and dual (right) curve, test error (the
# statistic above, 8-GPU recipe) with standard-error bars. Red: the curve of Algorithm 2
# (Var(K_e)/Var(K_ñ) at m_p(n), and the efficiency ρ(m_d(n), n)). The paper's figures show the same for
# ResNeXt-29 1×128d; the text does not print the values of their points, so only the table models above can
# be compared number for number.

# %%
run.save("curve", section.curves(baselines[0], stages if scaled else None, alpha_used))
pages.figure(
    section.plot_curve_errors(specs, run.load("summary")["rows"], run.load("curve"), datasets),
    section.curve_caption(baselines[0], datasets, stages, blocks, epochs, n_runs),
    paper="6–7",
    run=run,
)
# %% tags=["remove-input"]
section.show(*section.committed_tables(profile))

# %% [markdown]
# ## What CIFAR costs on this machine
#
# The training speed of the paper's ResNeXt-29 1×128d baseline and its primal optimum 37×10d on
# CIFAR's 32×32 images, measured here (forward, backward and update of a small batch), and what an
# epoch of CIFAR-10 and the paper's runs cost at that speed. No CIFAR experiment that is a fair test
# of a claim fits a CPU: even one run of one model for a tenth of the recipe's epochs takes the
# hours below, so this book trains none at scale on a CPU, and the claims page marks Tables 1 and 5
# "not run" with these costs.

# %% tags=["hide-input"]
speed = section.save_throughput(run, device, channels_last)
section.show(
    pages.show(section.throughput_table(speed), 2), section.throughput_sentence(speed, results.device_name(device))
)

# %% [markdown]
# ## What must hold
# Every finished run trained all its epochs with finite losses, the errors are percentages, and every model
# of the tables has the parameter count its config implies.

# %%
section.check_grid(records, runs, datasets, n_runs, epochs, in_process=executor == "inprocess")
