"""Algorithm 1, lines 1-6 (Sec. 4.2, App. D): Monte Carlo NTK draws of a module at many widths.

For each width ``n`` a sweep draws the weights ``T`` times and keeps one NTK entry per draw on two
inputs; :func:`cepaper.alpha.fit.fit_alpha` then fits alpha to them (line 7). ``s(n) = sum_l 1 / fan-in_l(n)``
is read from the module (:func:`fan_ins`, :func:`~cepaper.search.equations.sum_inv_fan_in`) or from the
design classes of :mod:`cepaper.search` (:func:`bottleneck_term`, :func:`mlp_term`).

Which layers enter ``s(n)`` follows :mod:`cepaper.search`, so that the fitted alpha means the same
thing in the design: the bottleneck sums all three convs (``1/n_in + 1/(9n) + 1/n``); the MLP of
Eq. 3 sums its hidden layers (``(L - 1)/n``, Prop. 1), not the input layer (whose input is fixed).
With an intercept a constant term such as ``1/n_in`` only moves ``a``, never alpha.

The fitted alpha depends on the scalar function (input, spatial size, read-out of the block; the
entry) and on the widths the fit sees, because ``log r`` is not exactly linear in ``s``: it bends
at small widths. Notebook ``03_alpha`` measures both; :data:`DEFAULTS` are the literal reading of
Sec. 4.2 (one output unit's diagonal NTK entry), with which the paper's recipe gives alpha near 1.6.

Draws: width ``n`` uses the seed :func:`width_seed` ``(seed, n)``, so a width's samples do not
depend on which other widths are swept, and a resumed sweep equals an uninterrupted one. The samples
of each width are drawn by :func:`cepaper.montecarlo.mc_samples` in chunks whose size depends only on the
module and width (never on the device's memory), float32 compute with float64 sums.
"""

import json
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cepaper import files, ntk, runs
from cepaper._checks import choice, positive_int
from cepaper.models.mlp import CollegialMLP
from cepaper.search import equations
from cepaper.search.equations import sum_inv_fan_in

MODULES = ("bottleneck", "mlp")


#: float32 working memory per Monte Carlo chunk (floats); fixes the chunk size of every width.
CHUNK_FLOATS = 2**25


def log_grid(lo=1, hi=256, num=16):
    """``num`` distinct integer widths from ``lo`` to ``hi``, log-spaced (Algorithm 1's ratios).

    Rounds ``geomspace(lo, hi, num)`` and, where rounding repeats a width (near ``lo``), takes the
    next integer up: ``log_grid(1, 256, 16) = (1, 2, 3, 4, 5, 6, 9, 13, 19, 28, 40, 58, 84, 122, 177, 256)``.
    """
    lo, hi, num = positive_int("lo", lo), positive_int("hi", hi), positive_int("num", num)
    if hi - lo + 1 < num:
        raise ValueError(f"need hi - lo + 1 >= num for {num} distinct widths, got lo={lo}, hi={hi}")
    out = []
    for w in np.rint(np.geomspace(lo, hi, num)).astype(int):
        out.append(max(int(w), out[-1] + 1) if out else int(w))
    if out[-1] > hi:  # cannot happen for hi - lo + 1 >= num; guard
        raise ValueError(f"could not place {num} distinct widths in [{lo}, {hi}]")
    return tuple(out)


def check_widths(widths):
    """``widths`` as a tuple of distinct ints >= 1 (an error names the first bad one)."""
    widths = tuple(positive_int("width", w) for w in widths)
    if not widths:
        raise ValueError("widths must hold at least one width, got ()")
    if len(set(widths)) != len(widths):
        raise ValueError(f"widths must be distinct, got {widths}")
    return widths


