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
# # ImageNet, ImageNet32×32 and ImageNet64×64
#
# This section covers **Sec. 4.2.2** and **Appendix A**: **Table 2** (ResNet-50/101 baselines
# and the ResNeXts derived from them on ImageNet: 12×10d at the baseline's parameters, 3×23d,
# 4×16d, 5×12d on the dual curve), **Table 3** (ResNeXt-29 on ImageNet32×32) and **Table 4**
# (ResNeXt-38 on ImageNet64×64). The recipes are the paper's (`cepaper.training.recipes.RECIPES`):
#
# * ImageNet: SGD 0.9, batch 256, lr 0.1, weight decay 10⁻⁴, 100 epochs, lr ÷10 at 30, 60, 90;
#   RandomResizedCrop(224), color jitter 0.4 (brightness, contrast, saturation) and flips, without [20]'s
#   PCA lighting, as the paper says; at test, resize to 256 and center-crop 224; per-channel normalization
#   (torchvision's ImageNet mean and std, as the authors' code); 32 images per forward pass (the paper's
#   per-GPU batch, gradients accumulated to 256);
# * ImageNet32×32: batch 1024 (128 per forward pass), lr 0.08, weight decay 5·10⁻⁴, 80 epochs, lr ÷5 at 20, 40, 60;
# * ImageNet64×64: batch 512 (64 per forward pass), lr 0.04, weight decay 5·10⁻⁴, 60 epochs, lr ÷5 at 20, 30, 40;
# * both, "as in [3]" and as the authors' code does it: crops of the image padded with 4 black
#   pixels and flips, then the per-pixel mean image of the training set subtracted (no division by a
#   standard deviation); the ResNeXt-29/38 initialized as in the authors' code (He-normal with the
#   fan-in, BatchNorm $\gamma = 1$, $\beta = 0$). ResNeXt-50/101 are torchvision's, with its
#   initialization (the paper states none; the authors' own code uses the fan-in one).
#
# A forward pass sees the paper's per-GPU batch, so BatchNorm normalizes over as many images as on
# one of the paper's 8 GPUs. The paper averages each table over 5 runs and states no average over epochs:
# our error of a run is its error after the final epoch, and a table shows the mean over runs,
#
# $$\bar e = \frac{1}{R}\sum_{r=1}^{R} e_{r,T}, \qquad \text{s.e.} = \frac{\operatorname{sd}_r(e_{r,T})}{\sqrt R},$$
#
# with $e_{r,T}$ the top-1 (or top-5) test error of run $r$ after its last epoch $T$.
#
# Training these models needs the datasets and a GPU (the paper used 8). Without them, this page
# trains nothing: it shows the models with their exact parameter counts and FLOPs, says which
# datasets the data root holds, measures how fast this device trains each model, and estimates
# what the paper's runs would cost. **Our ImageNet errors are "not run" until a paper-profile
# run's results are committed.**

# %% tags=["parameters"]
profile: str = "quick"
results_dir: str = ""  # where this run saves: set by `cepaper run`; "" = $CEPAPER_RESULTS, else scratch
seed: int = 0  # first seed of the training runs
device: str = "cpu"
data_root: str = None  # None: $CEPAPER_DATA
train: bool = False  # train the tables' models (needs the datasets; the paper profile, on a GPU)
tables: list = ["2a", "2b", "3", "4"]
n_runs: int = 5  # runs per model when training (paper: 5)
epochs: int = None  # None: each recipe's epochs
workers: int = 8  # DataLoader workers for the ImageNet folders
channels_last: bool = True
bf16: bool = False
steps: int = 1  # timed training steps per model (after one warm-up step)
batch_size: int = 2  # batch of the throughput measurement
threads: int = 1  # torch CPU threads (None: torch's default); 1 is fastest in a kernel on 2 cores
# timed models (table:arch:CxDd); None: all
configs: list = ["2a:resnext50:12x10d", "3:resnext29:37x10d", "4:resnext38:22x10d"]
executor: str = "inprocess"  # the runs here, one after another; local/slurm: each a submitit job
gpus_per_run: int = 1  # with executor local/slurm: the GPUs of each run's job, one DDP rank each
wait: bool = True  # with executor local/slurm: False shows the finished runs and counts the others pending
rerun_stale: bool = False  # train again the finished runs that older training code made

