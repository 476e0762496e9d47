"""The paper's reported numbers, in one place (Littwin et al., NeurIPS 2020).

Notebooks and tables read the paper's values from here and show them beside ours; nothing the
paper printed is typed anywhere else (the one the library needs, the default alpha, it holds itself
and this module names). Each block names the figure, table or section it comes from.
"""

import numpy as np

from cepaper.complexity import parse_config
from cepaper.search import ALPHA_BOTTLENECK

# ---------------------------------------------------------------------------------------------
# Efficient ensembles: Sec. 3 (Fig. 3), Sec. 4.2, Tables 1-5, App. A and C (notebook 04_primal_dual)
# ---------------------------------------------------------------------------------------------

#: Sec. 4.2's alpha of the Fig. 5 bottleneck ("We find alpha ~ 1.60") is the library's default,
#: :data:`cepaper.search.ALPHA_BOTTLENECK`, imported above.

#: Fig. 3: fully connected baseline (L = 6, n~ = 500, n0 = 748 as printed) and its optima. The paper
#: does not say whether L counts hidden layers or weight layers (notebook 04 searches both).
FIG3 = {"depth": 6, "width": 500, "inputs": 748,
        "n_primal": 48, "m_primal": 30, "n_dual": 48, "m_dual": 12, "rho_dual": 2.45}

#: Sec. 4.2.1 (CIFAR, baseline 1x128d): n_p = 10, m_p ~ 37 after adjusting to the whole network;
#: n_d = 10, m_d ~ 10, rho ~ 3.3 (Fig. 6b).
SEC421 = {"baseline": "1x128d", "n_primal": 10, "m_primal": 37, "n_dual": 10, "m_dual": 10, "rho_dual": 3.3}

#: Columns of ``MODELS``. ``params`` in millions and ``gflops`` as printed; ``role`` is what the
#: paper says the row is: ``baseline`` (rho = 1), ``reference`` (a model of [20] or [3]),
#: ``optimum`` (the primal/dual optimum derived from ``from_baseline``), ``vicinity`` (‡: near the
#: optimum), ``curve`` (a model on the dual curve of ``from_baseline``), ``other`` (another
#: architecture). ``config`` is ``CxDd`` of ``arch`` (None for Wide ResNets).
MODEL_COLUMNS = ("table", "arch", "classes", "model", "config", "role", "from_baseline", "objective",
                 "budget", "rho", "params", "gflops", "c10", "c100", "top1", "top5")
