"""Counts of cepaper.complexity against the built torch models (params) and forward hooks (macs)."""

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

from cepaper import complexity as cx
from cepaper.models.mlp import CollegialMLP
from cepaper.models.resnext import ResNeXtBottleneck, ResNeXtCifar, resnext
from cepaper.montecarlo import intra_op_threads


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def hook_counts(model, x):
    """Multiply-adds of conv/linear weights, their output elements, and residual-sum elements."""
    counts = {"macs": 0, "acts": 0, "adds": 0}

    def layer(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            counts["macs"] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            counts["macs"] += out.numel() * mod.in_features
        counts["acts"] += out.numel()

    def block(mod, inp, out):
        counts["adds"] += out.numel()

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(layer))
        if isinstance(m, (ResNeXtBottleneck, TorchvisionBottleneck)):
            handles.append(m.register_forward_hook(block))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return counts


def meta(build):
    """Build a (large) model on the meta device: parameters have shapes but no storage."""
    with torch.device("meta"):
        return build()


# ---------------------------------------------------------------------------------------------
# Parameters against the built models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c,d", [(1, 4), (2, 8), (3, 5), (4, 2), (8, 3), (1, 128), (37, 10), (3, 64)])
@pytest.mark.parametrize("classes", [10, 100, 1000])
def test_resnext29_params_equal_torch_model(c, d, classes):
    model = meta(lambda: ResNeXtCifar(c, d, classes=classes))
    assert cx.resnext_cifar(c, d, "resnext29", classes)["params"] == n_params(model)


@pytest.mark.parametrize("c,d", [(1, 4), (2, 3), (1, 96), (22, 10), (2, 64)])
def test_resnext38_params_equal_torch_model(c, d):
    model = meta(lambda: resnext("resnext38", f"{c}x{d}d"))
    assert cx.complexity("resnext38", f"{c}x{d}d")["params"] == n_params(model)


@pytest.mark.parametrize(
    "arch,c,d",
    [
        ("resnext50", 1, 64),
        ("resnext50", 32, 4),
        ("resnext50", 12, 10),
        ("resnext50", 3, 23),
        ("resnext50", 7, 9),
        ("resnext101", 1, 64),
        ("resnext101", 32, 8),
        ("resnext101", 5, 12),
    ],
)
def test_imagenet_params_equal_torchvision(arch, c, d):
    model = meta(lambda: resnext(arch, f"{c}x{d}d"))
    layers = cx.IMAGENET_LAYERS[arch]
    reference = meta(
        lambda: torchvision.models.resnet.ResNet(TorchvisionBottleneck, list(layers), groups=c, width_per_group=d)
    )
    assert cx.complexity(arch, f"{c}x{d}d")["params"] == n_params(model) == n_params(reference)


@pytest.mark.parametrize(
    "build,arch,config,expected",
    [
        (torchvision.models.resnet50, "resnext50", "1x64d", 25_557_032),
        (torchvision.models.resnext50_32x4d, "resnext50", "32x4d", 25_028_904),
        (torchvision.models.resnet101, "resnext101", "1x64d", 44_549_160),
        (torchvision.models.resnext101_32x8d, "resnext101", "32x8d", 88_791_336),
    ],
)
def test_torchvision_reference_models(build, arch, config, expected):
    assert cx.complexity(arch, config)["params"] == n_params(meta(build)) == expected


@pytest.mark.parametrize(
    "w_in,w_out,w_b,groups,stride",
    [(256, 256, 128, 1, 1), (64, 256, 40, 4, 1), (256, 512, 96, 3, 2), (32, 32, 12, 12, 2), (16, 48, 8, 2, 1)],
)
def test_bottleneck_params_and_macs(w_in, w_out, w_b, groups, stride):
    block = ResNeXtBottleneck(w_in, w_out, w_b, groups, stride)
    for r in (8, 9):
        counted = cx.bottleneck_cx(cx.cx_init(r), w_in, w_out, w_b, groups, stride)
        assert counted["params"] == n_params(block)
        hooks = hook_counts(block, torch.zeros(1, w_in, r, r))
        assert {k: counted[k] for k in hooks} == hooks


