"""The ``cepaper`` command: run the paper's notebooks, build the book, design ensembles.

Each subcommand is one ``_add_<name>(sub)`` function that declares its arguments and sets
``func``; ``COMMANDS`` lists them. Errors in the arguments exit with status 2 and a message that
names the argument and what is allowed; so do the errors a user can cause while a command runs
(a full disk, a folder that is not writable, a damaged file, broken YAML): one line that names the
file and says what to do, never a traceback. A notebook that fails exits with status 1; Ctrl-C with
130 and SIGTERM with 143 (the shells' 128 + signal), after cleaning up.
"""

import argparse
import errno
import json
import math
import os
import signal
import sys


class UsageError(ValueError):
    """Bad command-line input: printed as ``cepaper: error: ...`` with exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that cleanup runs as for Ctrl-C (staging folders removed,
    locks released, child processes stopped)."""


def _plain(x, where="result"):
    """``x`` as plain JSON values: numpy scalars and arrays converted, NaN (an undefined value, e.g.
    the standard error of a single run) as ``None``; an infinity is a ``ValueError`` naming the field."""
    if isinstance(x, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if hasattr(x, "tolist"):  # numpy arrays and scalars
        return _plain(x.tolist(), where)
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, float) and math.isinf(x):
        raise ValueError(f"{where} is {x}: the computation overflowed; the inputs are outside what it can represent")
    return x


def emit(args, payload, text):
    """Print ``payload`` as JSON with ``--json`` (strict JSON: no NaN or Infinity, see :func:`_plain`),
    else the human-readable ``text``."""
    print(json.dumps(_plain(payload), indent=1, allow_nan=False) if getattr(args, "json", False) else text)


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
        from cepaper.book import pipeline, profiles
        records = pipeline.run(args.sections, args.profile, profiles.parse_overrides(args.parameter),
                               force=args.force, reuse_stored=args.reuse)
        emit(args, records, pipeline.format_records(records))
    p.set_defaults(func=run)


def _add_book(sub):
    p = sub.add_parser("book", help="run the notebooks of a profile, then build the HTML book")
    p.add_argument("--profile", default="quick", help="parameter profile: a file profiles/<name>.yaml")
    p.add_argument("--force", action="store_true", help="re-execute every notebook")
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)

    def book(args):
        from cepaper.book import render
        index = render.book(args.profile, force=args.force, reuse_stored=args.reuse)
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


def _trials_arg(text):
    if not text.strip().isdigit() or int(text) < 2:
        raise ValueError(f"must be an integer >= 2 (a variance needs two draws), got {text!r}")
    return int(text)


NO_GPU = "pass --device cpu, or run on a machine with a GPU"


def _alpha_arg(text):
    return "fit" if text.strip() == "fit" else _positive_float_arg(text)


def _fitted_alpha(arch):
    """``--alpha fit``: the alpha that `cepaper fit-alpha` (profile ``cli``), else the paper profile of
    the alpha section, stored for this arch's member; a ``UsageError`` when there is none."""
    from cepaper.book import results
    name = "fit_mlp" if arch == "mlp" else "fit_bottleneck"
    for profile in ("cli", "paper"):
        record = results.find("alpha", name, profiles=(profile,))
        if record is not None and record.get("data", {}).get("alpha") is not None:
            return float(record["data"]["alpha"]), f"fitted: {results.describe(record)}"
    raise UsageError(f"--alpha fit: no stored fit alpha/{name} under {results.root()}/cli or /paper; "
                     "run `cepaper fit-alpha` first, or pass a number")


