"""Exact parameter and multiply-add counts of the paper's architectures, without building them.

pycls-style counters: a complexity record ``cx = {"h", "w", "params", "macs", "acts", "adds"}`` (the spatial size
of the current feature map and the running totals) is passed through one small pure function per
layer, each returning the updated record. Networks are composed from layers exactly as the torch
models of :mod:`cepaper.models` are, and the tests check every count against ``sum(p.numel())``
of the built model and against a forward-hook count of the multiply-adds.

What is counted:

* ``params``: trainable parameters, i.e. conv/linear weights and biases and BatchNorm weight and
  bias (``2 * w`` per BN of ``w`` channels); BN running statistics are buffers, not parameters.
* ``acts``: output elements of every conv and linear layer (pycls's activations); each conv here
  is followed by a BN, so this is also the number of BN outputs. ``adds``: residual-sum elements.
* ``macs``: multiply-accumulates of the conv and linear weights at the given input resolution:
  ``h_out * w_out * k**2 * (w_in / groups) * w_out`` for a conv, ``w_in * w_out`` for a linear
  layer (one example). Bias additions, BN, ReLU, pooling and residual sums are not counted.
  ``flops = 2 * macs`` (:func:`flops`). Conventions that add element-wise operations (``acts``,
  ``adds``) are in :func:`cepaper.search.flops_of`.

Architectures (``C`` groups of width ``d``, written ``CxDd``, e.g. ``32x4d``):

* :func:`mlp`: the fully connected networks of Eq. 3 / Sec. 4.1 / Fig. 3;
* :func:`bottleneck`: the ResNet/ResNeXt bottleneck block of Fig. 5;
* :func:`resnext_cifar`: ResNeXt-29 (CIFAR, ImageNet32) and ResNeXt-38 (ImageNet64);
* :func:`resnext_imagenet`: torchvision's ``ResNet(Bottleneck, layers, groups, width_per_group)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cepaper._checks import choice, positive_int

#: Blocks per stage of the ImageNet ResNeXts (torchvision ``layers``).
IMAGENET_LAYERS = {"resnext50": (3, 4, 6, 3), "resnext101": (3, 4, 23, 3)}
#: Stage outputs of the CIFAR-style ResNeXts: ResNeXt-29 (3 stages), ResNeXt-38 (a 4th stage).
CIFAR_STAGES = {"resnext29": (256, 512, 1024), "resnext38": (256, 512, 1024, 2048)}
#: Architectures known to :func:`complexity`, with their default classes and input resolution.
ARCHS = {
    "mlp": dict(),
    "bottleneck": dict(resolution=32),
    "resnext29": dict(classes=10, resolution=32),
    "resnext38": dict(classes=1000, resolution=64),
    "resnext50": dict(classes=1000, resolution=224),
    "resnext101": dict(classes=1000, resolution=224),
}


# ---------------------------------------------------------------------------------------------
# Layers (pycls: conv2d_cx, norm2d_cx, ...): each takes a record and returns the updated record.
# ---------------------------------------------------------------------------------------------


def cx_init(resolution=1):
    """A fresh record for an input of ``resolution x resolution`` (1 for vectors)."""
    r = positive_int("resolution", resolution)
    return {"h": r, "w": r, "params": 0, "macs": 0, "acts": 0, "adds": 0}


def _out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def conv2d_cx(cx, w_in, w_out, k, stride=1, groups=1, bias=False, padding=None):
    """A ``k x k`` conv ``w_in -> w_out`` (padding ``(k - 1) // 2`` unless given)."""
    if w_in % groups or w_out % groups:
        raise ValueError(f"groups must divide both channel counts, got {groups} for {w_in} -> {w_out}")
    padding = (k - 1) // 2 if padding is None else padding
    h, w = _out_size(cx["h"], k, stride, padding), _out_size(cx["w"], k, stride, padding)
    weights = k * k * (w_in // groups) * w_out
    return {
        **cx,
        "h": h,
        "w": w,
        "params": cx["params"] + weights + (w_out if bias else 0),
        "macs": cx["macs"] + weights * h * w,
        "acts": cx["acts"] + w_out * h * w,
    }


def norm2d_cx(cx, w_in):
    """BatchNorm of ``w_in`` channels: weight and bias are parameters; no multiply-adds counted."""
    return {**cx, "params": cx["params"] + 2 * w_in}


def pool2d_cx(cx, k, stride, padding=0):
    """A ``k x k`` max pool: changes the spatial size only."""
    return {**cx, "h": _out_size(cx["h"], k, stride, padding), "w": _out_size(cx["w"], k, stride, padding)}


def gap2d_cx(cx):
    """Global average pooling to ``1 x 1``."""
    return {**cx, "h": 1, "w": 1}


def linear_cx(cx, w_in, w_out, bias=True):
    """A linear layer ``w_in -> w_out`` applied at every position of the current ``h x w`` map."""
    return {
        **cx,
        "params": cx["params"] + w_in * w_out + (w_out if bias else 0),
        "macs": cx["macs"] + w_in * w_out * cx["h"] * cx["w"],
        "acts": cx["acts"] + w_out * cx["h"] * cx["w"],
    }


# ---------------------------------------------------------------------------------------------
# Blocks and networks
# ---------------------------------------------------------------------------------------------


def mlp_cx(cx, inputs, width, depth, outputs=1, bias=False):
    """Fully connected net of Eq. 3: ``depth`` weight layers ``theta_1..theta_L`` (L - 1 hidden).

    Shapes: ``inputs -> width -> ... -> width -> outputs`` (``depth - 1`` hidden layers of
    ``width``); e.g. Fig. 3's baseline is ``depth = 6``, ``width = 500``, ``inputs = 748``.
    """
    inputs, width = positive_int("inputs", inputs), positive_int("width", width)
    depth, outputs = positive_int("depth", depth), positive_int("outputs", outputs)
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (an input and an output layer), got {depth}")
    fans = [inputs] + [width] * (depth - 1)
    outs = [width] * (depth - 1) + [outputs]
    for w_in, w_out in zip(fans, outs):
        cx = linear_cx(cx, w_in, w_out, bias=bias)
    return cx


def bottleneck_cx(cx, w_in, w_out, w_b, groups=1, stride=1, bn=True, shortcut="auto"):
    """ResNeXt bottleneck (Fig. 5): 1x1 ``w_in -> w_b``, grouped 3x3 ``w_b -> w_b`` (stride),
    1x1 ``w_b -> w_out``, each followed by BN; a projection shortcut (1x1 conv with the stride + BN)
    when ``shortcut="auto"`` and the shape changes (``w_in != w_out`` or ``stride != 1``), always
    with ``shortcut=True``, never with ``shortcut=False``. ``bn=False`` drops the BNs (a bare block).
    """
    for name, v in (("w_in", w_in), ("w_out", w_out), ("w_b", w_b), ("groups", groups), ("stride", stride)):
        positive_int(name, v)
    if w_b % groups:
        raise ValueError(f"groups must divide the bottleneck width w_b, got groups={groups}, w_b={w_b}")
    choice("shortcut", shortcut, ("auto", True, False))
    x = cx
    cx = conv2d_cx(cx, w_in, w_b, 1)
    cx = norm2d_cx(cx, w_b) if bn else cx
    cx = conv2d_cx(cx, w_b, w_b, 3, stride=stride, groups=groups)
    cx = norm2d_cx(cx, w_b) if bn else cx
    cx = conv2d_cx(cx, w_b, w_out, 1)
    cx = norm2d_cx(cx, w_out) if bn else cx
    if shortcut is True or (shortcut == "auto" and (w_in != w_out or stride != 1)):
        proj = conv2d_cx({**x, "params": 0, "macs": 0, "acts": 0}, w_in, w_out, 1, stride=stride)
        proj = norm2d_cx(proj, w_out) if bn else proj
        cx = {**cx, **{k: cx[k] + proj[k] for k in ("params", "macs", "acts")}}
    return {**cx, "adds": cx["adds"] + w_out * cx["h"] * cx["w"]}


def resnext_cifar_cx(cx, groups, width_per_group, stages=CIFAR_STAGES["resnext29"], depth=3, classes=10):
    """CIFAR ResNeXt of Xie et al. (reference implementation): 3x3 stem conv to 64 + BN; stages of
    ``depth`` bottlenecks with outputs ``stages`` (stride 1, then 2), bottleneck width
    ``groups * width_per_group * out / stages[0]`` (doubling with the stage outputs); global average
    pool; linear classifier with bias. ResNeXt-29 has stages (256, 512, 1024); ResNeXt-38 adds a 4th
    stage of 2048. Other ``stages``/``depth`` give scaled-down variants (the quick CIFAR runs).
    """
    groups, d = positive_int("groups", groups), positive_int("width_per_group", width_per_group)
    depth, classes = positive_int("depth", depth), positive_int("classes", classes)
    cx = conv2d_cx(cx, 3, 64, 3)
    cx = norm2d_cx(cx, 64)
    w_in = 64
    stages = tuple(positive_int("stages", w) for w in stages)
    if not stages:
        raise ValueError("stages must name at least one stage output width, got ()")
    for s, w_out in enumerate(stages):
        if w_out % stages[0]:
            raise ValueError(f"stage outputs must be multiples of the first, {stages[0]}; got {w_out}")
        w_b = groups * d * (w_out // stages[0])
        for b in range(depth):
            cx = bottleneck_cx(cx, w_in, w_out, w_b, groups, stride=2 if (s > 0 and b == 0) else 1)
            w_in = w_out
    cx = gap2d_cx(cx)
    return linear_cx(cx, w_in, classes)


def resnext_imagenet_cx(cx, layers, groups, width_per_group, classes=1000):
    """torchvision ``ResNet(Bottleneck, layers, num_classes=classes, groups, width_per_group)``:
    7x7/2 stem conv + BN, 3x3/2 max pool, four stages (outputs 256..2048, bottleneck width
    ``groups * int(planes * width_per_group / 64)``, stride on the 3x3), average pool, linear.
    """
    groups, d = positive_int("groups", groups), positive_int("width_per_group", width_per_group)
    classes = positive_int("classes", classes)
    layers = tuple(positive_int("layers", b) for b in layers)
    cx = conv2d_cx(cx, 3, 64, 7, stride=2, padding=3)
    cx = norm2d_cx(cx, 64)
    cx = pool2d_cx(cx, 3, 2, padding=1)
    w_in = 64
    for s, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        w_b, w_out = int(planes * (d / 64.0)) * groups, planes * 4
        for b in range(blocks):
            cx = bottleneck_cx(cx, w_in, w_out, w_b, groups, stride=2 if (s > 0 and b == 0) else 1)
            w_in = w_out
    cx = gap2d_cx(cx)
    return linear_cx(cx, w_in, classes)


# ---------------------------------------------------------------------------------------------
# Public counts: dicts with params, macs, flops and the resolved configuration.
# ---------------------------------------------------------------------------------------------


def parse_config(config):
    """``"32x4d"`` (also ``"32×4d"``, ``"32x4"``) -> ``(groups, width_per_group) = (32, 4)``."""
    if not isinstance(config, str):
        raise ValueError(f"config must be a string CxDd such as '32x4d', got {config!r}")
    match = re.fullmatch(r"\s*(\d+)\s*[x×X*]\s*(\d+)\s*d?\s*", config)
    if not match:
        raise ValueError(f"config must look like CxDd (groups x width per group), e.g. '32x4d'; got {config!r}")
    c, d = int(match.group(1)), int(match.group(2))
    if c < 1 or d < 1:
        raise ValueError(f"config must have C >= 1 and d >= 1, got {config!r}")
    return c, d


def format_config(groups, width_per_group):
    """``(32, 4)`` -> ``"32x4d"``."""
    return f"{groups}x{width_per_group}d"


def flops(macs):
    """FLOPs counted as two per multiply-add."""
    return 2 * macs


def _result(cx, **config):
    return {
        **config,
        "params": cx["params"],
        "macs": cx["macs"],
        "flops": flops(cx["macs"]),
        "acts": cx["acts"],
        "adds": cx["adds"],
    }


def mlp(inputs, width, depth, outputs=1, bias=False):
    """Params and macs (one example) of the fully connected net of :func:`mlp_cx`."""
    cx = mlp_cx(cx_init(1), inputs, width, depth, outputs, bias)
    return _result(cx, arch="mlp", inputs=inputs, width=width, depth=depth, outputs=outputs, bias=bias)


def bottleneck(groups, width_per_group, w_in=256, w_out=256, stride=1, resolution=32, bn=True, shortcut="auto"):
    """Params and macs of one Fig. 5 block with ``groups`` paths of width ``width_per_group``."""
    groups, d = positive_int("groups", groups), positive_int("width_per_group", width_per_group)
    cx = bottleneck_cx(cx_init(resolution), w_in, w_out, groups * d, groups, stride, bn, shortcut)
    return _result(
        cx,
        arch="bottleneck",
        config=format_config(groups, d),
        groups=groups,
        width_per_group=d,
        w_in=w_in,
        w_out=w_out,
        stride=stride,
        resolution=resolution,
        bn=bn,
    )


def resnext_cifar(groups, width_per_group, arch="resnext29", classes=None, resolution=None, stages=None, depth=None):
    """Params and macs of ResNeXt-29 (``arch="resnext29"``) or ResNeXt-38 (``"resnext38"``);
    ``stages``/``depth`` (default: the arch's, 3 blocks per stage) give a scaled-down variant."""
    choice("arch", arch, tuple(CIFAR_STAGES))
    classes = ARCHS[arch]["classes"] if classes is None else classes
    resolution = ARCHS[arch]["resolution"] if resolution is None else resolution
    stages = CIFAR_STAGES[arch] if stages is None else tuple(stages)
    depth = 3 if depth is None else depth
    cx = resnext_cifar_cx(cx_init(resolution), groups, width_per_group, stages, depth, classes)
    return _result(
        cx,
        arch=arch,
        config=format_config(groups, width_per_group),
        groups=groups,
        width_per_group=width_per_group,
        classes=classes,
        resolution=resolution,
        **({} if (stages, depth) == (CIFAR_STAGES[arch], 3) else {"stages": list(stages), "depth": depth}),
    )


def resnext_imagenet(groups, width_per_group, arch="resnext50", classes=1000, resolution=224):
    """Params and macs of torchvision's ResNeXt-50/101 ``groups x width_per_group d``."""
    choice("arch", arch, tuple(IMAGENET_LAYERS))
    cx = resnext_imagenet_cx(cx_init(resolution), IMAGENET_LAYERS[arch], groups, width_per_group, classes)
    return _result(
        cx,
        arch=arch,
        config=format_config(groups, width_per_group),
        groups=groups,
        width_per_group=width_per_group,
        classes=classes,
        resolution=resolution,
    )


def complexity(
    arch: str,
    config: str | None = None,
    classes: int | None = None,
    resolution: int | None = None,
    stages: Sequence[int] | None = None,
    **mlp_args,
) -> dict:
    """Params, macs and flops of ``arch`` in ``ARCHS``.

    ``config`` is ``"CxDd"`` (or a ``(C, d)`` pair) for the convolutional archs; ``mlp`` takes
    ``inputs``, ``width``, ``depth`` (and ``outputs``, ``bias``) instead. ``classes`` and
    ``resolution`` default to the arch's dataset (``ARCHS``). The CIFAR archs also take ``stages``
    and ``depth`` (blocks per stage) for scaled-down variants. Returns a dict with ``params``,
    ``macs``, ``flops`` and the resolved configuration.
    """
    choice("arch", arch, tuple(ARCHS))
    if arch == "mlp":
        if classes is not None:
            mlp_args.setdefault("outputs", classes)
        return mlp(**mlp_args)
    if config is None:
        raise ValueError(f"config (CxDd, e.g. '32x4d') is required for arch {arch!r}")
    c, d = (
        parse_config(config)
        if isinstance(config, str)
        else (positive_int("groups", config[0]), positive_int("width_per_group", config[1]))
    )
    defaults = ARCHS[arch]
    classes = defaults.get("classes") if classes is None else positive_int("classes", classes)
    resolution = defaults["resolution"] if resolution is None else positive_int("resolution", resolution)
    if arch == "bottleneck":
        return bottleneck(c, d, resolution=resolution)
    if arch in CIFAR_STAGES:
        return resnext_cifar(c, d, arch, classes, resolution, stages, mlp_args.pop("depth", None))
    if stages is not None or mlp_args:
        raise ValueError(f"stages and depth only apply to the CIFAR archs ({', '.join(CIFAR_STAGES)}), not {arch!r}")
    return resnext_imagenet(c, d, arch, classes, resolution)
