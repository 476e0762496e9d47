"""``cepaper params`` and ``cepaper design`` (Sec. 3, Algorithm 2): the parameter counts and optimal
ensembles of the paper's modules or of any factory ``--module FILE:FUNC`` (``fit-alpha`` is
:mod:`cepaper.cli.alpha`)."""

from cepaper import complexity, search
from cepaper.cli.alpha import fitted_alpha, fitted_module_alpha
from cepaper.cli.common import (
    UsageError,
    check_device,
    cli_type,
    config_arg,
    emit,
    factory_terms,
    positive_float_arg,
    positive_int_arg,
    shape_arg,
)
from cepaper.search import networks

#: cepaper.search.any_module.FLOPS, here so that parsing the arguments loads no torch (a test checks they agree)
FLOPS = ("macs", "2macs", "2macs+acts")


def _alpha_arg(text):
    return "fit" if text.strip() == "fit" else positive_float_arg(text)


def _module_args(args, baseline):
    """``--module`` instead of ``--arch``: the loaded factory, its ``(m, n)`` and a ``FactoryModule``."""
    from cepaper.search import any_module, factories  # heavy: torch

    if args.arch is not None:
        raise UsageError("give either --arch or --module, not both")
    given = [
        k
        for k, v in (
            ("--classes", args.classes),
            ("--resolution", args.resolution),
            ("--depth", args.depth),
            ("--width", args.width),
            ("--inputs", args.inputs),
        )
        if v is not None
    ]
    if given:
        raise UsageError(f"{', '.join(given)} only apply to --arch; --module reads everything from the built module")
    if args.input_shape is None:
        raise UsageError("--module needs --input-shape (one example's shape, e.g. 256,32,32)")
    if getattr(args, baseline) is None:
        raise UsageError(f"--{baseline} is required with --module (CxD: m members of width n, e.g. 1x64)")
    check_device(args.device)
    factory = factories.load_factory(args.module)
    m, n = (int(v) for v in getattr(args, baseline).rstrip("d").split("x"))
    flops = args.flops_convention or "2macs"
    fm = any_module.FactoryModule(
        factory, args.input_shape, batch=args.batch, device=args.device, repeats=args.repeats, flops=flops
    )
    return factory, m, n, fm


def _check_arch_or_module(args):
    if args.arch is None and args.module is None:
        raise UsageError("one of --arch or --module is required")
    if args.module is None and args.input_shape is not None:
        raise UsageError("--input-shape only applies to --module")
    if args.module is None and args.flops_convention is not None:
        raise UsageError(
            "--flops-convention only applies to --module (--arch counts 2 x multiply-adds + one per conv "
            "output, the convention that gives the paper's 44x8d)"
        )
    network = [k for k in ("network", "network_input_shape", "network_blocks") if getattr(args, k, None) is not None]
    if args.module is None and network:
        raise UsageError(f"--{network[0].replace('_', '-')} only applies to --module (--arch is a whole network)")


def _arch_args(p, baseline):
    """Arguments shared by ``params`` and ``design``: the architecture and its configuration."""
    pos_int = cli_type(positive_int_arg)
    p.add_argument("--arch", choices=list(complexity.ARCHS), help="architecture (or --module)")
    p.add_argument(
        "--module",
        metavar="FILE:FUNC",
        help="your own collegial module: a factory (m, n) -> torch.nn.Module, as path/to/file.py:func "
        "or package.module:func, or torchvision:resnet50 (any torchvision Bottleneck ResNet; "
        "torchvision:resnet50:layer1 for a stage) (instead of --arch; needs --input-shape)",
    )
    p.add_argument(
        "--input-shape",
        type=cli_type(shape_arg),
        metavar="C,H,W",
        help="--module: one example's input shape, without the batch, e.g. 256,32,32",
    )
    p.add_argument("--batch", type=pos_int, default=1, help="--module: examples in the FLOPs/latency input")
    p.add_argument("--device", default="cpu", help="--module: device of FLOPs and latency (cpu, cuda)")
    p.add_argument("--repeats", type=pos_int, default=20, help="--module: timed passes per latency (median, IQR)")
    p.add_argument(
        "--flops-convention",
        choices=FLOPS,
        help="--module: FLOPs as multiply-adds (macs), 2 x multiply-adds (2macs, the default: FlopCounterMode) "
        "or 2 x multiply-adds + one per conv/linear output (2macs+acts: --arch's convention, the paper's 44x8d)",
    )
    p.add_argument(
        f"--{baseline}",
        type=cli_type(config_arg),
        metavar="CxDd",
        help="groups x width per group, e.g. 32x4d (not for mlp)",
    )
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


def add_params(sub):
    p = sub.add_parser("params", help="exact parameter and multiply-add counts of an architecture")
    _arch_args(p, "config")
    p.add_argument("--bias", action="store_true", help="mlp: layers with biases")
    p.set_defaults(func=params)


def params(args):
    """`cepaper params`: exact parameters, multiply-adds and FLOPs of ``--arch`` (:mod:`cepaper.complexity`) or of a
    factory's ``--module`` (counted on the built module)."""
    with factory_terms(args):
        return _params(args)