def _module_fit_name(spec):
    """The results-store name of `cepaper fit-alpha --module SPEC`'s fit: ``fit_module_<slug>_<hash>``, the
    hash over the spec with a FILE.py resolved to its absolute path (the same file from any folder)."""
    import hashlib
    import re
    where, _, func = spec.rpartition(":")
    key = f"{os.path.realpath(where)}:{func}" if where.endswith(".py") or "/" in where else spec
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{os.path.basename(where)}_{func}").strip("_")[-40:]
    return f"fit_module_{slug}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _fitted_module_alpha(spec):
    """``design --module SPEC --alpha fit``: the alpha `cepaper fit-alpha --module SPEC` stored (profile ``cli``);
    a ``UsageError`` naming the command to run when there is none."""
    from cepaper.book import results
    name = _module_fit_name(spec)
    record = results.find("alpha", name, profiles=("cli",))
    if record is None or record.get("data", {}).get("alpha") is None:
        raise UsageError(f"--alpha fit: no stored fit for --module {spec} (alpha/{name} under {results.root()}/cli); "
                         f"run `cepaper fit-alpha --module {spec} --input-shape C,H,W` first, or pass a number")
    d = record["data"]
    shape = "x".join(str(s) for s in d.get("input_shape", []))
    return float(d["alpha"]), (f"fitted on the member factory(1, n), input {shape}, {d.get('readout')} read-out: "
                               f"{results.describe(record)}")


def _config_arg(text):
    from cepaper import complexity
    return complexity.format_config(*complexity.parse_config(text))


def _shape_arg(text):
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or not all(t.isdigit() and int(t) >= 1 for t in parts):
        raise ValueError(f"must be comma-separated integers >= 1 such as 256,32,32, got {text!r}")
    return tuple(int(t) for t in parts)


def _module_args(args, baseline):
    """``--module`` instead of ``--arch``: the loaded factory, its ``(m, n)`` and a ``FactoryModule``."""
    from cepaper import design
    if args.arch is not None:
        raise UsageError("give either --arch or --module, not both")
    given = [k for k, v in (("--classes", args.classes), ("--resolution", args.resolution), ("--depth", args.depth),
                            ("--width", args.width), ("--inputs", args.inputs)) if v is not None]
    if given:
        raise UsageError(f"{', '.join(given)} only apply to --arch; --module reads everything from the built module")
    if args.input_shape is None:
        raise UsageError("--module needs --input-shape (one example's shape, e.g. 256,32,32)")
    if getattr(args, baseline) is None:
        raise UsageError(f"--{baseline} is required with --module (CxD: m members of width n, e.g. 1x64)")
    factory = design.load_factory(args.module)
    m, n = (int(v) for v in getattr(args, baseline).rstrip("d").split("x"))
    return factory, m, n, design.FactoryModule(factory, args.input_shape, batch=args.batch, device=args.device,
                                                 repeats=args.repeats)


def _check_arch_or_module(args):
    if args.arch is None and args.module is None:
        raise UsageError("one of --arch or --module is required")
    if args.module is None and args.input_shape is not None:
        raise UsageError("--input-shape only applies to --module")


