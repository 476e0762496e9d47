"""ResNeXt models of Sec. 4.2: CIFAR ResNeXt-29/38 and torchvision's ImageNet ResNeXt-50/101.

A ResNeXt ``C x d`` is a collegial ensemble at the block level (Sec. 4.2): each bottleneck holds
``C`` paths of width ``d`` as one grouped 3x3 conv (Fig. 5). The CIFAR models follow Xie et al.'s
reference implementation (stem 3x3 conv to 64 + BN, stages of three bottlenecks, stride on the
grouped 3x3, projection shortcuts where the shape changes, no conv biases); the ImageNet models are
torchvision's ``ResNet(Bottleneck, layers, groups=C, width_per_group=d)``.

Initialization. The CIFAR-style models (ResNeXt-29 for CIFAR and ImageNet32x32, ResNeXt-38 for
ImageNet64x64) are initialized as the authors' code initializes its ``CifarResNeXt`` and
``SmallImageNetResNeXt`` (:func:`he_init`): every conv and the classifier He-normal with the fan-in,
``W ~ N(0, 2 / fan_in)``, BatchNorm ``gamma = 1``, ``beta = 0``, every bias 0 (PyTorch's default
would give the convs 1/sqrt(6) ~ 0.41 of that scale). The paper states no initialization for
ResNeXt-50/101; they keep torchvision's (He-normal convs with the *fan-out*, BatchNorm 1 and 0,
PyTorch's default classifier), although the authors' own ImageNet ResNeXt uses the fan-in init above.

Each module has a static ``complexity(cx, ...)`` (pycls style) that counts its parameters and
multiply-adds without building it; see :mod:`cepaper.complexity`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from cepaper import complexity as _cx
from cepaper._checks import choice, positive_int


def he_init(module):
    """Initialize ``module`` in place as the authors' code does (returns it): every ``Conv2d`` and
    ``Linear`` weight ``N(0, 2 / fan_in)`` (``kaiming_normal_``, mode ``fan_in``; a grouped conv's fan-in
    is ``in_channels / groups * kh * kw``), every bias 0, BatchNorm ``gamma = 1``, ``beta = 0``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


class ResNeXtBottleneck(nn.Module):
    """Fig. 5 block ``w_in -> w_out`` with ``groups`` paths: 1x1, grouped 3x3 (stride), 1x1, each + BN.

    Input ``(N, w_in, H, W)``, output ``(N, w_out, H / stride, W / stride)``. Built alone it has
    PyTorch's default init; :class:`ResNeXtCifar` applies :func:`he_init` to all of its blocks.
    """

    complexity = staticmethod(_cx.bottleneck_cx)

    def __init__(self, w_in, w_out, w_b, groups=1, stride=1):
        super().__init__()
        self.conv_reduce = nn.Conv2d(w_in, w_b, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(w_b)
        self.conv_conv = nn.Conv2d(w_b, w_b, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(w_b)
        self.conv_expand = nn.Conv2d(w_b, w_out, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(w_out)
        self.shortcut = nn.Sequential()
        if w_in != w_out or stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(w_in, w_out, 1, stride=stride, bias=False), nn.BatchNorm2d(w_out))

    def forward(self, x):
        y = torch.relu(self.bn_reduce(self.conv_reduce(x)))
        y = torch.relu(self.bn(self.conv_conv(y)))
        y = self.bn_expand(self.conv_expand(y))
        return torch.relu(y + self.shortcut(x))


class ResNeXtCifar(nn.Module):
    """CIFAR-style ResNeXt ``groups x width_per_group d``: ResNeXt-29 (``stages=(256, 512, 1024)``)
    or ResNeXt-38 (``(256, 512, 1024, 2048)``, for ImageNet64). Input ``(N, 3, H, W)``, output
    ``(N, classes)``. Bottleneck width ``groups * width_per_group * out / stages[0]``; other
    ``stages``/``depth`` (blocks per stage) give scaled-down variants. Initialized by :func:`he_init`.
    ResNeXt-29 has 29 weight layers: the stem conv, 3 stages x 3 blocks x 3 convs, the classifier.
    """

    complexity = staticmethod(_cx.resnext_cifar_cx)

    def __init__(self, groups, width_per_group, stages=_cx.CIFAR_STAGES["resnext29"], depth=3, classes=10):
        super().__init__()
        groups, d = positive_int("groups", groups), positive_int("width_per_group", width_per_group)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, w_in = [], 64
        for s, w_out in enumerate(stages):
            for b in range(positive_int("depth", depth)):
                blocks.append(
                    ResNeXtBottleneck(
                        w_in, w_out, groups * d * (w_out // stages[0]), groups, stride=2 if (s > 0 and b == 0) else 1
                    )
                )
                w_in = w_out
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(w_in, positive_int("classes", classes))
        he_init(self)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.classifier(x.mean((2, 3)))


def resnext(
    arch: str, config: str, classes: int | None = None, stages: Sequence[int] | None = None, depth: int | None = None
) -> nn.Module:
    """Build ``arch`` (``resnext29``, ``resnext38``, ``resnext50``, ``resnext101``) at ``"CxDd"``;
    the CIFAR archs also take ``stages`` and ``depth`` (blocks per stage) for scaled-down variants."""
    choice("arch", arch, (*_cx.CIFAR_STAGES, *_cx.IMAGENET_LAYERS))
    c, d = _cx.parse_config(config)
    if arch in _cx.CIFAR_STAGES:
        classes = _cx.ARCHS[arch]["classes"] if classes is None else classes
        stages = _cx.CIFAR_STAGES[arch] if stages is None else tuple(stages)
        return ResNeXtCifar(c, d, stages, 3 if depth is None else depth, classes=classes)
    if stages is not None or depth is not None:
        raise ValueError(
            f"stages and depth only apply to the CIFAR archs ({', '.join(_cx.CIFAR_STAGES)}), not {arch!r}"
        )
    classes = 1000 if classes is None else positive_int("classes", classes)
    return ResNet(Bottleneck, list(_cx.IMAGENET_LAYERS[arch]), num_classes=classes, groups=c, width_per_group=d)
