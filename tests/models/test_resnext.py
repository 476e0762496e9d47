"""Tests of the ResNeXts' initialization (cepaper.models.resnext): He-normal with the fan-in, as
the authors' code; BatchNorm gamma = 1, beta = 0; biases 0; ImageNet models keep torchvision's."""

from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn

from cepaper.models.resnext import ResNeXtBottleneck, he_init, resnext


def z_for(checks, false_alarm=1e-6):
    """Two-sided normal quantile that keeps ``checks`` checks together under ``false_alarm`` (Bonferroni)."""
    return NormalDist().inv_cdf(1 - false_alarm / (2 * checks))


def weight_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def fan_in(m):
    """Inputs feeding one output unit, from the layer's own attributes (not torch's init helpers)."""
    if isinstance(m, nn.Linear):
        return m.in_features
    return m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]


@pytest.mark.parametrize("config", ["1x128d", "37x10d"])
def test_resnext29_is_he_normal_with_the_fan_in(config):
    """Each layer's N weights against N(0, 2 / fan_in): the sample std within z / sqrt(2N) of
    sqrt(2 / fan_in) (relative), the mean within z sigma / sqrt(N), the sample kurtosis within
    z sqrt(24 / N) of a Gaussian's 3 (a uniform init of the same std has 1.8); z makes a false
    alarm anywhere in the model, over all three checks, less likely than 1e-6 (Bonferroni)."""
    torch.manual_seed(0)
    model = resnext("resnext29", config)
    layers = weight_layers(model)
    assert len(layers) == 1 + 9 * 3 + 3 + 1  # stem, 9 bottlenecks of 3 convs, 3 projections, classifier
    z = z_for(3 * len(layers))
    for m in layers:
        w = m.weight.detach().double().numpy().ravel()
        n, sigma = w.size, np.sqrt(2.0 / fan_in(m))
        assert abs(w.std() / sigma - 1) < z / np.sqrt(2 * n), (m, w.std(), sigma)
        assert abs(w.mean()) < z * sigma / np.sqrt(n), m
        kurtosis = np.mean((w - w.mean()) ** 4) / w.var() ** 2
        assert abs(kurtosis - 3) < z * np.sqrt(24 / n), (m, kurtosis)
    assert torch.count_nonzero(model.classifier.bias) == 0
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == len(layers) - 1
    for bn in bns:
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_he_init_is_not_torchs_default():
    """PyTorch's default conv init (kaiming_uniform_, a = sqrt 5) has std 1/sqrt(3 fan_in): 1/sqrt 6 of He's."""
    torch.manual_seed(0)
    block = ResNeXtBottleneck(256, 256, 128)
    before = block.conv_reduce.weight.std().item() * np.sqrt(256 / 2)
    he_init(block)
    after = block.conv_reduce.weight.std().item() * np.sqrt(256 / 2)
    assert before == pytest.approx(1 / np.sqrt(6), rel=0.02) and after == pytest.approx(1.0, rel=0.02)


def test_resnext38_and_scaled_down_are_he_initialized():
    torch.manual_seed(1)
    for model in (resnext("resnext38", "2x8d", 1000), resnext("resnext29", "2x4d", 10, stages=(32,), depth=1)):
        layers = weight_layers(model)
        for m in layers:
            w = m.weight.detach().double()
            assert w.std().item() == pytest.approx(
                np.sqrt(2 / fan_in(m)), rel=z_for(len(layers)) / np.sqrt(2 * w.numel())
            )


def test_imagenet_resnext_keeps_torchvisions_init():
    """ResNeXt-50: torchvision's convs are He-normal with the fan-out (out_channels * kh * kw)."""
    torch.manual_seed(0)
    model = resnext("resnext50", "1x64d", 1000)
    conv = model.layer1[0].conv3  # 64 -> 256, 1x1: fan-in 64, fan-out 256; 16,384 weights
    assert conv.weight.std().item() == pytest.approx(np.sqrt(2 / 256), rel=z_for(1) / np.sqrt(2 * conv.weight.numel()))


def test_resnext_names_the_archs_it_builds():
    with pytest.raises(ValueError, match="arch must be one of resnext29, resnext38, resnext50, resnext101, got 'mlp'"):
        resnext("mlp", "1x4d")