def fan_ins(module):
    """Fan-ins of the weight layers of ``module``, in registration order.

    A module with a ``fan_ins()`` method (e.g. :class:`~cepaper.models.bottleneck.BottleneckDraws`)
    reports its own; a :class:`~cepaper.models.mlp.CollegialMLP` gives ``(n_0, n_1, ..., n_L)``;
    otherwise every ``nn.Linear`` (``in_features``) and ``nn.Conv1d/2d/3d`` (``in_channels / groups``
    times the kernel area) counts, the fan-in of a weight ``w`` being ``w[0].numel()``.

    Returns:
        tuple of ints, one per weight layer.
    """
    if callable(getattr(module, "fan_ins", None)):
        return tuple(int(f) for f in module.fan_ins())
    if isinstance(module, CollegialMLP):
        return (module.n_in,) + tuple(module.widths)
    fans = []
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            fans.append(layer.in_features)
        elif isinstance(layer, nn.modules.conv._ConvNd):
            fans.append(layer.in_channels // layer.groups * math.prod(layer.kernel_size))
    if not fans:
        raise ValueError(
            f"module {type(module).__name__} has no weight layers (nn.Linear or nn.Conv*) "
            f"to read fan-ins from; give it a fan_ins() method"
        )
    return tuple(fans)


def bottleneck_term(n, n_in=256):
    """``s(n) = 1/n_in + 1/(9n) + 1/n``: the three convs of the Fig. 5 block, from
    :meth:`cepaper.search.BottleneckDesign.sum_inv_fan_in` (the design's own formula)."""
    return float(equations.BottleneckDesign(w_in=n_in).sum_inv_fan_in(positive_int("n", n)))


def mlp_term(n, depth=6, n_in=784):
    """``s(n) = (L - 1)/n``: the hidden layers of the ``L = depth`` weight-layer MLP, from
    :meth:`cepaper.search.MLPDesign.sum_inv_fan_in` (the design's own formula)."""
    return float(equations.MLPDesign(n_in, depth).sum_inv_fan_in(positive_int("n", n)))


def width_seed(seed, width):
    """The Monte Carlo seed of one width: a hash of ``(seed, width)`` (63 bits)."""
    return runs.derive_seed(int(seed), int(width), bits=64) & (2**63 - 1)


def mlp_inputs(n_in=784, count=2, corr=0.5, seed=0, dtype=torch.float32):
    """Inputs of the MLP, entries N(0, 1), pairwise correlation ``corr``: shape ``(count, n_in)``.

    ``x_k = sqrt(corr) g_0 + sqrt(1 - corr) g_k``. The NTK's law depends on the inputs only through
    their Gram matrix ``x x^T / n_in`` (the first layer is rotation invariant), not on ``n_in`` itself.
    """
    n_in, count = positive_int("n_in", n_in), positive_int("count", count)
    if not 0.0 <= float(corr) <= 1.0:
        raise ValueError(f"corr must be in [0, 1], got {corr!r}")
    z = torch.randn(count + 1, n_in, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (math.sqrt(corr) * z[:1] + math.sqrt(1.0 - corr) * z[1:]).to(dtype)


def mlp_chunk(n, depth=6, n_in=784, count=2):
    """Draws per Monte Carlo chunk of the MLP sampler (weights and activations within ``CHUNK_FLOATS``)."""
    per = n * n_in + (depth - 2) * n * n + n + 4 * depth * count * n
    return max(1, CHUNK_FLOATS // per)


def _sweep_key(settings):
    """Checkpoint folder name: a hash of the settings and of the code that computes the samples."""
    return runs.source_key(settings, (__name__,))  # and all it imports: the models, the NTK, Monte Carlo


def _round32(a):
    """Samples rounded to float32 precision (9 significant digits), as stored in checkpoints."""
    return np.array([float(f"{v:.9g}") for v in np.asarray(a, dtype=np.float64).ravel()]).reshape(np.shape(a))


def ntk_sweep(
    sampler, widths, trials, seed=0, chunk=None, device="cpu", checkpoint=None, settings=None, progress=False, threads=1
):
    """Monte Carlo NTK matrices of ``trials`` independent draws at every width (Algorithm 1, lines 1-5).

    Args:
        sampler: ``width -> sample``, where ``sample(t, generator)`` returns ``(t, N, N)`` NTKs of ``t``
            fresh draws (e.g. :func:`cepaper.montecarlo.mlp_ntk_sampler`,
            :func:`cepaper.models.bottleneck.bottleneck_ntk_sampler`).
        widths: the widths; trials: draws per width ``T >= 2``.
        seed: the sweep's seed; width ``n`` draws with :func:`width_seed` ``(seed, n)``.
        chunk: ``width -> draws per chunk`` (default 256); it must not depend on the device.
        checkpoint: a folder, or ``None``. Each finished width is written there atomically as
            ``<key>/n<width>.json`` (``key`` hashes ``settings``, ``trials``, ``seed`` and the code);
            widths already there are loaded, not recomputed, so an interrupted sweep resumes.
        settings: JSON-able description of the sampler (inputs, read-out, ...) for the key.
        progress: a ``tqdm`` bar over widths.
        threads: CPU intra-op threads while sampling (``None``: torch's setting). The default 1 is
            fastest here: the Monte Carlo is many small kernels, and waking a second thread for each
            costs more than it saves (several times more on a CPU shared with other processes).
    Returns:
        dict ``{width: float64 array (T, N, N)}`` (float32 precision: every sample is rounded to 9
        significant digits, whether computed now or loaded, so resuming changes nothing).
    """
    from cepaper import montecarlo

    widths = check_widths(widths)
    trials = positive_int("trials", trials)
    if trials < 2:
        raise ValueError(f"trials must be >= 2 (a second moment needs two draws), got {trials}")
    folder = None
    if checkpoint is not None:
        key = _sweep_key({"settings": settings, "trials": trials, "seed": int(seed)})
        folder = Path(checkpoint) / key
    out = {}
    bar = widths
    if progress:
        from tqdm import tqdm

        bar = tqdm(widths, desc="alpha sweep", unit="width")
    for n in bar:
        path = None if folder is None else folder / f"n{n:04d}.json"
        if path is not None and path.exists():
            rec = json.loads(path.read_text())
            out[n] = np.asarray(rec["samples"], dtype=np.float64)
            continue
        size = 256 if chunk is None else chunk(n)
        k = montecarlo.mc_samples(
            sampler(n),
            trials,
            chunk=size,
            seed=width_seed(seed, n),
            device=device,
            threads=threads if torch.device(device).type == "cpu" else None,
        )
        k = _round32(k.detach().cpu().double().numpy())
        if path is not None:
            files.write_atomic(
                path, json.dumps({"width": n, "trials": trials, "settings": settings, "samples": k.tolist()}) + "\n"
            )
        out[n] = k
    return out


def _bottleneck_setup(o):
    from cepaper.models import bottleneck

    x = bottleneck.block_inputs(o["n_in"], o["spatial"], 2, o["corr"], o["input"], o["input_seed"])
    v = ntk.readout_vector(o["readout"], (o["n_in"], o["spatial"], o["spatial"]), o["input_seed"])
    sampler = partial(bottleneck.bottleneck_ntk_sampler, x=x, readout=v, n_in=o["n_in"], post_relu=o["post_relu"])
    chunk = lambda n: max(1, CHUNK_FLOATS // bottleneck.bottleneck_floats_per_draw(n, o["n_in"], o["spatial"], 2))
    return sampler, chunk, partial(bottleneck_term, n_in=o["n_in"])


def _mlp_setup(o):
    from cepaper import montecarlo

    x = mlp_inputs(o["n_in"], 2, o["corr"], o["input_seed"])
    sampler = lambda n: montecarlo.mlp_ntk_sampler(x, widths=(n,) * (o["depth"] - 1))
    return (
        sampler,
        partial(mlp_chunk, depth=o["depth"], n_in=o["n_in"]),
        partial(mlp_term, depth=o["depth"], n_in=o["n_in"]),
    )


DEFAULTS = {
    "bottleneck": dict(
        n_in=256, spatial=3, readout="center", post_relu=False, input="gaussian", corr=0.5, input_seed=0
    ),
    "mlp": dict(n_in=784, depth=6, corr=0.5, input_seed=0),
}


def module_options(module, **options):
    """The sampler options of ``module`` (``DEFAULTS`` overridden by ``options``), checked."""
    choice("module", module, MODULES)
    unknown = sorted(set(options) - set(DEFAULTS[module]))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for module {module}; allowed: {', '.join(DEFAULTS[module])}"
        )
    o = {**DEFAULTS[module], **{k: v for k, v in options.items() if v is not None}}
    positive_int("n_in", o["n_in"])
    if module == "bottleneck":
        positive_int("spatial", o["spatial"])
    else:
        positive_int("depth", o["depth"])
        if o["depth"] < 2:
            raise ValueError(f"depth must be >= 2 weight layers, got {o['depth']}")
    return o


def module_sweep(
    module="bottleneck",
    widths=None,
    trials=2000,
    seed=0,
    device="cpu",
    checkpoint=None,
    progress=False,
    threads=1,
    **options,
):
    """Algorithm 1, lines 1-5, for a built-in module: NTK samples at every width.

    Args:
        module: ``"bottleneck"`` (Fig. 5, :mod:`cepaper.models.bottleneck`) or ``"mlp"`` (Eq. 3).
        widths: widths ``n`` (default :func:`log_grid` ``(1, 256, 16)``); trials: draws per width.
        seed: Monte Carlo seed (the inputs use ``input_seed``: they are part of the function).
        device: torch device of the Monte Carlo; checkpoint: folder for a resumable sweep.
        progress: a ``tqdm`` bar over widths; threads: CPU threads (see :func:`ntk_sweep`).
        options: the module's choices (``DEFAULTS``): bottleneck ``n_in``, ``spatial`` (H = W),
            ``readout`` (``"mean"``, ``"center"``, ``"random"``), ``post_relu``, ``input``
            (``"gaussian"``, ``"constant"``), ``corr`` (of x1 and x2), ``input_seed``; mlp ``n_in``,
            ``depth`` (weight layers L; ``L - 1`` hidden layers of width n), ``corr``, ``input_seed``.
    Returns:
        dict: ``module``, ``options``, ``widths``, ``terms`` (``s(n)`` of each width), ``trials``,
        ``seed``, ``device``, ``seconds``, and ``samples`` ``{n: array (T, 2, 2)}`` (NTK on x1, x2).
    """
    o = module_options(module, **options)
    widths = tuple(sorted(check_widths(log_grid() if widths is None else widths)))
    sampler, chunk, term = (_bottleneck_setup if module == "bottleneck" else _mlp_setup)(o)
    start = time.perf_counter()
    samples = ntk_sweep(
        sampler,
        widths,
        trials,
        seed,
        chunk,
        device,
        checkpoint,
        settings={"module": module, **o},
        progress=progress,
        threads=threads,
    )
    return {
        "module": module,
        "options": o,
        "widths": list(widths),
        "terms": [term(n) for n in widths],
        "trials": int(trials),
        "seed": int(seed),
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 3),
        "samples": samples,
    }


def custom_sweep(
    make,
    x,
    widths,
    trials=2000,
    seed=0,
    layers="all",
    device="cpu",
    checkpoint=None,
    name=None,
    progress=False,
    threads=1,
):
    """Algorithm 1, lines 1-5, for any scalar-output torch module of width ``n`` (a user's own block).

    Each draw is a fresh ``make(n, generator)`` whose NTK on ``x`` comes from
    :func:`cepaper.ntk.empirical_ntk` (one ``torch.func`` Jacobian per draw: general, not fast). The
    fan-ins are read from the layers of ``make(n, ...)`` by :func:`fan_ins` (grouped convs included).

    Args:
        make: ``(n, generator) -> nn.Module`` mapping ``(N, ...)`` to ``(N,)`` or ``(N, 1)``, its weights
            drawn from ``generator`` (a ``torch.Generator`` on ``device``).
        x: inputs ``(N, ...)``, ``N >= 2`` for the off-diagonal entry (the NTK is taken on all pairs).
        widths, trials, seed, device, checkpoint, progress, threads: as :func:`module_sweep`.
        layers: which fan-ins enter ``s(n)``: ``"all"`` or ``"hidden"`` (all but the first layer).
        name: a label for the checkpoint key (required with ``checkpoint``: the code of ``make``
            is not hashed, so give each distinct module its own name).
    Returns:
        dict as :func:`module_sweep`, ``module = name or "custom"``, ``options = {"layers": layers}``.
    """
    from cepaper import montecarlo

    widths = check_widths(widths)
    if checkpoint is not None and not name:
        raise ValueError("a checkpointed custom sweep needs a name that identifies the module")
    if not torch.is_tensor(x) or x.ndim < 2:
        raise ValueError(f"x must be a tensor of inputs (N, ...), got {getattr(x, 'shape', type(x).__name__)}")
    terms = []
    for n in widths:
        probe = make(n, torch.Generator(device=device).manual_seed(0))
        terms.append(sum_inv_fan_in(fan_ins(probe), layers))
        if not any(p.requires_grad for p in probe.parameters()):
            raise ValueError(f"module of width {n} has no trainable weights: its NTK is zero")
        with torch.no_grad():
            out = probe(x.to(device))
        if not torch.is_tensor(out) or tuple(out.shape) not in ((len(x),), (len(x), 1)):
            raise ValueError(
                f"module of width {n} must output one scalar per input, shape ({len(x)},) or "
                f"({len(x)}, 1); got {tuple(getattr(out, 'shape', ())) or type(out).__name__}"
            )
    sampler = lambda n: montecarlo.module_ntk_sampler(lambda g: make(n, g), x.to(device))
    start = time.perf_counter()
    samples = ntk_sweep(
        sampler,
        widths,
        trials,
        seed,
        lambda n: trials,
        device,
        checkpoint,
        settings={"module": name, "layers": layers, "x": x.detach().cpu().double().sum().item()},
        progress=progress,
        threads=threads,
    )
    return {
        "module": name or "custom",
        "options": {"layers": layers},
        "widths": list(widths),
        "terms": terms,
        "trials": int(trials),
        "seed": int(seed),
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 3),
        "samples": samples,
    }