def test_bottleneck_public_count_is_the_fig5_block():
    """``bottleneck(C, d)``: the 256 -> 256 block with C paths of width d, i.e. an identity shortcut."""
    block = ResNeXtBottleneck(256, 256, 12 * 10, 12)
    assert cx.complexity("bottleneck", "12x10d")["params"] == n_params(block)
    assert cx.bottleneck(1, 10, bn=False)["params"] == 2 * 256 * 10 + 9 * 10 * 10


def test_counts_name_the_configuration_they_count():
    """Each result carries the configuration it counts (the tables and the design CLI print it), and the
    block's default is the CIFAR resolution, 32 x 32."""
    got = cx.mlp(784, 10, 3, outputs=2, bias=True)
    assert {k: got[k] for k in ("arch", "inputs", "width", "depth", "outputs", "bias")} == dict(
        arch="mlp", inputs=784, width=10, depth=3, outputs=2, bias=True
    )
    got = cx.bottleneck(4, 8, w_in=128, w_out=256, stride=2, bn=False)
    want = dict(arch="bottleneck", config="4x8d", groups=4, width_per_group=8, w_in=128, w_out=256, stride=2)
    assert {k: got[k] for k in want} == want and got["resolution"] == 32 and got["bn"] is False
    at_32 = cx.bottleneck_cx(cx.cx_init(32), 128, 256, 32, 4, 2, False)
    assert {k: got[k] for k in ("params", "macs", "acts", "adds")} == {
        k: at_32[k] for k in ("params", "macs", "acts", "adds")
    }


@pytest.mark.parametrize("width,depth,bias", [(5, 2, False), (7, 3, True), (500, 6, False), (48, 6, True)])
def test_mlp_params_equal_collegial_mlp(width, depth, bias):
    """``depth`` counts the weight layers of Eq. 3; CollegialMLP's ``depth`` counts hidden layers."""
    model = CollegialMLP(748, width, m=1, depth=depth - 1, bias=bias)
    assert cx.mlp(748, width, depth, bias=bias)["params"] == n_params(model)


@pytest.mark.parametrize(
    "inputs,width,depth,outputs,bias", [(784, 200, 6, 10, True), (3, 4, 2, 2, False), (10, 30, 4, 1, True)]
)
def test_mlp_params_and_macs_equal_linear_stack(inputs, width, depth, outputs, bias):
    sizes = [inputs] + [width] * (depth - 1) + [outputs]
    model = nn.Sequential(*[nn.Linear(a, b, bias=bias) for a, b in zip(sizes, sizes[1:])])
    counted = cx.mlp(inputs, width, depth, outputs, bias)
    assert counted["params"] == n_params(model)
    hooks = hook_counts(model, torch.zeros(1, inputs))
    assert (counted["macs"], counted["acts"]) == (hooks["macs"], hooks["acts"])


# ---------------------------------------------------------------------------------------------
# Conv layers with biases (conv2d_cx(bias=True)), against nn.Conv2d
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "w_in, w_out, k, stride, groups, padding, bias, size",
    [
        (3, 8, 3, 1, 1, None, True, 7),
        (6, 9, 3, 2, 3, None, True, 8),
        (4, 4, 1, 1, 4, None, True, 5),
        (8, 16, 5, 2, 2, 1, True, 11),
        (8, 16, 5, 2, 2, 1, False, 11),
        (2, 6, 7, 3, 2, 3, True, 16),
    ],
)
def test_conv_counts_equal_nn_conv2d(w_in, w_out, k, stride, groups, padding, bias, size):
    pad = (k - 1) // 2 if padding is None else padding
    conv = nn.Conv2d(w_in, w_out, k, stride=stride, padding=pad, groups=groups, bias=bias)
    counted = cx.conv2d_cx(cx.cx_init(size), w_in, w_out, k, stride, groups, bias, padding)
    out = conv(torch.zeros(1, w_in, size, size))
    assert counted["params"] == n_params(conv)
    assert (counted["h"], counted["w"]) == tuple(out.shape[2:])
    assert {key: counted[key] for key in ("macs", "acts")} == {
        key: v for key, v in hook_counts(conv, torch.zeros(1, w_in, size, size)).items() if key != "adds"
    }


