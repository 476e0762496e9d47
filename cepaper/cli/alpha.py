"""``cepaper fit-alpha`` (Algorithm 1, Sec. 4.2, Fig. 8): alpha fitted by Monte Carlo on the paper's block,
its MLP, or any factory ``--module FILE:FUNC``; and the stored fits that ``cepaper design --alpha fit`` reads."""

import hashlib
import os
import re

from cepaper import files
from cepaper.book import results
from cepaper.cli.common import (
    UsageError,
    check_device,
    cli_type,
    emit,
    factory_terms,
    nonneg_int_arg,
    positive_int_arg,
    shape_arg,
    trials_arg,
)

#: What `fit-alpha --json` prints of a fit (a factory's adds its read-out and input shape).
FIT_KEYS = (
    "alpha",
    "alpha_ci",
    "C",
    "C_ci",
    "intercept",
    "entry",
    "module",
    "options",
    "widths",
    "trials",
    "seed",
    "seconds",
    "device",
)


def _usable_alpha(r, module, readout=None):
    """``r`` (a fit) when its alpha is > 0; else a ``ValueError`` saying that nothing was saved and what to try.

    Eq. 9 needs ``alpha > 0`` (Var(K) growing with ``sum_l 1/fan-in_l``): a fit at or below 0 is never stored,
    so ``design --alpha fit`` cannot pick it up."""
    alpha = r.get("alpha")
    if alpha is not None and alpha > 0:
        return r
    lo, hi = (float("nan") if v is None else v for v in r["alpha_ci"])
    zero = [f"{n} ({100 * z:.0f}%)" for n, z in zip(r["widths"], r.get("zero_draws", ())) if z > 0]
    tries = []
    if readout is not None and readout != "mean":
        why = f": K = 0 exactly in a share of the draws at widths {', '.join(zero)}" if zero else ""
        tries.append(f"--readout mean (a read-out over every output unit, not the {readout} one{why})")
    if r.get("init") == "factory":
        tries.append("--init eq3 (the paper's Eq. 3 draw: N(0, 1) weights scaled by sqrt(2/fan-in), norms off)")
    tries.append(f"more --trials (now {r['trials']})")
    tries.append(f"widths over a wider range (--widths, now {min(r['widths'])}..{max(r['widths'])})")
    a = "undefined" if alpha is None else f"{alpha:.3g}"
    raise ValueError(
        f"alpha = {a} [{lo:.3g}, {hi:.3g}] for {module}: Eq. 9 needs alpha > 0 (the NTK's spread growing with "
        f"sum 1/fan-in), so this fit is not saved and `design --alpha fit` will not use it; try " + "; ".join(tries)
    )


def _stored_alpha(record, what):
    """The alpha of a stored fit, refusing one <= 0 (written before fit-alpha refused to save them)."""
    alpha = float(record["data"]["alpha"])
    if not alpha > 0:
        raise UsageError(
            f"--alpha fit: the stored fit {what} has alpha = {alpha:.3g} <= 0, which Eq. 9 cannot use; "
            "run `cepaper fit-alpha` again (e.g. with --readout mean, more --trials), or pass a number"
        )
    return alpha


def fitted_alpha(arch):
    """``--alpha fit``: the alpha that `cepaper fit-alpha` (profile ``cli``), else the paper profile of
    the alpha section, stored for this arch's member; a ``UsageError`` when there is none."""
    name = "fit_mlp" if arch == "mlp" else "fit_bottleneck"
    for profile in ("cli", "paper"):
        record = results.find("alpha", name, profiles=(profile,))
        if record is not None and record.get("data", {}).get("alpha") is not None:
            return _stored_alpha(record, f"alpha/{name}"), f"fitted: {results.describe(record)}"
    raise UsageError(
        f"--alpha fit: no stored fit alpha/{name} under {results.root()}/cli or /paper; "
        "run `cepaper fit-alpha` first, or pass a number"
    )


def module_fit_name(spec):
    """The results-store name of `cepaper fit-alpha --module SPEC`'s fit: ``fit_module_<slug>_<hash>``, the
    hash over the spec with a FILE.py resolved to its absolute path (the same file from any folder)."""
    where, _, func = spec.rpartition(":")
    key = f"{os.path.realpath(where)}:{func}" if where.endswith(".py") or "/" in where else spec
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{os.path.basename(where)}_{func}").strip("_")[-40:]
    return f"fit_module_{slug}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def fitted_module_alpha(spec):
    """``design --module SPEC --alpha fit``: the alpha `cepaper fit-alpha --module SPEC` stored (profile ``cli``);
    a ``UsageError`` naming the command to run when there is none."""
    name = module_fit_name(spec)
    record = results.find("alpha", name, profiles=("cli",))
    if record is None or record.get("data", {}).get("alpha") is None:
        raise UsageError(
            f"--alpha fit: no stored fit for --module {spec} (alpha/{name} under {results.root()}/cli); "
            f"run `cepaper fit-alpha --module {spec} --input-shape C,H,W` first, or pass a number"
        )
    d = record["data"]
    shape = "x".join(str(s) for s in d.get("input_shape", []))
    return _stored_alpha(record, f"for --module {spec}"), (
        f"fitted on the member factory(1, n), input {shape}, {d.get('readout')} read-out"
        f"{', Eq. 3 draw' if d.get('init') == 'eq3' else ''}: {results.describe(record)}"
    )