def _params(args):
    _check_arch_or_module(args)
    if args.module is not None:
        _, m, n, fm = _module_args(args, "config")
        r = {
            "module": args.module,
            "config": f"{m}x{n}",
            "m": m,
            "n": n,
            "input_shape": list(args.input_shape),
            "batch": args.batch,
            "params": int(fm.cost(n, "params", m)),
            "flops": int(fm.cost(n, "flops", m)),
            "flops_convention": fm.flops,
            "member_fan_ins": list(fm.fan_ins(n)),
            "sum_inv_fan_in": float(fm.sum_inv_fan_in(n)),
        }
        rows = [(k, r[k]) for k in ("module", "config", "input_shape", "batch", "member_fan_ins")]
        rows += [
            ("params", f"{r['params']:,}"),
            (f"flops ({fm.flops})", f"{r['flops']:,}"),
            ("sum 1/fan-in (member)", f"{r['sum_inv_fan_in']:.6g}"),
        ]
        return emit(args, r, _table(rows))
    _check_arch_args(args, "config")
    if args.arch == "mlp":
        r = complexity.mlp(args.inputs, args.width, args.depth, args.classes or 1, args.bias)
    else:
        if args.bias:
            raise UsageError("--bias only applies to --arch mlp")
        r = complexity.complexity(args.arch, args.config, classes=args.classes, resolution=args.resolution)
    rows = [(k, v) for k, v in r.items() if k not in ("params", "macs", "flops", "acts", "adds")]
    rows += [
        ("params", f"{r['params']:,} ({r['params'] / 1e6:.2f}M)"),
        ("macs", f"{r['macs']:,} ({r['macs'] / 1e9:.3f} G)"),
        ("flops (2 macs)", f"{r['flops']:,} ({r['flops'] / 1e9:.3f} G)"),
    ]
    emit(args, r, _table(rows))


def add_design(sub):
    p = sub.add_parser("design", help="optimal collegial ensemble m x n for a baseline (Sec. 3, Algorithm 2)")
    _arch_args(p, "baseline")
    p.add_argument(
        "--objective",
        default="primal",
        choices=search.OBJECTIVES,
        help="primal: smoothest at equal budget (Eq. 12); dual: cheapest at equal Var(K) (Eq. 14)",
    )
    p.add_argument(
        "--budget",
        default="params",
        choices=search.BUDGETS + ("latency",),
        help="efficiency metric (Eq. 8 or 15); latency (forward + backward seconds) needs --module",
    )
    p.add_argument(
        "--alpha",
        type=cli_type(_alpha_arg),
        help="alpha of Eq. 9: a number, or 'fit' for the last `cepaper fit-alpha` (else the paper "
        "profile's fit) in the results store; with --module, the last `cepaper fit-alpha --module` "
        "of that factory (default: the paper's 1.60; for mlp 3.63, Fig. 3's)",
    )
    p.add_argument(
        "--rounding", default="nearest", choices=search.ROUNDINGS, help="integer m rule (Algorithm 2 step 6)"
    )
    p.add_argument(
        "--n",
        type=cli_type(positive_int_arg),
        help="evaluate this width instead of the optimum (a model on the curve)",
    )
    p.add_argument("--curve", action="store_true", help="add the whole curve over n")
    p.add_argument(
        "--network",
        metavar="FILE:FUNC",
        help="--module: step 6 matches the whole network built from the module, a factory (m, n) -> "
        "torch.nn.Module (same forms as --module; e.g. cepaper.models.resnext:ResNeXtCifar for the Fig. 5 "
        "block: the paper's 37x10d, 44x8d), instead of the module alone",
    )
    p.add_argument(
        "--network-input-shape",
        type=cli_type(shape_arg),
        metavar="C,H,W",
        help="--network: one example of the network's input (default --input-shape), e.g. 3,32,32",
    )
    p.add_argument(
        "--network-blocks",
        type=cli_type(positive_int_arg),
        metavar="K",
        help="--module: step 6 matches K copies of the module (K blocks of a network; same m, costs x K)",
    )
    p.set_defaults(func=design)


def design(args):
    """`cepaper design`: Algorithm 2 on ``--arch`` (:func:`cepaper.search.networks.design`) or on a factory's
    ``--module`` (:func:`cepaper.search.any_module.design_module`)."""
    with factory_terms(args):
        return _design(args)