_ROWS = [
    # Table 1a: primal, ResNeXt-29 on CIFAR-10/100 (test errors in %).
    ("1a", "resnext29", 10, "1x128d", "1x128d", "baseline", None, "primal", "params", 1, 13.8, None, 4.08, 19.39, None, None),
    ("1a", "resnext29", 10, "3x64d", "3x64d", "reference", None, "primal", "params", None, 13.3, None, 3.96, 18.57, None, None),
    ("1a", "resnext29", 10, "37x10d", "37x10d", "optimum", "1x128d", "primal", "params", None, 13.7, None, 3.82, 17.94, None, None),
    ("1a", "resnext29", 10, "28x12d", "28x12d", "vicinity", "1x128d", "primal", "params", None, 12.9, None, 3.74, 18.05, None, None),
    ("1a", None, 10, "Wide ResNet", None, "other", None, "primal", "params", None, 36.5, None, 4.17, 20.50, None, None),
    ("1a", "resnext29", 10, "1x226d", "1x226d", "baseline", None, "primal", "params", 1, 36.3, None, 3.88, 18.36, None, None),
    ("1a", "resnext29", 10, "8x64d", "8x64d", "reference", None, "primal", "params", None, 34.4, None, 3.65, 17.77, None, None),
    ("1a", "resnext29", 10, "101x10d", "101x10d", "optimum", "1x226d", "primal", "params", None, 36.3, None, 3.65, 17.44, None, None),
    # Table 1b: dual, ResNeXt-29 on CIFAR-10/100; § = trained on a single GPU.
    ("1b", "resnext29", 10, "1x128d §", "1x128d", "baseline", None, "dual", "params", 1, 13.8, None, 4.75, 20.74, None, None),
    ("1b", "resnext29", 10, "10x10d §", "10x10d", "optimum", "1x128d", "dual", "params", 3.3, 4.22, None, 4.70, 20.84, None, None),
    ("1b", "resnext29", 10, "1x128d", "1x128d", "baseline", None, "dual", "params", 1, 13.8, None, 4.08, 19.39, None, None),
    ("1b", "resnext29", 10, "10x10d", "10x10d", "optimum", "1x128d", "dual", "params", 3.3, 4.22, None, 4.21, 19.67, None, None),
    ("1b", "resnext29", 10, "8x12d", "8x12d", "vicinity", "1x128d", "dual", "params", 3.3, 4.19, None, 4.20, 19.58, None, None),
    ("1b", None, 10, "Wide ResNet", None, "other", None, "dual", "params", 1, 36.5, None, 4.17, 20.50, None, None),
    ("1b", "resnext29", 10, "1x226d", "1x226d", "baseline", None, "dual", "params", 1, 36.3, None, 3.88, 18.36, None, None),
    ("1b", "resnext29", 10, "2x64d", "2x64d", "reference", "1x226d", "dual", "params", 4.0, 9.13, None, 4.02, None, None, None),
    ("1b", "resnext29", 10, "14x10d", "14x10d", "optimum", "1x226d", "dual", "params", 6.5, 5.63, None, 4.01, 19.04, None, None),
    ("1b", "resnext29", 10, "6x25d", "6x25d", "curve", "1x226d", "dual", "params", 5.0, 7.26, None, 3.94, 18.92, None, None),
    ("1b", "resnext29", 10, "3x58d", "3x58d", "curve", "1x226d", "dual", "params", 3.1, 11.6, None, 3.87, 18.75, None, None),
    ("1b", "resnext29", 10, "2x98d", "2x98d", "curve", "1x226d", "dual", "params", 2.1, 17.4, None, 3.99, 18.32, None, None),
    # Table 2a: primal, ImageNet (top-1/top-5 errors in %).
    ("2a", "resnext50", 1000, "ResNet-50, 1x64d", "1x64d", "baseline", None, "primal", "params", 1, 25.6, None, None, None, 23.93, 7.11),
    ("2a", "resnext50", 1000, "ResNeXt-50, 32x4d", "32x4d", "reference", None, "primal", "params", None, 25.0, None, None, None, 22.42, 6.36),
    ("2a", "resnext50", 1000, "ResNeXt-50, 12x10d", "12x10d", "optimum", "1x64d", "primal", "params", None, 25.8, None, None, None, 22.37, 6.30),
    ("2a", "resnext50", 1000, "ResNeXt-50, 15x8d", "15x8d", "vicinity", "1x64d", "primal", "params", None, 25.1, None, None, None, 22.39, 6.38),
    ("2a", "resnext101", 1000, "ResNet-101, 1x64d", "1x64d", "baseline", None, "primal", "params", 1, 44.5, None, None, None, 22.32, 6.25),
    ("2a", "resnext101", 1000, "ResNeXt-101, 32x4d", "32x4d", "reference", None, "primal", "params", None, 44.2, None, None, None, 21.01, 5.72),
    ("2a", "resnext101", 1000, "ResNeXt-101, 12x10d", "12x10d", "optimum", "1x64d", "primal", "params", None, 45.5, None, None, None, 21.16, 5.74),
    ("2a", "resnext101", 1000, "ResNeXt-101, 15x8d", "15x8d", "vicinity", "1x64d", "primal", "params", None, 44.2, None, None, None, 21.20, 5.76),
    # Table 2b: dual, ImageNet.
    ("2b", "resnext50", 1000, "ResNet-50, 1x64d", "1x64d", "baseline", None, "dual", "params", 1, 25.6, None, None, None, 23.93, 7.11),
    ("2b", "resnext50", 1000, "ResNeXt-50, 3x23d", "3x23d", "curve", "1x64d", "dual", "params", 1.3, 19.4, None, None, None, 23.80, 7.11),
    ("2b", "resnext50", 1000, "ResNeXt-50, 4x16d", "4x16d", "curve", "1x64d", "dual", "params", 1.5, 17.1, None, None, None, 24.00, 7.11),
    ("2b", "resnext101", 1000, "ResNet-101, 1x64d", "1x64d", "baseline", None, "dual", "params", 1, 44.5, None, None, None, 22.32, 6.25),
    ("2b", "resnext101", 1000, "ResNeXt-101, 3x23d", "3x23d", "curve", "1x64d", "dual", "params", 1.4, 32.9, None, None, None, 22.06, 6.11),
    ("2b", "resnext101", 1000, "ResNeXt-101, 5x12d", "5x12d", "curve", "1x64d", "dual", "params", 1.7, 25.8, None, None, None, 22.30, 6.27),
    # Table 3 (App. A.1): ImageNet32x32, ResNeXt-29 with 1000 classes.
    ("3", None, 1000, "Wide ResNet 28-10", None, "other", None, None, "params", None, 37.1, None, None, None, 40.96, 18.87),
    ("3", "resnext29", 1000, "ResNet-29, 1x128d", "1x128d", "baseline", None, None, "params", 1, 14.8, None, None, None, 40.61, 17.82),
    ("3", "resnext29", 1000, "ResNeXt-29, 3x64d", "3x64d", "reference", None, None, "params", 1, 14.4, None, None, None, 39.58, 17.09),
    ("3", "resnext29", 1000, "ResNeXt-29, 37x10d", "37x10d", "optimum", "1x128d", "primal", "params", 1, 14.8, None, None, None, 38.41, 16.13),
    ("3", None, 1000, "Wide ResNet 28-5", None, "other", None, None, "params", 1.6, 9.5, None, None, None, 45.36, 21.36),
    ("3", "resnext29", 1000, "ResNeXt-29, 10x10d", "10x10d", "optimum", "1x128d", "dual", "params", 2.8, 5.2, None, None, None, 43.36, 19.65),
    ("3", "resnext29", 1000, "ResNeXt-29, 3x40d", "3x40d", "curve", "1x128d", "dual", "params", 1.8, 8.0, None, None, None, 41.54, 18.58),
    # Table 4 (App. A.2): ImageNet64x64, ResNeXt-38 with 1000 classes.
    ("4", None, 1000, "Wide ResNet 36-5", None, "other", None, None, "params", None, 37.6, None, None, None, 32.34, 12.64),
    ("4", "resnext38", 1000, "ResNet-38, 1x96d", "1x96d", "baseline", None, None, "params", 1, 37.5, None, None, None, 29.36, 10.10),
    ("4", "resnext38", 1000, "ResNeXt-38, 2x64d", "2x64d", "reference", None, None, "params", 1, 39.0, None, None, None, 28.86, 9.72),
    ("4", "resnext38", 1000, "ResNeXt-38, 22x10d", "22x10d", "optimum", "1x96d", "primal", "params", 1, 36.3, None, None, None, 28.34, 9.38),
    ("4", "resnext38", 1000, "ResNeXt-38, 8x10d", "8x10d", "optimum", "1x96d", "dual", "params", 2.3, 16.3, None, None, None, 30.93, 11.02),
    ("4", "resnext38", 1000, "ResNet-38, 1x128d", "1x128d", "baseline", None, None, "params", 1, 57.8, None, None, None, 28.56, 9.67),
    ("4", "resnext38", 1000, "ResNeXt-38, 3x64d", "3x64d", "reference", None, None, "params", 1, 56.1, None, None, None, 28.01, 9.28),
    ("4", "resnext38", 1000, "ResNeXt-38, 37x10d", "37x10d", "optimum", "1x128d", "primal", "params", 1, 57.7, None, None, None, 27.24, 8.74),
    ("4", "resnext38", 1000, "ResNeXt-38, 10x10d", "10x10d", "optimum", "1x128d", "dual", "params", 3.0, 19.1, None, None, None, 30.22, 10.60),
    # Table 5 (App. C): ResNeXt-29 on CIFAR-10/100 at constant FLOPs.
    ("5", "resnext29", 10, "ResNet-29 1x128d", "1x128d", "baseline", None, "primal", "flops", 1, 13.8, 4.19, 4.08, 19.39, None, None),
    ("5", "resnext29", 10, "ResNeXt-29 3x64d", "3x64d", "reference", None, "primal", "flops", None, 13.3, 4.15, 3.96, 18.57, None, None),
    ("5", "resnext29", 10, "ResNeXt-29 44x8d", "44x8d", "optimum", "1x128d", "primal", "flops", None, 12.7, 4.20, 3.66, 17.86, None, None),
    ("5", "resnext29", 10, "ResNeXt-29 60x6d", "60x6d", "vicinity", "1x128d", "primal", "flops", None, 12.6, 4.17, 3.73, 18.04, None, None),
]
#: Every model row of Tables 1-5, one dict per row with the keys ``MODEL_COLUMNS``.
MODELS = [dict(zip(MODEL_COLUMNS, row)) for row in _ROWS]