def add_fit_alpha(sub):
    p = sub.add_parser("fit-alpha", help="fit alpha of Eq. 9 by Monte Carlo over weight draws (Algorithm 1)")
    p.add_argument(
        "--module",
        required=True,
        metavar="bottleneck|mlp|FILE:FUNC",
        help="the Fig. 5 bottleneck (n_in = n_out = 256), the Eq. 3 MLP, or your own factory "
        "(m, n) -> torch.nn.Module as path/to/file.py:func, package.module:func or "
        "torchvision:resnet50[:layerK] (its member factory(1, n) is fitted; needs --input-shape)",
    )
    p.add_argument(
        "--input-shape",
        type=cli_type(shape_arg),
        metavar="C,H,W",
        help="factory: one example's input shape, without the batch, e.g. 256,8,8",
    )
    p.add_argument(
        "--layers",
        choices=["all", "hidden"],
        help="factory: weight layers in sum 1/fan-in (default all; hidden drops the first)",
    )
    pos_int = cli_type(positive_int_arg)
    p.add_argument("--trials", type=cli_type(trials_arg), default=2000, help="weight draws per width (default 2000)")
    p.add_argument(
        "--widths",
        type=pos_int,
        nargs="+",
        metavar="N",
        help="widths n (default: 16 log-spaced from 1 to 256; for a factory 4 8 16 32)",
    )
    p.add_argument("--seed", type=cli_type(nonneg_int_arg), default=0, help="Monte Carlo seed (>= 0)")
    p.add_argument(
        "--entry", choices=["diag", "offdiag"], default="diag", help="NTK entry: K(x1, x1) (the paper's) or K(x1, x2)"
    )
    p.add_argument("--no-intercept", action="store_true", help="fit log r = alpha s (no intercept)")
    p.add_argument("--weighted", action="store_true", help="weight widths by the inverse variance of log r")
    p.add_argument(
        "--readout",
        choices=["center", "mean", "random"],
        help="bottleneck or factory read-out of the output (default center)",
    )
    p.add_argument(
        "--init",
        choices=["factory", "eq3"],
        help="factory: draw the member with its own initialization (default), or in Eq. 3's parameterization "
        "(eq3: N(0, 1) weights scaled by sqrt(2/fan-in), the last layer's by sqrt(1/fan-in), norms off, biases 0)",
    )
    p.add_argument("--spatial", type=pos_int, help="bottleneck input size H = W (default 3)")
    p.add_argument("--post-relu", action="store_true", help="bottleneck: ReLU after the shortcut sum")
    p.add_argument("--depth", type=pos_int, help="mlp: weight layers L (default 6)")
    p.add_argument("--device", default="cpu", help="torch device of the Monte Carlo (e.g. cuda)")
    p.add_argument("--threads", type=pos_int, default=1, help="CPU threads of the Monte Carlo (default 1: fastest)")
    p.add_argument(
        "--checkpoint", action="store_true", help="resumable: keep finished widths under _build/checkpoints/cli/alpha"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=fit_alpha)