def _arch_args(p, baseline):
    """Arguments shared by ``params`` and ``design``: the architecture and its configuration."""
    from cepaper import complexity
    pos_int = _cli_type(_positive_int_arg)
    p.add_argument("--arch", choices=list(complexity.ARCHS), help="architecture (or --module)")
    p.add_argument("--module", metavar="FILE:FUNC",
                   help="your own collegial module: a factory (m, n) -> torch.nn.Module, as path/to/file.py:func "
                        "or package.module:func, or torchvision:resnet50 (any torchvision Bottleneck ResNet; "
                        "torchvision:resnet50:layer1 for a stage) (instead of --arch; needs --input-shape)")
    p.add_argument("--input-shape", type=_cli_type(_shape_arg), metavar="C,H,W",
                   help="--module: one example's input shape, without the batch, e.g. 256,32,32")
    p.add_argument("--batch", type=pos_int, default=1, help="--module: examples in the FLOPs/latency input")
    p.add_argument("--device", default="cpu", help="--module: device of FLOPs and latency (cpu, cuda)")
    p.add_argument("--repeats", type=pos_int, default=20, help="--module: timed passes per latency (median, IQR)")
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
        _check_arch_or_module(args)
        if args.module is not None:
            _, m, n, fm = _module_args(args, "config")
            r = {"module": args.module, "config": f"{m}x{n}", "m": m, "n": n, "input_shape": list(args.input_shape),
                 "batch": args.batch, "params": int(fm.cost(n, "params", m)), "flops": int(fm.cost(n, "flops", m)),
                 "flops_convention": "FlopCounterMode: 2 x multiply-adds of convs and matmuls, one forward pass",
                 "member_fan_ins": list(fm.fan_ins(n)), "sum_inv_fan_in": float(fm.sum_inv_fan_in(n))}
            rows = [(k, r[k]) for k in ("module", "config", "input_shape", "batch", "member_fan_ins")]
            rows += [("params", f"{r['params']:,}"), ("flops (2 macs)", f"{r['flops']:,}"),
                     ("sum 1/fan-in (member)", f"{r['sum_inv_fan_in']:.6g}")]
            return emit(args, r, _table(rows))
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
    p.add_argument("--budget", default="params", choices=search.BUDGETS + ("latency",),
                   help="efficiency metric (Eq. 8 or 15); latency (forward + backward seconds) needs --module")
    p.add_argument("--alpha", type=_cli_type(_alpha_arg),
                   help="alpha of Eq. 9: a number, or 'fit' for the last `cepaper fit-alpha` (else the paper "
                        "profile's fit) in the results store; with --module, the last `cepaper fit-alpha --module` "
                        "of that factory (default: the paper's 1.60; for mlp 3.63, Fig. 3's)")
    p.add_argument("--rounding", default="nearest", choices=search.ROUNDINGS, help="integer m rule (Algorithm 2 step 6)")
    p.add_argument("--n", type=_cli_type(_positive_int_arg),
                   help="evaluate this width instead of the optimum (a model on the curve)")
    p.add_argument("--curve", action="store_true", help="add the whole curve over n")

    def design(args):
        _check_arch_or_module(args)
        if args.module is not None:
            if args.n is not None:
                raise UsageError("--n does not apply to --module; the curve (--curve) gives every width")
            from cepaper import design as dsg
            _, m, n, fm = _module_args(args, "baseline")
            alpha, source = _fitted_module_alpha(args.module) if args.alpha == "fit" else (args.alpha, None)
            r = dsg.design_module(fm.factory, args.input_shape, (m, n), args.objective, args.budget, alpha,
                                  rounding=args.rounding, module=fm)
            r["module"] = args.module
            if source is not None:
                r["alpha_source"] = source
            if not args.curve:
                r.pop("curve")
            return emit(args, r, _format_module_design(r))
        if args.budget == "latency":
            raise UsageError("--budget latency needs --module (the paper's architectures are counted, not timed)")
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