#: Table 1's mark of the rows trained on a single GPU ("Models were trained on 8 GPUs unless
#: indicated by §, in which case they were trained on a single GPU").
SINGLE_GPU_MARK = "§"

#: The statistic of each group of tables: a run's top-1/top-5 test error averaged over its last
#: ``last_epochs`` epochs, then the mean over ``runs`` runs. CIFAR (Tables 1, 5, Figs. 6-7): "Test
#: errors are averaged over the last 10 epochs over 10 runs" (Sec. 4.2.1). ImageNet (Tables 2-4):
#: "averaged over 5 runs", with no average over epochs stated, so a run's error is its final one.
STATISTICS = {"cifar": {"last_epochs": 10, "runs": 10}, "imagenet": {"last_epochs": 1, "runs": 5}}


# ---------------------------------------------------------------------------------------------
# Theorem 1 (Sec. 2, Eq. 7), Fig. 9 (App. E), proof in App. F (notebook 02_theorem1)
# ---------------------------------------------------------------------------------------------

#: Fig. 9 caption: fully connected nets of depth L = 4 (hidden layers, as in Eq. 3) trained on
#: MNIST (L2 loss, Theorem 1's setting) for T = 100 epochs; |K_T - K_0| of one off-diagonal NTK
#: entry, log-scale y. Panels: (a) single models m = 1 over widths n; (b) ensembles m = n = d
#: against single models n = d^2 (equal mn); (c) constant member width n = 100, m matched to the
#: baseline's parameter count.
#: The d, n and m on the figure's axes are not printed in the text: ``None`` marks them unknown.
FIG9 = {"depth": 4, "epochs": 100, "dataset": "mnist", "loss": "L2", "entry": "off-diagonal",
        "panel_c_width": 100, "ds": None, "widths_a": None}