def test_biased_conv_net_params_equal_the_built_model():
    """A stem of biased convs, BN and a biased classifier, composed from the counters layer by layer."""
    net = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Conv2d(12, 24, 3, stride=2, padding=1, groups=3),
        nn.BatchNorm2d(24),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 5),
    )
    c = cx.conv2d_cx(cx.cx_init(9), 3, 12, 3, bias=True)
    c = cx.norm2d_cx(c, 12)
    c = cx.conv2d_cx(c, 12, 24, 3, stride=2, groups=3, bias=True)
    c = cx.norm2d_cx(c, 24)
    c = cx.linear_cx(cx.gap2d_cx(c), 24, 5)
    assert c["params"] == n_params(net)
    hooks = hook_counts(net, torch.zeros(1, 3, 9, 9))
    assert (c["macs"], c["acts"]) == (hooks["macs"], hooks["acts"])


# ---------------------------------------------------------------------------------------------
# Multiply-adds against forward hooks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch,config,resolution,classes",
    [
        ("resnext29", "1x4d", 32, 10),
        ("resnext29", "2x3d", 17, 100),
        ("resnext38", "1x2d", 64, 1000),
        ("resnext38", "3x2d", 21, 7),
        ("resnext50", "2x4d", 64, 1000),
        ("resnext101", "1x2d", 45, 5),
    ],
)
def test_macs_equal_forward_hooks(arch, config, resolution, classes):
    model = resnext(arch, config, classes=classes)
    counted = cx.complexity(arch, config, classes=classes, resolution=resolution)
    hooks = hook_counts(model, torch.zeros(1, 3, resolution, resolution))
    assert {k: counted[k] for k in hooks} == hooks
    assert counted["flops"] == 2 * counted["macs"]


def test_block_options_bare_and_forced_shortcuts():
    """``bn=False`` drops every BatchNorm, the projection's too; ``shortcut=True`` projects an identity
    shape; ``shortcut=False`` never projects; counts are integers."""
    c0 = cx.cx_init(8)
    convs = 8 * 16 + 9 * 16 * 16 // 4 + 16 * 32  # 1x1, grouped 3x3 (4 groups), 1x1
    assert cx.bottleneck_cx(c0, 8, 32, 16, groups=4, bn=False)["params"] == convs + 8 * 32  # + projection
    assert cx.bottleneck_cx(c0, 8, 32, 16, groups=4)["params"] == convs + 8 * 32 + 2 * (16 + 16 + 32 + 32)
    assert cx.bottleneck_cx(c0, 8, 32, 16, groups=4, bn=False, shortcut=False)["params"] == convs
    same = 32 * 16 + 9 * 16 * 16 // 4 + 16 * 32
    assert cx.bottleneck_cx(c0, 32, 32, 16, groups=4, bn=False)["params"] == same
    assert cx.bottleneck_cx(c0, 32, 32, 16, groups=4, bn=False, shortcut=True)["params"] == same + 32 * 32
    assert cx.bottleneck_cx(c0, 32, 32, 16)["params"] == cx.bottleneck_cx(c0, 32, 32, 16, groups=1)["params"]
    for r in (cx.bottleneck(4, 8), cx.complexity("resnext29", "2x4d"), cx.mlp(5, 3, 2)):
        assert all(type(r[k]) is int for k in ("params", "macs", "acts", "adds")), r
    for name, args in [("w_in", (0, 8, 4)), ("w_out", (8, 0, 4)), ("w_b", (8, 8, 0))]:
        with pytest.raises(ValueError, match=f"^{name} must be an integer >= 1"):
            cx.bottleneck_cx(c0, *args)
    for name, kw in [("groups", {"groups": 0}), ("stride", {"stride": 0})]:
        with pytest.raises(ValueError, match=f"^{name} must be an integer >= 1"):
            cx.bottleneck_cx(c0, 8, 8, 4, **kw)