def _format_module_design(r):
    """The human-readable result of ``cepaper design --module``."""
    unit = {"params": "", "flops": " FLOPs", "latency": " s"}[r["budget"]]
    rows = [("module", r["module"]), ("baseline", r["baseline"]),
            ("objective", f"{r['objective']} ({r['budget']} budget)"),
            ("alpha", f"{r['alpha']:.3g} ({r['alpha_source']})"), ("optimum n", r["n"]),
            ("ensemble", f"{r['config']}  (m = {r['m']}, continuous m = {r['m_exact']:.2f}, curve m = {r['m_curve']:.2f})"),
            ("params", f"{r['params']:,} vs baseline {r['baseline_params']:,}"),
            (f"rho ({r['budget']})", f"{r['rho']:.3f}"),
            ("Var(K) ratio", f"{r['var_ratio']:.3f} (ensemble / baseline)"),
            ("strong duality", "yes (n_p = n_d)" if r["strong_duality"] else "no")]
    if r["budget"] != "params":
        rows.insert(6, (r["budget"], f"{r['cost']:.6g}{unit} vs baseline {r['baseline_cost']:.6g}{unit}"))
    if "latency" in r:
        rows.append(("latency IQR", f"{r['latency']['iqr']:.3g} s (baseline {r['baseline_latency']['iqr']:.3g} s)"))
    return _table(rows)


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
    p.add_argument("--module", required=True, metavar="bottleneck|mlp|FILE:FUNC",
                   help="the Fig. 5 bottleneck (n_in = n_out = 256), the Eq. 3 MLP, or your own factory "
                        "(m, n) -> torch.nn.Module as path/to/file.py:func, package.module:func or "
                        "torchvision:resnet50[:layerK] (its member factory(1, n) is fitted; needs --input-shape)")
    p.add_argument("--input-shape", type=_cli_type(_shape_arg), metavar="C,H,W",
                   help="factory: one example's input shape, without the batch, e.g. 256,8,8")
    p.add_argument("--layers", choices=["all", "hidden"],
                   help="factory: weight layers in sum 1/fan-in (default all; hidden drops the first)")
    pos_int = _cli_type(_positive_int_arg)
    p.add_argument("--trials", type=_cli_type(_trials_arg), default=2000, help="weight draws per width (default 2000)")
    p.add_argument("--widths", type=pos_int, nargs="+", metavar="N",
                   help="widths n (default: 16 log-spaced from 1 to 256; for a factory 4 8 16 32)")
    p.add_argument("--seed", type=_cli_type(_nonneg_int_arg), default=0, help="Monte Carlo seed (>= 0)")
    p.add_argument("--entry", choices=["diag", "offdiag"], default="diag",
                   help="NTK entry: K(x1, x1) (the paper's) or K(x1, x2)")
    p.add_argument("--no-intercept", action="store_true", help="fit log r = alpha s (no intercept)")
    p.add_argument("--weighted", action="store_true", help="weight widths by the inverse variance of log r")
    p.add_argument("--readout", choices=["center", "mean", "random"],
                   help="bottleneck or factory read-out of the output (default center)")
    p.add_argument("--spatial", type=pos_int, help="bottleneck input size H = W (default 3)")
    p.add_argument("--post-relu", action="store_true", help="bottleneck: ReLU after the shortcut sum")
    p.add_argument("--depth", type=pos_int, help="mlp: weight layers L (default 6)")
    p.add_argument("--device", default="cpu", help="torch device of the Monte Carlo (e.g. cuda)")
    p.add_argument("--threads", type=pos_int, default=1, help="CPU threads of the Monte Carlo (default 1: fastest)")
    p.add_argument("--checkpoint", action="store_true",
                   help="resumable: keep finished widths under _build/checkpoints/cli/alpha")
    p.add_argument("--json", action="store_true", help="print JSON")

    def fit_alpha(args):
        from cepaper import fit
        from cepaper.book import results
        from cepaper.training import spine
        if args.module not in ("bottleneck", "mlp"):
            return _fit_factory_alpha(args)
        if args.input_shape is not None or args.layers is not None:
            raise UsageError("--input-shape and --layers only apply to a factory --module FILE:FUNC")
        if args.module == "mlp" and (args.readout or args.spatial or args.post_relu):
            raise UsageError("--readout, --spatial and --post-relu only apply to --module bottleneck")
        if args.module == "bottleneck" and args.depth is not None:
            raise UsageError("--depth only applies to --module mlp")
        options = (dict(readout=args.readout, spatial=args.spatial, post_relu=args.post_relu or None)
                   if args.module == "bottleneck" else dict(depth=args.depth))
        results.check_device(args.device, fix=NO_GPU)
        run = results.Run("alpha", "cli", params=vars(args) | {"func": None}, seed=args.seed, device=args.device,
                          store=True)
        spine.check_writable(run.dir)  # before the Monte Carlo, not after
        checkpoint = results.checkpoint_dir("alpha", "cli") if args.checkpoint else None
        if checkpoint is not None:
            results.check_json_files(checkpoint)  # a damaged width file is moved aside and recomputed
        r = fit.measure_alpha(args.module, args.widths, args.trials, args.seed, args.entry,
                              intercept=not args.no_intercept, weighted=args.weighted, device=args.device,
                              checkpoint=checkpoint, threads=args.threads, **options)
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