#: Eq. 7: K_e(Theta_t) - K_e(Theta_0) ~ O_p(1 / (mn)), the exponent of mn.
THEOREM1_EXPONENT_MN = -1.0

#: Footnote 1 (App. F): the rigorous single-model O_p(n^-0.5) of its ref. [10] gives
#: O_p(n^-0.5 m^-1) for the ensemble: exponents of n and of m.
THEOREM1_RIGOROUS = {"n": -0.5, "m": -1.0}


# ---------------------------------------------------------------------------------------------
# Lemma 1 (Sec. 2, Eqs. 3-6), Fig. 2, proof in App. F (notebook 01_lemma1)
# ---------------------------------------------------------------------------------------------

#: Fig. 2 caption: every member is fully connected with L = 4 (hidden) layers of width n = 1000 (Eq. 3);
#: inputs x_gamma = [cos gamma, sin gamma] (n0 = 2), gamma in [-pi, pi]; diagonal and off-diagonal
#: entries NTK[x0, x_gamma]; the black line of panel (b) is a x100 wider model. The multiplicities
#: m on the figure's axis are not printed in the text: ``None`` marks them unknown. The paper's
#: claims are qualitative ("little to no dependence of the NMK on the widths", K_n^inf ~ K_inf).
FIG2 = {"depth": 4, "width": 1000, "inputs": 2, "wide_factor": 100, "ms": None}