def test_complexity_passes_its_options_on():
    """``complexity``: an MLP's ``classes`` are its outputs; a block's resolution is the one given."""
    assert cx.complexity("mlp", inputs=6, width=4, depth=2, classes=3) == cx.mlp(6, 4, 2, outputs=3)
    assert cx.complexity("mlp", inputs=6, width=4, depth=2) == cx.mlp(6, 4, 2)
    assert cx.complexity("bottleneck", "4x8d", resolution=16)["macs"] == cx.bottleneck(4, 8, resolution=16)["macs"]
    assert cx.complexity("bottleneck", "4x8d", resolution=16)["macs"] != cx.bottleneck(4, 8)["macs"]
    assert cx.complexity("resnext29", (2, 4)) == cx.complexity("resnext29", "2x4d")


def test_public_counters_default_to_the_papers_models():
    """``resnext_imagenet(C, d)`` is torchvision's ResNeXt-50 at 224 x 224 with 1000 classes, and
    ``resnext_cifar(C, d)`` ResNeXt-29 at 32 x 32 with 10 (each result naming what it counts)."""
    keys = ("params", "macs", "acts", "adds")
    got, want = cx.resnext_imagenet(32, 4), cx.complexity("resnext50", "32x4d", classes=1000, resolution=224)
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    assert (got["arch"], got["config"], got["classes"], got["resolution"]) == ("resnext50", "32x4d", 1000, 224)
    assert got["params"] == n_params(torchvision.models.resnext50_32x4d())
    got, want = cx.resnext_cifar(8, 64), cx.complexity("resnext29", "8x64d", classes=10, resolution=32)
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: cx.resnext_cifar(0, 4), "groups"),
        (lambda: cx.resnext_cifar(1, 0), "width_per_group"),
        (lambda: cx.resnext_cifar(1, 4, classes=0), "classes"),
        (lambda: cx.resnext_cifar_cx(cx.cx_init(32), 1, 4, depth=0), "depth"),
        (lambda: cx.resnext_imagenet(0, 4), "groups"),
        (lambda: cx.resnext_imagenet(1, 0), "width_per_group"),
        (lambda: cx.resnext_imagenet(1, 4, classes=0), "classes"),
        (lambda: cx.resnext_imagenet_cx(cx.cx_init(224), (3, 0, 6, 3), 1, 4), "layers"),
        (lambda: cx.mlp(784, 10, 0), "depth"),
    ],
)
def test_each_bad_count_names_its_argument(call, name):
    with pytest.raises(ValueError, match=f"^{name} must be an integer >= 1"):
        call()


def test_known_macs_of_torchvision_models():
    """torchvision documents 4.09 and 4.23 GFLOPS (multiply-adds) at 224 x 224."""
    assert round(cx.complexity("resnext50", "1x64d")["macs"] / 1e9, 2) == 4.09
    assert round(cx.complexity("resnext50", "32x4d")["macs"] / 1e9, 2) == 4.23


# ---------------------------------------------------------------------------------------------
# An independent closed form, over configurations the paper does not list
# ---------------------------------------------------------------------------------------------


def resnext29_closed_form(c, d, classes):
    """Parameters of ResNeXt-29 C x d, summed by hand (no shared code with the counters)."""
    total = 3 * 9 * 64 + 2 * 64 + 1024 * classes + classes
    w_in = 64
    for s in range(3):
        w_out, w = 256 * 2**s, c * d * 2**s
        for b in range(3):
            total += w_in * w + 9 * w * w // c + w * w_out + 4 * w + 2 * w_out
            if w_in != w_out or (s > 0 and b == 0):
                total += w_in * w_out + 2 * w_out
            w_in = w_out
    return total


@pytest.mark.parametrize("c,d,classes", [(1, 1, 1), (5, 7, 10), (16, 64, 100), (64, 4, 3), (13, 13, 13)])
def test_resnext29_closed_form(c, d, classes):
    assert cx.complexity("resnext29", f"{c}x{d}d", classes=classes)["params"] == resnext29_closed_form(c, d, classes)


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis): counts equal the built models over random small configurations
# ---------------------------------------------------------------------------------------------