def _design(args):
    _check_arch_or_module(args)
    if args.module is not None:
        if args.n is not None:
            raise UsageError("--n does not apply to --module; the curve (--curve) gives every width")
        from cepaper.search import any_module, factories  # heavy: torch

        _, m, n, fm = _module_args(args, "baseline")
        alpha, source = fitted_module_alpha(args.module) if args.alpha == "fit" else (args.alpha, None)
        if args.network is not None and args.network_blocks is not None:
            raise UsageError("give either --network or --network-blocks, not both")
        if args.network_input_shape is not None and args.network is None:
            raise UsageError("--network-input-shape needs --network")
        network = factories.load_factory(args.network) if args.network is not None else args.network_blocks
        r = any_module.design_module(
            fm.factory,
            args.input_shape,
            (m, n),
            args.objective,
            args.budget,
            alpha,
            rounding=args.rounding,
            module=fm,
            network=network,
            network_input_shape=args.network_input_shape,
        )
        if args.network is not None:
            r["step6"] = f"the network {args.network}" + (
                f" on {'x'.join(map(str, args.network_input_shape))}" if args.network_input_shape else ""
            )
        r["module"] = args.module
        if source is not None:
            r["alpha_source"] = source
        if not args.curve:
            r.pop("curve")
        return emit(args, r, format_module_design(r))
    if args.budget == "latency":
        raise UsageError("--budget latency needs --module (the paper's architectures are counted, not timed)")
    _check_arch_args(args, "baseline")
    alpha, alpha_source = fitted_alpha(args.arch) if args.alpha == "fit" else (args.alpha, None)
    kw = dict(
        objective=args.objective,
        budget=args.budget,
        alpha=alpha,
        classes=args.classes,
        resolution=args.resolution,
        rounding=args.rounding,
        n=args.n,
        with_curve=args.curve,
    )
    if args.arch == "mlp":
        r = networks.design("mlp", args.width, mlp_inputs=args.inputs, mlp_depth=args.depth, **kw)
    else:
        r = networks.design(args.arch, args.baseline, **kw)
    if args.alpha == "fit":
        r["alpha_source"] = alpha_source
    emit(args, r, format_design(r))


def format_module_design(r):
    """The human-readable result of ``cepaper design --module``."""
    unit = {"params": "", "flops": " FLOPs", "latency": " s"}[r["budget"]]
    rows = [
        ("module", r["module"]),
        ("baseline", r["baseline"]),
        ("objective", f"{r['objective']} ({r['budget']} budget)"),
        ("alpha", f"{r['alpha']:.3g} ({r['alpha_source']})"),
        ("verdict", r["verdict"]),
        ("optimum n" if r["improves"] else "best width searched", r["n"]),
        ("ensemble", f"{r['config']}  (m = {r['m']}, continuous m = {r['m_exact']:.2f}, curve m = {r['m_curve']:.2f})"),
        ("params", f"{r['params']:,} vs baseline {r['baseline_params']:,}"),
        ("step 6 matches", r["step6"]),
        (f"rho ({r['budget']})", f"{r['rho']:.3f}"),
        ("Var(K) ratio", f"{r['var_ratio']:.3f} (ensemble / baseline)"),
        ("strong duality", "yes (n_p = n_d)" if r["strong_duality"] else "no"),
    ]
    if r["budget"] != "params":
        what = r["budget"] if r["budget"] != "flops" else f"flops ({r['flops_convention']})"
        rows.insert(7, (what, f"{r['cost']:.6g}{unit} vs baseline {r['baseline_cost']:.6g}{unit}"))
    if "latency" in r:
        a, b = r["latency"], r["baseline_latency"]
        rows.append(("latency IQR", f"{a['iqr']:.3g} s (baseline {b['iqr']:.3g} s)"))
        rows.append(("timings resolve it", "yes" if r["timings_resolved"] else "no (see the notes)"))
    return _table(rows) + "".join(f"\nnote: {line}" for line in r["notes"])


def format_design(r):
    """The human-readable result of ``cepaper design``."""
    budget = r["budget"]
    rows = [
        ("arch", r["arch"]),
        ("baseline", r["baseline"]),
        ("objective", f"{r['objective']} ({budget} budget)"),
        ("alpha", f"{r['alpha']:.3g} ({r['alpha_source']})"),
        ("optimum n", f"{r['n_optimum']}" + ("" if r["n"] == r["n_optimum"] else f" (evaluated at n = {r['n']})")),
        ("ensemble", f"{r['config']}  (m = {r['m']}, continuous m = {r['m_exact']:.2f}, curve m = {r['m_curve']:.2f})"),
        ("params", f"{r['params']:,} vs baseline {r['baseline_params']:,}"),
        (f"flops ({r['flops_convention']})", f"{r['flops']:,} vs baseline {r['baseline_flops']:,}"),
        (f"rho ({budget})", f"{r['rho']:.3f}"),
        ("Var(K) ratio", f"{r['var_ratio']:.3f} (ensemble / baseline)"),
        ("strong duality", "yes (n_p = n_d)" if r["strong_duality"] else "no"),
    ]
    text = _table(rows)
    if "curve" in r:
        c = r["curve"]
        lines = [f"{'n':>5} {'m_primal':>10} {'Var ratio':>10} {'m_dual':>10} {'rho_dual':>9}"]
        lines += [
            f"{n:>5} {mp:>10.3f} {vr:>10.4f} {md:>10.3f} {rd:>9.4f}"
            for n, mp, vr, md, rd in zip(c["n"], c["m_primal"], c["var_ratio_primal"], c["m_dual"], c["rho_dual"])
        ]
        text += "\n\n" + "\n".join(lines)
    return text