def _fit_factory_alpha(args):
    """`cepaper fit-alpha --module FILE:FUNC`: Algorithm 1 on the member factory(1, n) (design.fit_member_alpha)."""
    from cepaper import design
    from cepaper.book import results
    from cepaper.training import spine
    if ":" not in args.module:
        raise UsageError(f"--module must be bottleneck, mlp, FILE.py:FUNC, package.module:FUNC or torchvision:NAME, "
                         f"got {args.module!r}")
    given = [k for k, v in (("--spatial", args.spatial), ("--post-relu", args.post_relu), ("--depth", args.depth))
             if v]
    if given:
        raise UsageError(f"{', '.join(given)} only apply to --module bottleneck or mlp, not to a factory")
    if args.input_shape is None:
        raise UsageError("a factory --module needs --input-shape (one example's shape, e.g. 256,8,8)")
    factory = design.load_factory(args.module)
    results.check_device(args.device, fix=NO_GPU)
    run = results.Run("alpha", "cli", params=vars(args) | {"func": None}, seed=args.seed, device=args.device,
                      store=True)
    spine.check_writable(run.dir)
    checkpoint = results.checkpoint_dir("alpha", "cli") if args.checkpoint else None
    if checkpoint is not None:
        results.check_json_files(checkpoint)
    r = design.fit_member_alpha(factory, args.input_shape, args.widths or (4, 8, 16, 32), args.trials, args.seed,
                                args.readout or "center", args.layers or "all", args.entry,
                                intercept=not args.no_intercept, weighted=args.weighted, device=args.device,
                                progress=True, threads=args.threads, checkpoint=checkpoint, name=args.module)
    name = _module_fit_name(args.module)             # one record per factory: `design --module ... --alpha fit`
    run.save(name, r)
    path = run.dir / f"{name}.json"
    keys = ("alpha", "alpha_ci", "C", "C_ci", "intercept", "entry", "module", "options", "readout", "input_shape",
            "widths", "trials", "seed", "seconds", "device")
    payload = {k: r[k] for k in keys} | {"saved": str(path)}
    num = lambda v, f: "n/a" if v is None else format(v, f)
    lo, hi = r["alpha_ci"]
    text = (f"alpha = {num(r['alpha'], '.3f')}  [{num(lo, '.3f')}, {num(hi, '.3f')}] (95% bootstrap), "
            f"C = {num(r['C'], '.4g')}, member factory(1, n) of {r['module']} on input {tuple(r['input_shape'])}, "
            f"{r['readout']} read-out, {r['entry']} entry, {len(r['widths'])} widths "
            f"{min(r['widths'])}..{max(r['widths'])}, T = {r['trials']}, {r['seconds']:.1f} s\nsaved to {path}")
    return emit(args, payload, text)


# --- `cepaper train` (Sec. 4.2, App. A: one ResNeXt with the paper's recipe) --------------------------


