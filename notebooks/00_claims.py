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
# # What holds: the paper's claims against this book's evidence
#
# One row per claim of *Collegial Ensembles*: the number the paper prints, ours with its interval,
# the scale and run that produced it, and a verdict. Nothing here is typed in: the page is computed
# from the results files that the sections' runs wrote (`cepaper.sections.claims`), and the exact
# computations (parameter counts, Algorithm 2's optima) are redone on this page.
#
# **Which results count.** For each claim the page reads the best committed run: the paper's scale
# (profile `paper`) when there is one, else the CPU-evidence profile (`cpu-evidence`: the paper's
# architectures, optimizer and data, with fewer repetitions, epochs and seeds; each section's page
# says what was cut). The quick profile that builds the section pages is never evidence.
#
# **The rule.** One rule for every kind of claim:
#
# * **reproduced**: an exact computation gives the printed value to its printed digits, or the
#   paper's number lies inside our 95% interval;
# * **consistent**: the paper states a direction, not a number (“highly correlated”, “does not
#   improve”), and our interval lies on its side;
# * **inconclusive**: our interval holds both the claimed direction and its opposite (for “does not
#   improve”: an interval that straddles 0);
# * **differs**: the printed value lies outside our interval, the interval lies on the other side of
#   a claimed direction, or the exact computation gives another;
# * **not run**: no committed run tests the claim; the row says what running it would cost, from
#   the training speeds measured in this book.
#
# **Readings.** Where the paper's words allow several analyses (which widths, which entry, which
# optimizer, which statistic, which α), every defensible reading is declared in the code with the
# paper's words that allow it, one of them primary (fixed before the numbers were read, with its
# reason), and the row gives the primary verdict and how many readings the claim holds under; the
# [readings](#claims-readings) below show each. Every row that differs or is inconclusive links to
# [its cause](#claims-why), and every row to the part of the section page that holds its
# evidence and to its run on the [runs page](runs.md).
#
# The verdicts stand on the intervals, and the test suite checks each kind against its sampling
# distribution on synthetic data (the correlation bootstrap, Lemma 1's jackknife, the α bootstrap).
# The α bootstrap is calibrated for draws shaped like the bottleneck's; no resampling of the draws
# is for a tail the draws never reach, so every width reports the tail index of its $K^2$, and a fit
# with a width above 0.7 reads "inconclusive" where its interval alone would say "differs" (the
# [α page](03_alpha.ipynb) gives the run's tail indices).

# %% tags=["parameters"]
profile: str = "quick"
results_dir: str = ""  # where this run saves: set by `cepaper run`; "" = $CEPAPER_RESULTS, else scratch
level: float = 0.95  # confidence level of the intervals the verdicts use
scales: list = ["paper", "cpu-evidence"]  # profiles whose committed results count, best first

# %% tags=["hide-input"]
from cepaper.book import pages, results
from cepaper.sections import claims as section

run = results.Run(
    "claims", profile, params=dict(level=section.check_level(level), scales=scales), results_dir=results_dir
)
section.save(run, scales, level)

# %% [markdown]
# ## Summary

# %% tags=["remove-input"]
saved = run.load("claims")
causes = section.saved_causes(saved)
section.counts_sentence(saved)

# %% [markdown]
# Every claim with a printed number and an interval from a committed run, as our value over the
# paper's: the dotted line is the paper's value; green reproduced, red differs.

# %% tags=["remove-input"]
section.plot_page(saved["rows"])

# %% [markdown]
# ## The method, the theory and the design
#
# Lemma 1, Theorem 1, α and Fig. 4 are read from committed runs; the optima and sizes of Tables 1–5
# are exact computations, redone on this page.

# %% tags=["remove-input", "full-width"]
pages.show(section.page_table(saved["rows"], "method", causes))

# %% [markdown]
# ## The training tables: errors of Tables 1–5
#
# Every printed test error needs the paper's training runs (CIFAR: 300 epochs × 10 runs per model;
# ImageNet: 5 runs per model). Where none is committed, the row reads “not run” with its cost at the
# speed measured on this book's CPU (the `imagenet` section's throughput runs; an unmeasured model
# is estimated from a measured one by its FLOPs).

# %% tags=["remove-input", "full-width"]
pages.show(section.page_table(saved["rows"], "training", causes))

# %% [markdown]
# (claims-readings)=
# ## Readings
#
# Each claim whose analysis the paper leaves open, under every declared reading; the first is the
# primary one, whose verdict the row above gives.

# %% tags=["remove-input", "full-width"]
section.show(*section.readings_page(saved["rows"]))

# %% [markdown]
# (claims-why)=
# ## Why a row differs
#
# For every row that differs or is inconclusive: the cause found, or the candidate causes with the
# run that rules each in or out, computed from the same records.

# %% tags=["remove-input"]
section.show(*section.causes_page(saved))
