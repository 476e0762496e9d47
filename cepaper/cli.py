"""The ``cepaper`` command: run the paper's notebooks, build the book, design ensembles.

Each subcommand is one ``_add_<name>(sub)`` function that declares its arguments and sets
``func``; ``COMMANDS`` lists them. Errors in the arguments exit with status 2 and a message that
names the argument and what is allowed.
"""

import argparse
import json
import sys


class UsageError(ValueError):
    """Bad command-line input: printed as ``cepaper: error: ...`` with exit status 2."""


def emit(args, payload, text):
    """Print ``payload`` as JSON with ``--json``, else the human-readable ``text``."""
    print(json.dumps(payload, indent=1) if getattr(args, "json", False) else text)


REUSE_HELP = ("execute nothing: use the executed notebooks stored with the results "
              "(results/<profile>/<section>/notebook.ipynb, e.g. a committed GPU run)")


def _add_run(sub):
    p = sub.add_parser("run", help="execute section notebooks with papermill (cached)")
    p.add_argument("sections", nargs="*", metavar="SECTION", help="sections to run (default: all in the book)")
    p.add_argument("--profile", default="quick", help="parameter profile: a file profiles/<name>.yaml")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override one notebook parameter (YAML value)")
    p.add_argument("--force", action="store_true", help="execute even when the cache is up to date")
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)
    p.add_argument("--json", action="store_true", help="print the run records as JSON")

    def run(args):
        from cepaper import pipeline
        records = pipeline.run(args.sections, args.profile, pipeline.parse_overrides(args.parameter),
                               force=args.force, reuse_stored=args.reuse)
        emit(args, records, pipeline.format_records(records))
    p.set_defaults(func=run)


def _add_book(sub):
    p = sub.add_parser("book", help="run the notebooks of a profile, then build the HTML book")
    p.add_argument("--profile", default="quick", help="parameter profile: a file profiles/<name>.yaml")
    p.add_argument("--force", action="store_true", help="re-execute every notebook")
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)

    def book(args):
        from cepaper import pipeline
        index = pipeline.book(args.profile, force=args.force, reuse_stored=args.reuse)
        print(f"The book is at {index}")
    p.set_defaults(func=book)


# --- `cepaper params` and `cepaper design` (Sec. 3, Algorithm 2; issue 3) -------------------------


def _cli_type(convert):
    """An argparse ``type`` from a converter that raises ``ValueError``: argparse then exits with
    status 2 and ``argument --NAME: <message>``."""
    def parse(text):
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _positive_int_arg(text):
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def _nonneg_int_arg(text):
    if not text.strip().isdigit():
        raise ValueError(f"must be an integer >= 0, got {text!r}")
    return int(text)


