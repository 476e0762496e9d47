"""Module factories: ``factory(m, n) -> nn.Module``, ``m`` members of width ``n``, from a file, a package
or a torchvision family; the checks that a factory builds what the design assumes; and the fan-ins of
a member's weight layers (Eq. 9's ``sum_l 1/fan-in_l``)."""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cepaper._checks import choice, positive_int

FAN_IN_LAYERS = ("all", "hidden")


#: The weight layers whose fan-ins enter Eq. 9 (transposed convs are not among them).
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_input_shape(input_shape):
    """``input_shape`` (one example's shape, without the batch) as a tuple of ints >= 1."""
    if isinstance(input_shape, (int, np.integer)):
        input_shape = (input_shape,)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(
            f"input_shape must be a tuple of ints >= 1 (one example, no batch), got {input_shape!r}"
        ) from None
    if not shape:
        raise ValueError("input_shape must hold at least one dimension, got ()")
    return tuple(positive_int("input_shape entry", s) for s in shape)


def _raised(e):
    """What a factory raised, in one line: ``SystemExit(3)``, ``RuntimeError: no GPU``."""
    if isinstance(e, SystemExit):
        return f"SystemExit({e.code!r}) (it called sys.exit or exit)"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def build(factory: Callable[[int, int], nn.Module], m: int, n: int) -> nn.Module:
    """``factory(m, n)``, checked: an ``nn.Module`` of ``m`` members of width ``n``."""
    if not callable(factory):
        raise ValueError(f"factory must be a callable (m, n) -> torch.nn.Module, got {type(factory).__name__}")
    m, n = positive_int("m", m), positive_int("n", n)
    try:
        module = factory(m, n)
    except (Exception, SystemExit) as e:  # the user's code: contained, named (Ctrl-C still stops)
        raise ValueError(f"factory: factory({m}, {n}) raised {_raised(e)}") from e
    if not isinstance(module, nn.Module):
        raise ValueError(f"factory: factory({m}, {n}) must return a torch.nn.Module, got {type(module).__name__}")
    return module


#: torchvision's Bottleneck ResNets by builder name: the plain ResNet of the same depth (whose builder
#: takes ``groups`` and ``width_per_group``) and the builder's own ``(groups, width_per_group)``.
TORCHVISION = {
    "resnet50": ("resnet50", (1, 64)),
    "resnet101": ("resnet101", (1, 64)),
    "resnet152": ("resnet152", (1, 64)),
    "resnext50_32x4d": ("resnet50", (32, 4)),
    "resnext101_32x8d": ("resnet101", (32, 8)),
    "resnext101_64x4d": ("resnet101", (64, 4)),
    "wide_resnet50_2": ("resnet50", (1, 128)),
    "wide_resnet101_2": ("resnet101", (1, 128)),
}


#: Blocks per stage (``layer1..layer4``) of the plain ResNets.
TORCHVISION_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}