def _add_train(sub):
    from cepaper import complexity
    from cepaper.training import grids
    from cepaper.training import recipes
    p = sub.add_parser("train", help="train one ResNeXt with a paper recipe (Sec. 4.2, App. A); resumable")
    pos_int = _cli_type(_positive_int_arg)
    p.add_argument("--arch", required=True, choices=[a for a in complexity.ARCHS if a.startswith("resnext")])
    p.add_argument("--config", required=True, type=_cli_type(_config_arg), metavar="CxDd", help="e.g. 37x10d")
    p.add_argument("--dataset", required=True, choices=list(recipes.DATASET_RECIPE), help="a cepaper.data dataset")
    p.add_argument("--recipe", choices=list(recipes.RECIPES),
                   help="default: the dataset's (cifar for CIFAR: BatchNorm over 16 images, as on 8 GPUs; "
                        "cifar_1gpu: over 128)")
    p.add_argument("--epochs", type=pos_int, help="default: the recipe's (milestones scale with it)")
    p.add_argument("--runs", type=pos_int, default=1, help="runs (seeds seed..seed+runs-1)")
    p.add_argument("--seed", type=_cli_type(_nonneg_int_arg), default=0, help="first seed (>= 0)")
    p.add_argument("--n-train", type=pos_int, help="first N training images (default: all)")
    p.add_argument("--n-test", type=pos_int, help="first N test images (default: all)")
    p.add_argument("--data-root", help="data folder (default: $CEPAPER_DATA)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download the CIFARs into the data root when they are not there")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--workers", type=_cli_type(_nonneg_int_arg), default=8, help="DataLoader workers (ImageNet folders)")
    from cepaper.training import distributed
    p.add_argument("--rerun-stale", action="store_true",
                   help="train again the finished runs that older training code made (default: reuse them, marked stale)")
    from cepaper.training import executors
    p.add_argument("--executor", choices=executors.EXECUTORS, default="inprocess",
                   help="the runs (--runs) one after another here (default), or each a submitit job: local "
                        "(this machine's GPUs, one each) or slurm (a SLURM cluster)")
    p.add_argument("--backend", choices=distributed.BACKENDS,
                   help="under torchrun: the process group's backend (default nccl on GPUs, gloo on CPUs)")
    p.add_argument("--json", action="store_true", help="print JSON")

    def train(args):
        try:
            return _train(args)
        finally:
            distributed.shutdown()

    def _train(args):
        from cepaper import data
        from cepaper.sections import paper
        from cepaper.book import results
        from cepaper.training import spine
        if (args.arch in ("resnext50", "resnext101")) != (args.dataset == "imagenet"):
            raise UsageError(f"--arch {args.arch} does not fit --dataset {args.dataset}: resnext50/101 are the "
                             f"ImageNet (224x224) models, resnext29/38 the CIFAR-style ones (32x32, 64x64)")
        rec = args.recipe or recipes.DATASET_RECIPE[args.dataset]
        results.check_device(args.device, fix=NO_GPU)
        distributed.check_backend(args.backend, args.device)
        if args.download and data.data_root(args.data_root) is None:
            raise UsageError("--download needs a data root: pass --data-root, or set CEPAPER_DATA")
        if distributed.launched():   # the world size is checked before anything is loaded or written
            distributed.check_world(recipes.recipe(rec), int(os.environ["WORLD_SIZE"]))
        w, device = distributed.setup(args.device, args.backend)
        if w.size > 1 and args.executor != "inprocess":
            raise UsageError("--executor runs each run as its own job; under torchrun leave it out (inprocess)")
        ex = executors.executor(args.executor, results.checkpoint_dir("cifar", "cli").parent / "jobs")
        run = results.Run("cifar" if args.dataset.startswith("cifar") else "imagenet", "cli", seed=args.seed,
                          device=str(device), params={k: v for k, v in vars(args).items() if k != "func"},
                          store=True)
        spine.check_writable(run.dir)  # before the training, not after
        load = lambda: tuple(_load_split(data, args, split, n, flag) for split, n, flag in
                             (("train", args.n_train, "--n-train"), ("test", args.n_test, "--n-test")))
        tr, te = load() if w.writer else (None, None)          # rank 0 first: it may download
        distributed.barrier(w)
        tr, te = (tr, te) if w.writer else load()
        classes = {"cifar10": 10, "cifar100": 100}.get(args.dataset, 1000)
        records = grids.train_recipe_grid([args.config], args.dataset, tr, te, range(args.seed, args.seed + args.runs),
                                      arch=args.arch, recipe_name=rec, classes=classes, epochs=args.epochs,
                                      cache=results.checkpoint_dir(run.section, "cli"), device=args.device,
                                      channels_last=args.channels_last, bf16=args.bf16, workers=args.workers,
                                      progress=True, rerun_stale=args.rerun_stale, executor=ex)
        if not w.writer:
            return None                                         # rank 0 saves and reports
        last = paper.STATISTICS[run.section]["last_epochs"]
        summ = grids.grid_summary(records, last=last)
        name = f"train_{args.dataset}_{args.arch}_{args.config}_{rec}_e{args.epochs or 'all'}_s{args.seed}-{args.seed + args.runs - 1}"
        run.save(name, {"records": records, "summary": summ.to_dict("records"), "world_size": w.size}, table=summ)
        r = summ.iloc[0]
        stale = grids.stale_runs(records)
        payload = {"summary": summ.to_dict("records"), "saved": str(run.dir / f"{name}.json"), "world_size": w.size,
                   "stale": stale}
        text = (f"{args.arch} {args.config} on {args.dataset} ({tr.source}), recipe {rec}, {int(r.runs)} run(s): "
                f"top-1 {r.top1:.2f}%  top-5 {r.top5:.2f}% ({w.size} process(es); "
                + ("final epoch" if last == 1 else f"mean of the last {last} epochs") + f")\nsaved to {payload['saved']}"
                + "".join(f"\nstale: seed {s['seed']} was trained by older code (commit {(s['commit'] or 'unknown')[:12]}; "
                          f"changed since: {', '.join(s['files'])}); --rerun-stale trains it again" for s in stale))
        emit(args, payload, text)
    p.set_defaults(func=train)


# data.load's messages in the library's terms, and the flags of `cepaper train` that do the same
_DATA_FLAGS = (("pass download=True", "pass --download"), ("download=True", "--download"),
               ("root=None", "no --data-root"), ("pass root=...", "pass --data-root"),
               ("pass n=...", "pass --n-train / --n-test"))


