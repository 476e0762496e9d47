"""Checks of the paper's claims for notebook ``03_alpha`` (Algorithm 1, Sec. 4.2): a function that takes
results the notebook computed (:mod:`cepaper.sections.alpha`) and returns ``[(name, holds, detail)]`` for
:meth:`cepaper.book.results.Run.check`."""

from cepaper.sections import paper


def checks(synthetic, true_alpha, fits, design):
    """Algorithm 1 and the chain to the paper's optima checked on a run: ``[(name, holds, detail)]`` for
    :meth:`cepaper.book.results.Run.check`.

    ``synthetic``: :func:`cepaper.alpha.fit.fit_alpha` of draws made with ``true_alpha``; ``fits``: ``{module:
    fit record}`` (:func:`cepaper.alpha.fit.sweep_result`, ``fits`` per entry); ``design``: ``design_rows`` of
    :mod:`cepaper.sections.alpha`.
    Checked: the synthetic fit's interval contains ``true_alpha`` (Algorithm 1 recovers a known alpha);
    every fitted alpha and its interval are positive (the variance falls with width); with the paper's
    alpha, Algorithm 2 gives every optimum the paper prints.
    """
    lo, hi = synthetic["alpha_ci"]
    level = 100 * synthetic.get("level", 0.95)
    out = [
        (
            f"Algorithm 1 recovers a known α = {true_alpha:g}: "
            f"the {level:g}% interval of the synthetic fit contains it",
            lo <= true_alpha <= hi,
            f"α = {synthetic['alpha']:.3f}, interval [{lo:.3f}, {hi:.3f}]",
        )
    ]
    for module, record in fits.items():
        for entry, g in record["fits"].items():
            out.append(
                (
                    f"the variance falls with width ({module}, {entry} entry): the fitted α and its interval are > 0",
                    g["alpha"] > 0 and g["alpha_ci"][0] > 0,
                    f"α = {g['alpha']:.3f}, interval [{g['alpha_ci'][0]:.3f}, {g['alpha_ci'][1]:.3f}]",
                )
            )
    misses = [r for r in design if r["config_paper_alpha"] != r["paper_config"]]
    out.append(
        (
            f"with the paper's α = {paper.ALPHA_BOTTLENECK:g}, Algorithm 2 gives every optimum the paper prints",
            not misses,
            f"{len(design) - len(misses)} of {len(design)} optima"
            + "".join(
                f"; {r['arch']} from {r['baseline']} ({r['objective']}): {r['config_paper_alpha']}, "
                f"the paper {r['paper_config']}"
                for r in misses
            ),
        )
    )
    return [(name, bool(holds), detail) for name, holds, detail in out]