# ---------------------------------------------------------------------------------------------
# Fitting alpha: Sec. 4.2 ("Fitting alpha to a ResNet block"), App. D, Fig. 8 (notebook 03_alpha)
# ---------------------------------------------------------------------------------------------

#: Sec. 4.2 / Fig. 8: the Monte Carlo behind ``ALPHA_BOTTLENECK``: the second moment of one diagonal
#: NTK entry of the Fig. 5 block over 2000 trials per width, n in [1, 256], n_in = n_out = 256,
#: log(E[K^2] / E[K]^2) fitted by a first-degree polynomial in sum_l 1/fan-in_l.
ALPHA_FIT = {"alpha": ALPHA_BOTTLENECK, "trials": 2000, "width_min": 1, "width_max": 256,
             "n_in": 256, "n_out": 256, "entry": "diag"}

#: The optima the paper derives with that alpha (Sec. 4.2.1-4.2.2, Tables 1a/1b/2a): one dict per
#: design problem, ``config`` the printed ``CxDd``.
ALPHA_OPTIMA = [
    {"arch": "resnext29", "baseline": "1x128d", "objective": "primal", "config": "37x10d"},
    {"arch": "resnext29", "baseline": "1x128d", "objective": "dual", "config": "10x10d"},
    {"arch": "resnext29", "baseline": "1x226d", "objective": "primal", "config": "101x10d"},
    {"arch": "resnext29", "baseline": "1x226d", "objective": "dual", "config": "14x10d"},
    {"arch": "resnext50", "baseline": "1x64d", "objective": "primal", "config": "12x10d"},
    {"arch": "resnext101", "baseline": "1x64d", "objective": "primal", "config": "12x10d"},
]


# ---------------------------------------------------------------------------------------------
# Ablation on MNIST: Sec. 4.1, Fig. 4 (notebook 05_mnist)
# ---------------------------------------------------------------------------------------------

#: Sec. 4.1: baseline fully connected, L = 6 layers of width 200 (the paper does not say whether
#: hidden or weight layers; notebook 05 reads weight layers); ensembles of m members of width n
#: trained on MNIST for 70 epochs with Adam, accuracy averaged over 100 repetitions. Fig. 4's
#: claims: error "highly correlated" with Var(K) along the primal (fixed beta_e); increasing beta_e
#: at fixed Var(K) (dual) "does not improve the performance". The widths n, the multiplicities m,
#: alpha, the learning rate, the batch size and the loss are not printed: ``None`` marks them unknown.
FIG4 = {"depth": 6, "width": 200, "inputs": 784, "classes": 10, "epochs": 70, "repetitions": 100,
        "optimizer": "Adam", "dataset": "mnist", "ns": None, "lr": None, "batch_size": None}


# ---------------------------------------------------------------------------------------------
# Reading the printed numbers
# ---------------------------------------------------------------------------------------------


def printed_decimals(x):
    """Decimals the paper printed for ``x`` (``13.8`` -> 1, ``4.22`` -> 2, ``1`` -> 0)."""
    text = repr(x)
    return len(text.split(".")[1]) if "." in text else 0


def as_printed(value, printed):
    """``value`` rounded to the digits of ``printed`` (half away from zero, as in a table)."""
    k = printed_decimals(printed)
    return float(np.sign(value) * np.floor(abs(value) * 10**k + 0.5) / 10**k)


def matches_printed(value, printed):
    """``True`` when ``value`` rounds to the printed number."""
    return printed is not None and abs(as_printed(value, printed) - printed) < 1e-9


def paper_width(table, objective="primal", budget=None):
    """Width ``d`` of the optimum the paper derived in ``table`` (e.g. Table 5 -> 8, from 44x8d)."""
    for row in MODELS:
        if (
            row["table"] == table
            and row["role"] == "optimum"
            and row["objective"] == objective
            and budget in (None, row["budget"])
        ):
            return parse_config(row["config"])[1]
    raise ValueError(f"table {table!r} has no {objective} optimum")