# %% tags=["remove-input"]
from cepaper.book import pages, results
from cepaper.sections import imagenet as section

tables = section.check_tables(tables)
world, device, launcher = section.training_setup(
    "imagenet", profile, device, executor, gpus_per_run, wait, rerun_stale, threads
)
run = results.Run(
    "imagenet",
    profile,
    seed=seed,
    device=device,
    params=dict(
        train=train,
        tables=tables,
        n_runs=n_runs,
        epochs=epochs,
        channels_last=channels_last,
        bf16=bf16,
        steps=steps,
        batch_size=batch_size,
        configs=configs,
    ),
    results_dir=results_dir,
)
run.header()

# %% [markdown]
# ## The models and their size
# Every ResNeXt of Tables 2–4 (Wide ResNets are not built here), with our exact parameter count
# beside the printed one and the FLOPs (2 per multiply-add, plus one per conv output and residual
# sum) at the dataset's resolution.

# %%
models = section.save_models(run, tables)
section.show(pages.show(models, 3))
pages.figure(
    section.plot_models(run.load("models")["rows"]),
    f"The models of Tables {', '.join(tables)}: our exact parameter count (bars) beside the printed one (black "
    "ticks), and GFLOPs at the dataset's resolution (red dots, right axis); exact counts, no training",
    run=run,
)
# %% [markdown]
# ## The data
# Which of the three datasets the data root holds (`cepaper.data.load`), or why not; files are named
# relative to the data root.

# %%
status = section.save_datasets(run, data_root)
pages.show(status)

# %% [markdown]
# ## Training speed on this device, and the cost of the paper's runs
# Training steps (forward, backward, SGD update) on random inputs at the dataset's resolution,
# 1000 classes. The estimate multiplies out the recipe's $E$ epochs over the $N = 1{,}281{,}167$
# training images and the paper's $R = 5$ runs at the measured speed $v$ (images/s, training only):
# $\text{hours} = R\,E\,N / (3600\,v)$. On a CPU the small batch and the
# shared machine make these numbers rough; they say how far a CPU is from this experiment.

# %%
speed = section.save_throughput(run, configs, models, batch_size, steps, device, channels_last, bf16)
pages.show(speed, {"images_per_s": 1, "hours per run": 1, f"hours for {section.RUNS} runs": 1})

# %% [markdown]
# ## Training (paper profile)
# With `train = True` every model of the tables is trained `n_runs` times on its dataset with its
# recipe; finished runs are cached under `_build/checkpoints/<profile>/imagenet/` and a running one
# checkpoints every epoch, so the grid resumes. A dataset missing from the data root is an error
# that names the root and says how to get the data. With `executor` `local` or `slurm` each run is a
# submitit job; a run whose job failed is left out of the tables, and a sentence says how many are
# missing. A run made by older training code is reused and counted as stale, with the commit that
# made it (`rerun_stale` trains it again).
# Each such job has `gpus_per_run` GPUs (one DDP rank each). With
# `wait = False` the page does not wait for the jobs: it shows the runs that have finished and counts
# the others pending, and running it again gathers them (a run whose job is still queued or running
# is never submitted twice). Under `torchrun --nproc-per-node N -m cepaper run` every run trains
# across the N processes instead.

# %%
trained = section.train(
    run,
    train,
    models,
    status,
    data_root,
    list(range(seed, seed + n_runs)),
    world.size,
    epochs=epochs,
    cache=results.checkpoint_dir("imagenet", profile),
    device=device,
    channels_last=channels_last,
    bf16=bf16,
    workers=workers,
    launcher=launcher,
)
section.show(*trained)

# %% [markdown]
# ## Tables 2–4: the paper's errors beside ours
# Top-1 and top-5 test errors (%); ours are each run's error after its final epoch, mean ± standard
# error over runs (runs in parentheses), with the table's recipe. — where the paper prints no value.

# %% tags=["remove-input"]
section.show(*section.paper_tables(run, train, tables))

# %% [markdown]
# ## Checks
# Every timed model trained at a finite, positive speed (the run stops if not). Checked, and reported
# here and at the top of the page: every model of the tables has the printed parameter count (to the
# printed digits).

# %% tags=["hide-input"]
section.check(run, speed, models)
pages.checks(run.load("checks"))