class TorchvisionFactory:
    """``factory(m, n)``: torchvision's ResNet ``name`` with ``groups=m, width_per_group=n`` (``weights=None``).

    ``name`` is any key of :data:`TORCHVISION` (``resnet50``, ``resnext50_32x4d``, ``wide_resnet50_2``...):
    they differ only in ``(groups, width_per_group)``, so each names the family of its depth, and
    ``baseline`` is the builder's own ``(groups, width_per_group)`` (``resnext50_32x4d``: ``(32, 4)``).
    ``stage`` (1-4) builds only ``layer<stage>`` (torchvision's ``Bottleneck`` blocks, ``planes`` =
    ``64 * 2^(stage-1)``, its first block strided and projected as in ``ResNet._make_layer``); its input
    has ``in_channels`` channels (64 for stage 1, else ``128 * 2^(stage-1)``). Nothing is downloaded.
    """

    def __init__(self, name, stage=None, classes=1000):
        choice("torchvision model (a Bottleneck ResNet taking groups and width_per_group)", name, tuple(TORCHVISION))
        self.name, (self.builder, self.baseline) = name, TORCHVISION[name]
        self.stage = None if stage is None else choice("stage", int(stage), (1, 2, 3, 4))
        self.classes = positive_int("classes", classes)
        self.in_channels = 3 if stage is None else (64 if self.stage == 1 else 128 * 2 ** (self.stage - 1))

    def __repr__(self):
        return f"torchvision:{self.name}" + ("" if self.stage is None else f":layer{self.stage}")

    def __call__(self, m, n):
        import torchvision
        from torchvision.models.resnet import Bottleneck, conv1x1

        m, n = positive_int("groups", m), positive_int("width_per_group", n)
        if self.stage is None:
            return getattr(torchvision.models, self.builder)(
                weights=None, groups=m, width_per_group=n, num_classes=self.classes
            )
        planes, stride = 64 * 2 ** (self.stage - 1), 1 if self.stage == 1 else 2
        blocks = TORCHVISION_LAYERS[self.builder][self.stage - 1]
        inplanes, out = self.in_channels, planes * Bottleneck.expansion
        down = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
        layers = [Bottleneck(inplanes, planes, stride, down, groups=m, base_width=n)]
        layers += [Bottleneck(out, planes, groups=m, base_width=n) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def torchvision_factory(name, stage=None, classes=1000):
    """:class:`TorchvisionFactory` ``(name, stage, classes)``: a torchvision ResNet family as a factory."""
    return TorchvisionFactory(name, stage, classes)


def load_factory(spec: str) -> Callable[[int, int], nn.Module]:
    """The factory named by ``spec``: ``"path/to/file.py:func"``, ``"package.module:func"``, or
    ``"torchvision:NAME"`` / ``"torchvision:NAME:layerK"`` (:func:`torchvision_factory`, a whole
    network or its stage ``K``)."""
    if isinstance(spec, str) and spec.startswith("torchvision:"):
        name, colon, stage = spec[len("torchvision:") :].partition(":")
        if colon and not (stage.startswith("layer") and stage[5:] in ("1", "2", "3", "4")):
            raise ValueError(f"module: torchvision stage must be layer1..layer4, got {stage!r} in {spec!r}")
        try:
            return torchvision_factory(name, int(stage[5:]) if stage else None)
        except ValueError as e:
            raise ValueError(f"module: {e}") from None
    if not isinstance(spec, str) or spec.count(":") < 1 or not spec.rpartition(":")[2]:
        raise ValueError(f"module must be FILE.py:FUNC, package.module:FUNC or torchvision:NAME, got {spec!r}")
    where, _, name = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if path.is_dir():
            raise ValueError(f"module: {where} is a folder, not a file (give FILE.py:FUNC)")
        if not path.is_file():
            raise ValueError(f"module: file {where} does not exist (give FILE.py:FUNC)")
        if path.suffix != ".py":
            raise ValueError(f"module: {where} is not a Python file (its name must end in .py; give FILE.py:FUNC)")
        spec_ = importlib.util.spec_from_file_location(f"_cepaper_factory_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec_)
        try:
            spec_.loader.exec_module(mod)
        except (Exception, SystemExit) as e:  # a factory's file is the user's code: contained, named
            raise ValueError(f"module: importing {where} raised {_raised(e)}") from e
    else:
        try:
            mod = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"module: cannot import {where!r} ({e}); give FILE.py:FUNC or package.module:FUNC") from e
        except (Exception, SystemExit) as e:
            raise ValueError(f"module: importing {where} raised {_raised(e)}") from e
    factory = getattr(mod, name, None)
    if not callable(factory):
        raise ValueError(f"module: {where} has no function {name!r} (a factory (m, n) -> torch.nn.Module)")
    return factory


def member_fan_ins(module: nn.Module) -> list[int]:
    """Fan-ins of the weight layers (:data:`WEIGHT_LAYERS`) of ``module``, in registration order."""
    fans = []
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            fans.append(int(layer.in_features))
        elif isinstance(layer, WEIGHT_LAYERS):
            fans.append(int(layer.weight.shape[1] * math.prod(layer.kernel_size)))
    if not fans:
        raise ValueError(
            f"module: {type(module).__name__} has no weight layers (nn.Linear or nn.Conv1d/2d/3d) to read fan-ins from"
        )
    return tuple(fans)


def _leaf_types(module):
    from collections import Counter

    return Counter(type(m).__name__ for m in module.modules() if not list(m.children()))


def check_members(member, module, m, n):
    """That ``module = factory(m, n)`` is ``m`` members ``member = factory(1, n)``, differing in width only.

    Two forms pass. Stacked (grouped or block-diagonal layers): the same layers by name and type, and each
    parameter's shape equal to the member's (shared, e.g. an output norm) or ``m`` times it along exactly
    one dimension. Replicated (members as separate submodules): every leaf-layer type counted
    ``c_1 + (m - 1) q`` times, ``0 <= q <= c_1``. Either way the parameters are ``P(1) + (m - 1) p`` with
    ``0 < p <= P(1)``: ``p`` per member (Eq. 8's ``beta`` is affine in ``m``). Raises ``ValueError`` otherwise.
    """
    if m == 1:
        return
    what = f"factory: factory({m}, {n}) must be {m} members factory(1, {n}) differing only in width"
    shapes1 = {k: tuple(p.shape) for k, p in member.named_parameters()}
    shapes = {k: tuple(p.shape) for k, p in module.named_parameters()}
    if shapes.keys() == shapes1.keys():
        types1 = [(k, type(v).__name__) for k, v in member.named_modules()]
        types = [(k, type(v).__name__) for k, v in module.named_modules()]
        if types != types1:
            diff = next(
                ((a, b) for a, b in zip(types1, types) if a != b), (types1[len(types) :] or types[len(types1) :],)
            )
            raise ValueError(
                f"{what}, but their layers differ: {diff[0]} at m = 1 vs "
                f"{diff[1] if len(diff) > 1 else 'nothing'} at m = {m}"
            )
        for k, s1 in shapes1.items():
            sm = shapes[k]
            stacked = [d for d, (a, b) in enumerate(zip(s1, sm)) if a != b]
            ok = len(sm) == len(s1) and (not stacked or (len(stacked) == 1 and sm[stacked[0]] == m * s1[stacked[0]]))
            if not ok:
                raise ValueError(
                    f"{what}, but parameter {k} has shape {sm} at m = {m} and {s1} at m = 1: a member's "
                    f"parameter is either shared (same shape) or stacked m times along one dimension"
                )
    else:
        t1, tm = _leaf_types(member), _leaf_types(module)
        for t in sorted(set(t1) | set(tm)):
            q, r = divmod(tm[t] - t1[t], m - 1)
            if r or not 0 <= q <= t1[t]:
                raise ValueError(
                    f"{what}, but it has {tm[t]} {t} layer(s) and factory(1, {n}) {t1[t]}: neither "
                    f"shared nor one per member"
                )
    p1, pm = param_count(member), param_count(module)
    p, r = divmod(pm - p1, m - 1)
    if r or not 0 < p <= p1:
        per = f"{(pm - p1) / (m - 1):g}"
        raise ValueError(
            f"{what}, but its {pm} trainable parameters are not factory(1, {n})'s {p1} plus {m - 1} "
            f"more members of at most {p1} each (got {per} per added member)"
        )


def param_count(module):
    """Eq. 8's ``beta``: trainable parameters of ``module`` (every ``p`` with ``requires_grad``)."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


class ForwardError(ValueError):
    """A built module's forward raised on its example input: the input's shape (``input_shape``, without
    the batch) or its ``device`` is not what the module takes. ``raised`` is what it raised, in one line."""

    def __init__(self, module, x, raised):
        self.input_shape, self.device, self.raised = tuple(x.shape[1:]), str(x.device), raised
        super().__init__(
            f"factory: {type(module).__name__}'s forward on an input of shape {tuple(x.shape)} (a batch of "
            f"{len(x)}, input_shape {self.input_shape}) on device {self.device} raised {raised}; input_shape must "
            "be one example of what the module takes, without the batch, on a device it runs on"
        )


def run_forward(module, x):
    """``module(x)`` on an example input, checked: a tensor (:func:`tensor_output`); what the forward raises (the
    user's code) is a :class:`ForwardError`."""
    try:
        out = module(x)
    except (Exception, SystemExit) as e:  # the user's code: contained, named (Ctrl-C still stops)
        raise ForwardError(module, x, _raised(e)) from e
    return tensor_output(module, out)


def tensor_output(module, out):
    """``out``, the output of ``module``, if it is a tensor; else a ``ValueError`` naming the module."""
    if not torch.is_tensor(out):
        raise ValueError(f"module: {type(module).__name__} must return a tensor, got {type(out).__name__}")
    return out