@given(
    w_in=st.integers(1, 12),
    w_out=st.integers(1, 12),
    groups=st.sampled_from([1, 2, 3]),
    k=st.integers(1, 5),
    stride=st.integers(1, 3),
    padding=st.none() | st.integers(0, 2),
    bias=st.booleans(),
    size=st.integers(5, 12),
)
def test_conv_counts_equal_nn_conv2d_property(w_in, w_out, groups, k, stride, padding, bias, size):
    with intra_op_threads(1):  # tiny models: threads only add overhead
        w_in, w_out = w_in * groups, w_out * groups
        pad = (k - 1) // 2 if padding is None else padding
        conv = nn.Conv2d(w_in, w_out, k, stride=stride, padding=pad, groups=groups, bias=bias)
        counted = cx.conv2d_cx(cx.cx_init(size), w_in, w_out, k, stride, groups, bias, padding)
        hooks = hook_counts(conv, torch.zeros(1, w_in, size, size))
        assert counted["params"] == n_params(conv)
        assert (counted["macs"], counted["acts"]) == (hooks["macs"], hooks["acts"])


@given(
    w_in=st.integers(1, 24),
    w_out=st.integers(1, 24),
    paths=st.integers(1, 6),
    groups=st.integers(1, 4),
    stride=st.integers(1, 2),
    size=st.integers(3, 9),
)
def test_bottleneck_counts_equal_the_built_block_property(w_in, w_out, paths, groups, stride, size):
    with intra_op_threads(1):  # tiny models: threads only add overhead
        w_b = paths * groups
        block = ResNeXtBottleneck(w_in, w_out, w_b, groups, stride)
        counted = cx.bottleneck_cx(cx.cx_init(size), w_in, w_out, w_b, groups, stride)
        assert counted["params"] == n_params(block)
        assert {k: counted[k] for k in ("macs", "acts", "adds")} == hook_counts(block, torch.zeros(1, w_in, size, size))


@given(
    c=st.integers(1, 6),
    d=st.integers(1, 6),
    stages=st.sampled_from([(16,), (8, 16), (8, 16, 32), (4, 8, 16, 16)]),
    depth=st.integers(1, 2),
    classes=st.integers(1, 12),
    size=st.integers(4, 10),
)
def test_scaled_down_resnext_counts_equal_the_built_model_property(c, d, stages, depth, classes, size):
    with intra_op_threads(1):  # tiny models: threads only add overhead
        model = resnext("resnext29", f"{c}x{d}d", classes, stages=stages, depth=depth)
        counted = cx.complexity("resnext29", f"{c}x{d}d", classes=classes, resolution=size, stages=stages, depth=depth)
        assert counted["params"] == n_params(model)
        assert {k: counted[k] for k in ("macs", "acts", "adds")} == hook_counts(model, torch.zeros(1, 3, size, size))


@given(
    inputs=st.integers(1, 30),
    width=st.integers(1, 30),
    depth=st.integers(2, 6),
    outputs=st.integers(1, 5),
    bias=st.booleans(),
    m=st.integers(1, 3),
)
def test_mlp_counts_equal_the_built_models_property(inputs, width, depth, outputs, bias, m):
    with intra_op_threads(1):  # tiny models: threads only add overhead
        counted = cx.mlp(inputs, width, depth, outputs, bias)
        sizes = [inputs] + [width] * (depth - 1) + [outputs]
        stack = nn.Sequential(*[nn.Linear(a, b, bias=bias) for a, b in zip(sizes, sizes[1:])])
        ensemble = CollegialMLP(inputs, width, m=m, depth=depth - 1, bias=bias, outputs=outputs)
        assert counted["params"] == n_params(stack) == n_params(ensemble) // m
        hooks = hook_counts(stack, torch.zeros(1, inputs))
        assert (counted["macs"], counted["acts"]) == (hooks["macs"], hooks["acts"])


# ---------------------------------------------------------------------------------------------
# Configuration strings and bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected", [("32x4d", (32, 4)), ("12×10d", (12, 10)), (" 1x64 ", (1, 64)), ("3X23d", (3, 23))]
)
def test_parse_config(text, expected):
    assert cx.parse_config(text) == expected
    assert cx.parse_config(cx.format_config(*expected)) == expected