def fit_alpha(args):
    """`cepaper fit-alpha`: Algorithm 1 on the paper's bottleneck block or MLP
    (:func:`cepaper.alpha.fit.measure_alpha`), or on a factory's member (:func:`_fit_factory_alpha`); the fit
    is saved where `design --alpha fit` reads it."""
    from cepaper.alpha import fit  # heavy: torch, scipy

    if args.module not in ("bottleneck", "mlp"):
        return _fit_factory_alpha(args)
    if args.input_shape is not None or args.layers is not None or args.init is not None:
        raise UsageError("--input-shape, --layers and --init only apply to a factory --module FILE:FUNC")
    if args.module == "mlp" and (args.readout or args.spatial or args.post_relu):
        raise UsageError("--readout, --spatial and --post-relu only apply to --module bottleneck")
    if args.module == "bottleneck" and args.depth is not None:
        raise UsageError("--depth only applies to --module mlp")
    options = (
        dict(readout=args.readout, spatial=args.spatial, post_relu=args.post_relu or None)
        if args.module == "bottleneck"
        else dict(depth=args.depth)
    )
    check_device(args.device)
    run = results.Run(
        "alpha", "cli", params=vars(args) | {"func": None}, seed=args.seed, device=args.device, store=True
    )
    files.check_writable(run.dir)  # before the Monte Carlo, not after
    checkpoint = results.checkpoint_dir("alpha", "cli") if args.checkpoint else None
    if checkpoint is not None:
        results.check_json_files(checkpoint)  # a damaged width file is moved aside and recomputed
    r = fit.measure_alpha(
        args.module,
        args.widths,
        args.trials,
        args.seed,
        args.entry,
        intercept=not args.no_intercept,
        weighted=args.weighted,
        device=args.device,
        checkpoint=checkpoint,
        threads=args.threads,
        **options,
    )
    _usable_alpha(r, args.module, (args.readout or "center") if args.module == "bottleneck" else None)
    run.save(f"fit_{args.module}", r, table=fit.result_table(r))
    path = run.dir / f"fit_{args.module}.json"
    keys = FIT_KEYS
    payload = {k: r[k] for k in keys} | {"saved": str(path)}
    num = lambda v, f: "n/a" if v is None else format(v, f)  # C is None when alpha <= 0
    lo, hi = r["alpha_ci"]
    text = (
        f"alpha = {num(r['alpha'], '.3f')}  [{num(lo, '.3f')}, {num(hi, '.3f')}] (95% bootstrap), "
        f"C = {num(r['C'], '.4g')}, "
        f"{r['module']} {r['entry']} entry, {len(r['widths'])} widths {min(r['widths'])}..{max(r['widths'])}, "
        f"T = {r['trials']}, {r['seconds']:.1f} s\nsaved to {path}"
    )
    emit(args, payload, text)


def _fit_factory_alpha(args):
    """`cepaper fit-alpha --module FILE:FUNC`: Algorithm 1 on the member factory(1, n)
    (any_member.fit_member_alpha)."""
    from cepaper.alpha import any_member  # heavy: torch, scipy
    from cepaper.search import factories  # heavy: torch

    if ":" not in args.module:
        raise UsageError(
            f"--module must be bottleneck, mlp, FILE.py:FUNC, package.module:FUNC or torchvision:NAME, "
            f"got {args.module!r}"
        )
    given = [k for k, v in (("--spatial", args.spatial), ("--post-relu", args.post_relu), ("--depth", args.depth)) if v]
    if given:
        raise UsageError(f"{', '.join(given)} only apply to --module bottleneck or mlp, not to a factory")
    if args.input_shape is None:
        raise UsageError("a factory --module needs --input-shape (one example's shape, e.g. 256,8,8)")
    factory = factories.load_factory(args.module)
    check_device(args.device)
    run = results.Run(
        "alpha", "cli", params=vars(args) | {"func": None}, seed=args.seed, device=args.device, store=True
    )
    files.check_writable(run.dir)
    checkpoint = results.checkpoint_dir("alpha", "cli") if args.checkpoint else None
    if checkpoint is not None:
        results.check_json_files(checkpoint)
    with factory_terms(args):
        r = any_member.fit_member_alpha(
            factory,
            args.input_shape,
            args.widths or (4, 8, 16, 32),
            args.trials,
            args.seed,
            args.readout or "center",
            args.layers or "all",
            args.entry,
            intercept=not args.no_intercept,
            weighted=args.weighted,
            device=args.device,
            progress=True,
            threads=args.threads,
            checkpoint=checkpoint,
            name=args.module,
            init=args.init or "factory",
        )
    _usable_alpha(r, args.module, r["readout"])
    name = module_fit_name(args.module)  # one record per factory: `design --module ... --alpha fit`
    run.save(name, r)
    path = run.dir / f"{name}.json"
    keys = FIT_KEYS + ("readout", "input_shape", "init")
    payload = {k: r[k] for k in keys} | {"saved": str(path)}
    num = lambda v, f: "n/a" if v is None else format(v, f)
    lo, hi = r["alpha_ci"]
    text = (
        f"alpha = {num(r['alpha'], '.3f')}  [{num(lo, '.3f')}, {num(hi, '.3f')}] (95% bootstrap), "
        f"C = {num(r['C'], '.4g')}, member factory(1, n) of {r['module']} on input {tuple(r['input_shape'])}, "
        f"{r['readout']} read-out, {r['init']} init, {r['entry']} entry, {len(r['widths'])} widths "
        f"{min(r['widths'])}..{max(r['widths'])}, T = {r['trials']}, {r['seconds']:.1f} s\nsaved to {path}"
    )
    return emit(args, payload, text)