def _load_split(data, args, split, n, flag):
    """``data.load`` of one split for `cepaper train`: its errors name the command's flags, and a
    ``--n-train``/``--n-test`` above the split's size is an error (not silently the whole split)."""
    try:
        ds = data.load(args.dataset, split, root=args.data_root, download=args.download, n=n)
    except (FileNotFoundError, PermissionError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # the OS's own error: reported with its file
        text = str(e)
        for library, flag_text in _DATA_FLAGS:
            text = text.replace(library, flag_text)
        raise type(e)(text) from None
    if n is not None and len(ds) < n:
        raise UsageError(f"{flag} {n} is more than the {len(ds)} {split} images of {args.dataset} "
                         f"({ds.source}); pass at most {flag} {len(ds)}, or leave it out for all of them")
    return ds


COMMANDS = [_add_run, _add_book, _add_params, _add_design, _add_fit_alpha, _add_train]


def build_parser():
    parser = argparse.ArgumentParser(prog="cepaper", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


# errno -> (what happened, what to do); the file is named before it
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some space there and run again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space there and run again"),
    errno.EFBIG: ("file too large", "it passed the file-size limit (`ulimit -f`) or the filesystem's largest "
                                    "file: raise the limit or write to another filesystem, then run again"),
    errno.EACCES: ("permission denied", "fix its permissions, then run again"),
    errno.EPERM: ("operation not permitted", "fix its permissions, then run again"),
    errno.EROFS: ("the filesystem is read-only", "write somewhere writable instead"),
    errno.EXDEV: ("it cannot be moved across filesystems", "keep it and its destination on one filesystem"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.EISDIR: ("it is a folder, not a file", "check the path"),
    errno.EIO: ("input/output error", "check the disk"),
    errno.EMFILE: ("too many open files", "raise the limit (`ulimit -n`)"),
}


def os_error_line(e):
    """One line for an ``OSError``: the file, what happened, what to do (and any note the pipeline
    added: which section stopped, that the last good results are kept)."""
    notes = " ".join(getattr(e, "__notes__", ()))
    if e.errno is None:  # ours, with its own message
        return f"{e}{' ' + notes if notes else ''}"
    files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what, fix = _OS_ERRORS.get(e.errno, (e.strerror or os.strerror(e.errno), "check it, then run again"))
    if e.filename is not None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM,
                                              errno.EROFS):
        from cepaper.book import results
        if os.path.abspath(e.filename).startswith(os.path.abspath(results.root()) + os.sep):
            fix += ", or point CEPAPER_RESULTS at another folder"
    code = errno.errorcode.get(e.errno, str(e.errno))
    return f"{files or 'a file'}: {what} ({code}); {fix}{' ' + notes if notes else ''}"


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    fail = lambda status, text: parser.exit(status, f"cepaper {args.command}: {text}\n")
    import threading
    main_thread = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _on_sigterm) or signal.SIG_DFL) if main_thread else None
    try:
        args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
    except OSError as e:  # before ValueError's handler: FileNotFoundError, PermissionError, ...
        fail(2, f"error: {os_error_line(e)}")
    except (UsageError, ValueError) as e:
        fail(2, f"error: {e}")
    except RuntimeError as e:  # a notebook raised, or the book did not build
        fail(1, f"error: {e}")
    except KeyboardInterrupt as e:
        import logging  # the interrupted kernel's tasks are collected at exit: no "never retrieved" traceback
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        status, what = (143, "terminated (SIGTERM)") if isinstance(e, Terminated) else (130, "interrupted (Ctrl-C)")
        fail(status, f"{what}; nothing half-written is kept and the last good results stay; run the same "
                     "command again to continue (train and fit-alpha --checkpoint resume)")
    except Exception as e:  # a bug: still one line, with where it happened
        if os.environ.get("CEPAPER_TRACEBACK"):
            raise
        import traceback
        last = traceback.extract_tb(e.__traceback__)[-1]
        fail(1, f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                f"(at {os.path.basename(last.filename)}:{last.lineno}); this is a bug in cepaper, please "
                "report it; CEPAPER_TRACEBACK=1 shows the traceback")
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