def _positive_float_arg(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a number > 0, got {text!r}")
    return value


def _alpha_arg(text):
    return "fit" if text.strip() == "fit" else _positive_float_arg(text)


def _fitted_alpha(arch):
    """``--alpha fit``: the alpha that `cepaper fit-alpha` (profile ``cli``), else the paper profile of
    the alpha section, stored for this arch's member; a ``UsageError`` when there is none."""
    from cepaper import results
    name = "fit_mlp" if arch == "mlp" else "fit_bottleneck"
    for profile in ("cli", "paper"):
        record = results.find("alpha", name, profiles=(profile,))
        if record is not None and record.get("data", {}).get("alpha") is not None:
            return float(record["data"]["alpha"]), f"fitted: {results.describe(record)}"
    raise UsageError(f"--alpha fit: no stored fit alpha/{name} under {results.root()}/cli or /paper; "
                     "run `cepaper fit-alpha` first, or pass a number")


def _config_arg(text):
    from cepaper import complexity
    return complexity.format_config(*complexity.parse_config(text))


def _arch_args(p, baseline):
    """Arguments shared by ``params`` and ``design``: the architecture and its configuration."""
    from cepaper import complexity
    pos_int = _cli_type(_positive_int_arg)
    p.add_argument("--arch", required=True, choices=list(complexity.ARCHS), help="architecture")
    p.add_argument(f"--{baseline}", type=_cli_type(_config_arg),
                   metavar="CxDd", help="groups x width per group, e.g. 32x4d (not for mlp)")
    p.add_argument("--classes", type=pos_int, help="classes (outputs for mlp; default: the arch's dataset)")
    p.add_argument("--resolution", type=pos_int, help="input resolution (default: the arch's dataset)")
    p.add_argument("--depth", type=pos_int, help="mlp: number of weight layers L of Eq. 3")
    p.add_argument("--width", type=pos_int, help="mlp: hidden width")
    p.add_argument("--inputs", type=pos_int, help="mlp: input size n_0")
    p.add_argument("--json", action="store_true", help="print JSON")


def _check_arch_args(args, baseline):
    """Which of --CONFIG / --depth --width --inputs the arch needs; ``UsageError`` otherwise."""
    mlp_args = {"--depth": args.depth, "--width": args.width, "--inputs": args.inputs}
    if args.arch == "mlp":
        missing = [k for k, v in mlp_args.items() if v is None]
        if missing:
            raise UsageError(f"--arch mlp needs {', '.join(missing)} (positive integers)")
        if getattr(args, baseline) is not None:
            raise UsageError(f"--{baseline} does not apply to --arch mlp; give --depth, --width, --inputs")
        if args.resolution is not None:
            raise UsageError("--resolution does not apply to --arch mlp")
    elif args.arch == "bottleneck" and args.classes is not None:
        raise UsageError("--classes does not apply to --arch bottleneck (a single block has no classifier)")
    if args.arch != "mlp":
        if getattr(args, baseline) is None:
            raise UsageError(f"--{baseline} is required for --arch {args.arch} (CxDd, e.g. 32x4d)")
        given = [k for k, v in mlp_args.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --arch mlp; give --{baseline} CxDd")


def _table(rows):
    """Two aligned columns ``name  value`` for the human-readable output."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _add_params(sub):
    p = sub.add_parser("params", help="exact parameter and multiply-add counts of an architecture")
    _arch_args(p, "config")
    p.add_argument("--bias", action="store_true", help="mlp: layers with biases")

    def params(args):
        from cepaper import complexity
        _check_arch_args(args, "config")
        if args.arch == "mlp":
            r = complexity.mlp(args.inputs, args.width, args.depth, args.classes or 1, args.bias)
        else:
            if args.bias:
                raise UsageError("--bias only applies to --arch mlp")
            r = complexity.complexity(args.arch, args.config, classes=args.classes, resolution=args.resolution)
        rows = [(k, v) for k, v in r.items() if k not in ("params", "macs", "flops", "acts", "adds")]
        rows += [("params", f"{r['params']:,} ({r['params'] / 1e6:.2f}M)"),
                 ("macs", f"{r['macs']:,} ({r['macs'] / 1e9:.3f} G)"),
                 ("flops (2 macs)", f"{r['flops']:,} ({r['flops'] / 1e9:.3f} G)")]
        emit(args, r, _table(rows))
    p.set_defaults(func=params)


def _add_design(sub):
    p = sub.add_parser("design", help="optimal collegial ensemble m x n for a baseline (Sec. 3, Algorithm 2)")
    _arch_args(p, "baseline")
    from cepaper import search
    p.add_argument("--objective", default="primal", choices=search.OBJECTIVES,
                   help="primal: smoothest at equal budget (Eq. 12); dual: cheapest at equal Var(K) (Eq. 14)")
    p.add_argument("--budget", default="params", choices=search.BUDGETS, help="efficiency metric (Eq. 8 or 15)")
    p.add_argument("--alpha", type=_cli_type(_alpha_arg),
                   help="alpha of Eq. 9: a number, or 'fit' for the last `cepaper fit-alpha` (else the paper "
                        "profile's fit) in the results store (default: the paper's 1.60; for mlp 3.63, Fig. 3's)")
    p.add_argument("--rounding", default="nearest", choices=search.ROUNDINGS, help="integer m rule (Algorithm 2 step 6)")
    p.add_argument("--n", type=_cli_type(_positive_int_arg),
                   help="evaluate this width instead of the optimum (a model on the curve)")
    p.add_argument("--curve", action="store_true", help="add the whole curve over n")

    def design(args):
        _check_arch_args(args, "baseline")
        alpha, alpha_source = _fitted_alpha(args.arch) if args.alpha == "fit" else (args.alpha, None)
        kw = dict(objective=args.objective, budget=args.budget, alpha=alpha, classes=args.classes,
                  resolution=args.resolution, rounding=args.rounding, n=args.n, with_curve=args.curve)
        if args.arch == "mlp":
            r = search.design("mlp", args.width, mlp_inputs=args.inputs, mlp_depth=args.depth, **kw)
        else:
            r = search.design(args.arch, args.baseline, **kw)
        if args.alpha == "fit":
            r["alpha_source"] = alpha_source
        emit(args, r, _format_design(r))
    p.set_defaults(func=design)


def _format_design(r):
    """The human-readable result of ``cepaper design``."""
    budget = r["budget"]
    rows = [("arch", r["arch"]), ("baseline", r["baseline"]), ("objective", f"{r['objective']} ({budget} budget)"),
            ("alpha", f"{r['alpha']:.3g} ({r['alpha_source']})"),
            ("optimum n", f"{r['n_optimum']}" + ("" if r["n"] == r["n_optimum"] else f" (evaluated at n = {r['n']})")),
            ("ensemble", f"{r['config']}  (m = {r['m']}, continuous m = {r['m_exact']:.2f}, curve m = {r['m_curve']:.2f})"),
            ("params", f"{r['params']:,} vs baseline {r['baseline_params']:,}"),
            (f"flops ({r['flops_convention']})", f"{r['flops']:,} vs baseline {r['baseline_flops']:,}"),
            (f"rho ({budget})", f"{r['rho']:.3f}"),
            ("Var(K) ratio", f"{r['var_ratio']:.3f} (ensemble / baseline)"),
            ("strong duality", "yes (n_p = n_d)" if r["strong_duality"] else "no")]
    text = _table(rows)
    if "curve" in r:
        c = r["curve"]
        lines = [f"{'n':>5} {'m_primal':>10} {'Var ratio':>10} {'m_dual':>10} {'rho_dual':>9}"]
        lines += [f"{n:>5} {mp:>10.3f} {vr:>10.4f} {md:>10.3f} {rd:>9.4f}" for n, mp, vr, md, rd in
                  zip(c["n"], c["m_primal"], c["var_ratio_primal"], c["m_dual"], c["rho_dual"])]
        text += "\n\n" + "\n".join(lines)
    return text


# --- `cepaper fit-alpha` (Algorithm 1, Sec. 4.2, Fig. 8; issue 5) -----------------------------------


def _add_fit_alpha(sub):
    p = sub.add_parser("fit-alpha", help="fit alpha of Eq. 9 by Monte Carlo over weight draws (Algorithm 1)")
    p.add_argument("--module", required=True, choices=["bottleneck", "mlp"],
                   help="the Fig. 5 bottleneck (n_in = n_out = 256) or the Eq. 3 MLP")
    p.add_argument("--trials", type=int, default=2000, help="weight draws per width (default 2000)")
    p.add_argument("--widths", type=int, nargs="+", metavar="N",
                   help="widths n (default: 16 log-spaced from 1 to 256)")
    p.add_argument("--seed", type=int, default=0, help="Monte Carlo seed")
    p.add_argument("--entry", choices=["diag", "offdiag"], default="diag",
                   help="NTK entry: K(x1, x1) (the paper's) or K(x1, x2)")
    p.add_argument("--no-intercept", action="store_true", help="fit log r = alpha s (no intercept)")
    p.add_argument("--weighted", action="store_true", help="weight widths by the inverse variance of log r")
    p.add_argument("--readout", choices=["center", "mean", "random"], help="bottleneck read-out (default center)")
    p.add_argument("--spatial", type=int, help="bottleneck input size H = W (default 3)")
    p.add_argument("--post-relu", action="store_true", help="bottleneck: ReLU after the shortcut sum")
    p.add_argument("--depth", type=int, help="mlp: weight layers L (default 6)")
    p.add_argument("--device", default="cpu", help="torch device of the Monte Carlo (e.g. cuda)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the Monte Carlo (default 1: fastest)")
    p.add_argument("--checkpoint", action="store_true",
                   help="resumable: keep finished widths under _build/checkpoints/cli/alpha")
    p.add_argument("--json", action="store_true", help="print JSON")

    def fit_alpha(args):
        from cepaper import fit, results
        if args.module == "mlp" and (args.readout or args.spatial or args.post_relu):
            raise UsageError("--readout, --spatial and --post-relu only apply to --module bottleneck")
        if args.module == "bottleneck" and args.depth is not None:
            raise UsageError("--depth only applies to --module mlp")
        options = (dict(readout=args.readout, spatial=args.spatial, post_relu=args.post_relu or None)
                   if args.module == "bottleneck" else dict(depth=args.depth))
        run = results.Run("alpha", "cli", params=vars(args) | {"func": None}, seed=args.seed, device=args.device,
                          store=True)
        r = fit.measure_alpha(args.module, args.widths, args.trials, args.seed, args.entry,
                              intercept=not args.no_intercept, weighted=args.weighted, device=args.device,
                              checkpoint=results.checkpoint_dir("alpha", "cli") if args.checkpoint else None,
                              threads=args.threads, **options)
        run.save(f"fit_{args.module}", r, table=fit.result_table(r))
        path = run.dir / f"fit_{args.module}.json"
        keys = ("alpha", "alpha_ci", "C", "C_ci", "intercept", "entry", "module", "options", "widths",
                "trials", "seed", "seconds", "device")
        payload = {k: r[k] for k in keys} | {"saved": str(path)}
        num = lambda v, f: "n/a" if v is None else format(v, f)      # C is None when alpha <= 0
        lo, hi = r["alpha_ci"]
        text = (f"alpha = {num(r['alpha'], '.3f')}  [{num(lo, '.3f')}, {num(hi, '.3f')}] (95% bootstrap), "
                f"C = {num(r['C'], '.4g')}, "
                f"{r['module']} {r['entry']} entry, {len(r['widths'])} widths {min(r['widths'])}..{max(r['widths'])}, "
                f"T = {r['trials']}, {r['seconds']:.1f} s\nsaved to {path}")
        emit(args, payload, text)
    p.set_defaults(func=fit_alpha)


# --- `cepaper train` (Sec. 4.2, App. A: one ResNeXt with the paper's recipe) --------------------------


def _add_train(sub):
    from cepaper import classify, complexity
    p = sub.add_parser("train", help="train one ResNeXt with a paper recipe (Sec. 4.2, App. A); resumable")
    pos_int = _cli_type(_positive_int_arg)
    p.add_argument("--arch", required=True, choices=[a for a in complexity.ARCHS if a.startswith("resnext")])
    p.add_argument("--config", required=True, type=_cli_type(_config_arg), metavar="CxDd", help="e.g. 37x10d")
    p.add_argument("--dataset", required=True, choices=list(classify.DATASET_RECIPE), help="a cepaper.data dataset")
    p.add_argument("--recipe", choices=list(classify.RECIPES), help="default: the dataset's (cifar for CIFAR)")
    p.add_argument("--epochs", type=pos_int, help="default: the recipe's (milestones scale with it)")
    p.add_argument("--runs", type=pos_int, default=1, help="runs (seeds seed..seed+runs-1)")
    p.add_argument("--seed", type=_cli_type(_nonneg_int_arg), default=0, help="first seed (>= 0)")
    p.add_argument("--n-train", type=pos_int, help="first N training images (default: all)")
    p.add_argument("--n-test", type=pos_int, help="first N test images (default: all)")
    p.add_argument("--data-root", help="data folder (default: $CEPAPER_DATA)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers (ImageNet folders)")
    p.add_argument("--json", action="store_true", help="print JSON")

    def train(args):
        from cepaper import data, results
        if (args.arch in ("resnext50", "resnext101")) != (args.dataset == "imagenet"):
            raise UsageError(f"--arch {args.arch} does not fit --dataset {args.dataset}: resnext50/101 are the "
                             f"ImageNet (224x224) models, resnext29/38 the CIFAR-style ones (32x32, 64x64)")
        rec = args.recipe or classify.DATASET_RECIPE[args.dataset]
        run = results.Run("cifar" if args.dataset.startswith("cifar") else "imagenet", "cli", seed=args.seed,
                          device=args.device, params={k: v for k, v in vars(args).items() if k != "func"},
                          store=True)
        tr = data.load(args.dataset, "train", root=args.data_root, n=args.n_train)
        te = data.load(args.dataset, "test", root=args.data_root, n=args.n_test)
        classes = {"cifar10": 10, "cifar100": 100}.get(args.dataset, 1000)
        records = classify.run_models([args.config], args.dataset, tr, te, range(args.seed, args.seed + args.runs),
                                      arch=args.arch, recipe_name=rec, classes=classes, epochs=args.epochs,
                                      cache=results.checkpoint_dir(run.section, "cli"), device=args.device,
                                      channels_last=args.channels_last, bf16=args.bf16, workers=args.workers,
                                      progress=True)
        summ = classify.summary(records)
        name = f"train_{args.dataset}_{args.arch}_{args.config}_{rec}_e{args.epochs or 'all'}_s{args.seed}-{args.seed + args.runs - 1}"
        run.save(name, {"records": records, "summary": summ.to_dict("records")}, table=summ)
        r = summ.iloc[0]
        payload = {"summary": summ.to_dict("records"), "saved": str(run.dir / f"{name}.json")}
        text = (f"{args.arch} {args.config} on {args.dataset} ({tr.source}), recipe {rec}, {int(r.runs)} run(s): "
                f"top-1 {r.top1:.2f}%  top-5 {r.top5:.2f}% (last-10-epoch mean)\nsaved to {payload['saved']}")
        emit(args, payload, text)
    p.set_defaults(func=train)


COMMANDS = [_add_run, _add_book, _add_params, _add_design, _add_fit_alpha, _add_train]


def build_parser():
    parser = argparse.ArgumentParser(prog="cepaper", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ValueError, FileNotFoundError) as e:
        parser.exit(2, f"cepaper {args.command}: error: {e}\n")
    except RuntimeError as e:  # a notebook raised, or the book did not build
        parser.exit(1, f"cepaper {args.command}: error: {e}\n")
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