@pytest.mark.parametrize("text", ["12", "axbd", "0x4d", "4x0d", "-1x4d", "4x4dd", "", "4.5x2d"])
def test_parse_config_rejects(text):
    with pytest.raises(ValueError, match="config"):
        cx.parse_config(text)


def test_parse_config_rejects_non_strings():
    with pytest.raises(ValueError, match="config must be a string"):
        cx.parse_config(32)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cx.complexity("resnet9000", "1x4d"), "arch must be one of"),
        (lambda: cx.complexity("resnext29"), "config .* is required"),
        (lambda: cx.complexity("resnext29", "1x4d", classes=0), "classes must be an integer >= 1, got 0"),
        (lambda: cx.complexity("resnext50", "1x4d", resolution=-3), "resolution must be an integer >= 1"),
        (lambda: cx.mlp(784, 0, 6), "width must be an integer >= 1, got 0"),
        (lambda: cx.mlp(784, 10, 1), "depth must be >= 2"),
        (lambda: cx.mlp(0, 10, 3), "inputs must be an integer >= 1"),
        (lambda: cx.mlp(784, 10, 3, outputs=0), "outputs must be an integer >= 1"),
        (lambda: cx.bottleneck(0, 4), "groups must be an integer >= 1, got 0"),
        (lambda: cx.bottleneck(4, 0), "width_per_group must be an integer >= 1, got 0"),
        (lambda: cx.bottleneck_cx(cx.cx_init(8), 256, 256, 10, groups=3), "groups must divide"),
        (
            lambda: cx.conv2d_cx(cx.cx_init(8), 12, 10, 3, groups=4),
            "groups must divide both channel counts, got 4 for 12 -> 10",
        ),
        (
            lambda: cx.conv2d_cx(cx.cx_init(8), 10, 12, 3, groups=4),
            "groups must divide both channel counts, got 4 for 10 -> 12",
        ),
        (
            lambda: cx.bottleneck_cx(cx.cx_init(8), 8, 8, 4, shortcut="yes"),
            "shortcut must be one of auto, True, False, got 'yes'",
        ),
        (lambda: cx.complexity("resnext29", (0, 4)), "groups must be an integer >= 1"),
        (lambda: cx.complexity("resnext29", (1, 0)), "width_per_group must be an integer >= 1"),
        (lambda: cx.resnext_cifar(1, 4, "resnext50"), "arch must be one of resnext29, resnext38, got 'resnext50'"),
        (lambda: cx.resnext_imagenet(1, 4, "resnext29"), "arch must be one of resnext50, resnext101, got 'resnext29'"),
        (lambda: cx.cx_init(0), "resolution must be an integer >= 1"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "stages, depth, config", [((64,), 1, "15x5d"), ((32, 64), 2, "3x4d"), ((16, 32, 64), 1, "1x8d")]
)
def test_scaled_down_cifar_resnext_counts_match_the_built_model(stages, depth, config):
    """Scaled-down CIFAR ResNeXts (the quick runs): bottleneck width C d out / stages[0]."""
    from cepaper.models.resnext import resnext

    model = resnext("resnext29", config, 10, stages=stages, depth=depth)
    record = cx.complexity("resnext29", config, stages=stages, depth=depth)
    assert record["params"] == sum(p.numel() for p in model.parameters())
    assert record["stages"] == list(stages) and record["depth"] == depth
    assert len(model.blocks) == len(stages) * depth
    c, d = cx.parse_config(config)
    assert model.blocks[-1].conv_conv.in_channels == c * d * stages[-1] // stages[0]
    assert "stages" not in cx.complexity("resnext29", "1x128d")


def test_scaled_down_bad_input():
    with pytest.raises(ValueError, match="stage outputs must be multiples of the first, 64; got 96"):
        cx.complexity("resnext29", "1x8d", stages=(64, 96))
    with pytest.raises(ValueError, match="stages and depth only apply to the CIFAR archs"):
        cx.complexity("resnext50", "1x64d", stages=(64,))
