"""The Monte Carlo samplers and the NTK entry points where mutation testing found them untested: the
cross kernel of two input sets, the chunk size from the parameter count, dtypes, unused parameters,
which path each method takes, and what the errors say."""

import numpy as np
import pytest
import torch
from torch import nn

from cepaper import ntk
from cepaper.models.mlp import CollegialMLP
from cepaper.montecarlo import intra_op_threads, mc_moments, mc_samples, mlp_ntk_sampler, module_ntk_sampler


def inputs(n1=3, n2=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n1, d, generator=g), torch.randn(n2, d, generator=g)


def small_net(generator):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1))


@pytest.mark.parametrize("kind", ["mlp", "module"])
def test_samplers_cross_kernel_is_the_block_of_the_joint_kernel(kind):
    """``sample(x1, x2)`` is the ``x1`` x ``x2`` block of the kernel of the stacked inputs, drawn from the
    same generator state: not the kernel of ``x1`` with itself."""
    x1, x2 = inputs()
    make = (
        (lambda a, b=None, **kw: mlp_ntk_sampler(a, b, widths=(6, 7), bias=True, **kw))
        if kind == "mlp"
        else (lambda a, b=None, **kw: module_ntk_sampler(small_net, a, b, **kw))
    )
    cross = make(x1, x2)(2, torch.Generator().manual_seed(1))
    joint = make(torch.cat([x1, x2]))(2, torch.Generator().manual_seed(1))
    assert cross.shape == (2, 3, 5)
    torch.testing.assert_close(cross, joint[:, :3, 3:], rtol=1e-5, atol=1e-6)
    picked = make(x1, x2, entries=([0, 2], [4, 1]))(2, torch.Generator().manual_seed(1))  # a column of x2 past n_in
    torch.testing.assert_close(picked, cross[:, [0, 2], [4, 1]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "module"])
def test_samplers_refuse_second_inputs_of_another_shape(kind):
    x1, _ = inputs()
    bad = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"x2 must be a tensor of shape \(N2, 4\) like x1, got \(5, 3\)"):
        mlp_ntk_sampler(x1, bad, widths=4) if kind == "mlp" else module_ntk_sampler(small_net, x1, bad)


@pytest.mark.parametrize("bias", [False, True])
def test_default_chunk_draws_about_two_to_the_23_weights(bias):
    """The chunk is 2^23 weights over one member's parameter count, counted on the built model."""
    x1, _ = inputs()
    for widths in [(64, 64), (700, 700), (3,)]:
        sample = mlp_ntk_sampler(x1, widths=widths, bias=bias)
        size = sum(p.numel() for p in CollegialMLP(4, widths, m=1, bias=bias).parameters())
        assert sample.default_chunk == max(1, min(4096, 2**23 // size)), (widths, bias)


def test_sampler_defaults_and_its_own_input_checks(monkeypatch):
    x1, _ = inputs()
    g = lambda: torch.Generator().manual_seed(0)
    torch.testing.assert_close(mlp_ntk_sampler(x1)(2, g()), mlp_ntk_sampler(x1, widths=64)(2, g()), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^x1 must have shape \(N1, n_in\), got \(3,\)"):
        mlp_ntk_sampler(torch.randn(3))
    with pytest.raises(ValueError, match="entries must be None, 'diag' or"):
        mlp_ntk_sampler(x1, entries="all")  # refused when the sampler is made, not at its first draw
    called = []
    real = ntk.naive_ntk
    monkeypatch.setattr(ntk, "naive_ntk", lambda *a: called.append(1) or real(*a))
    module_ntk_sampler(small_net, x1, method="naive")(2, g())
    assert called == [1, 1]


def test_sampler_dtype_and_moments_as_arrays():
    x1, _ = inputs()
    k = mlp_ntk_sampler(x1, widths=5, dtype=torch.float64)(3, torch.Generator().manual_seed(0))
    assert k.dtype == torch.float64
    m = mc_moments(mlp_ntk_sampler(x1, widths=5), 40, chunk=20)
    d = m.as_dict()
    assert all(isinstance(d[k], np.ndarray) for k in ("mean", "var", "second", "mean_se", "var_se", "second_se"))
    assert d["draws"] == 40
    np.testing.assert_array_equal(d["mean"], m.mean.numpy())


def test_default_seed_is_seed_0_and_threads_apply_while_drawing():
    x1, _ = inputs()
    sample = mlp_ntk_sampler(x1, widths=5)
    torch.testing.assert_close(mc_samples(sample, 30), mc_samples(sample, 30, seed=0), rtol=0, atol=0)
    assert not torch.equal(mc_samples(sample, 30), mc_samples(sample, 30, seed=1))
    seen = []
    counting = lambda t, g: (seen.append(torch.get_num_threads()), torch.randn(t, 2, generator=g))[1]
    with intra_op_threads(2):  # not the tests' one thread, so that both the change and the restore show
        mc_moments(counting, 4, threads=1)
        mc_samples(counting, 4, threads=1)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    a, b, c = mc_moments(sample, 30, chunk=10), mc_moments(sample, 30, chunk=10, seed=0), mc_moments(sample, 30, seed=1)
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
    assert not torch.equal(a.mean, c.mean)


# --- ntk entry points -----------------------------------------------------------------------------


def by_hand(model, x1, x2):
    """The NTK of a scalar-output module by one autograd call per input (no cepaper code)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(x):
        rows = []
        for i in range(len(x)):
            g = torch.autograd.grad(model(x[i : i + 1]).sum(), params, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if gi is None else gi).flatten() for p, gi in zip(params, g)]))
        return torch.stack(rows)

    return grads(x1) @ grads(x2).T


class WithUnused(nn.Module):
    """A module with a trainable parameter its forward never uses (its gradient is None)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net, self.unused = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1)), nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("method", ["auto", "jacobian", "naive"])
def test_every_general_method_gives_the_cross_kernel_with_unused_parameters(method):
    x1, x2 = inputs()
    model = WithUnused()
    got = ntk.empirical_ntk(model, x1, x2, method=method)
    torch.testing.assert_close(got, by_hand(model, x1, x2), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"x2 must be a tensor of shape \(N2, 4\)"):
        ntk.empirical_ntk(model, x1, torch.randn(2, 3), method=method)


@pytest.mark.parametrize(
    "method, model, path",
    [
        ("auto", "mlp", "mlp_member_ntk"),
        ("structured", "mlp", "mlp_member_ntk"),
        ("jacobian", "mlp", "jacobian_ntk"),
        ("naive", "mlp", "naive_ntk"),
        ("auto", "other", "jacobian_ntk"),
        ("naive", "other", "naive_ntk"),
    ],
)
def test_each_method_takes_its_own_path(monkeypatch, method, model, path):
    called = []
    for name in ("mlp_member_ntk", "jacobian_ntk", "naive_ntk"):
        real = getattr(ntk, name)
        monkeypatch.setattr(ntk, name, lambda *a, _n=name, _r=real, **k: called.append(_n) or _r(*a, **k))
    x1, _ = inputs()
    net = CollegialMLP(4, (5,), m=2) if model == "mlp" else WithUnused()
    ntk.empirical_ntk(net, x1, method=method)
    assert called[0] == path, called


def test_entry_point_errors_say_what_they_got():
    with pytest.raises(ValueError, match="no parameters with requires_grad=True"):
        ntk.empirical_ntk(nn.ReLU(), torch.randn(2, 4))
    with pytest.raises(ValueError, match="no parameters with requires_grad=True"):
        ntk.naive_ntk(nn.ReLU(), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"got \(1, 2\) for N = 1"):
        ntk.empirical_ntk(nn.Linear(4, 2), torch.randn(2, 4), method="naive")
    with pytest.raises(ValueError, match="method must be one of auto, structured, jacobian, naive, got 'exact'"):
        ntk.empirical_ntk(nn.Linear(4, 1), torch.randn(2, 4), method="exact")
    with pytest.raises(ValueError, match="method='structured' needs a CollegialMLP, got Linear"):
        ntk.empirical_ntk(nn.Linear(4, 1), torch.randn(2, 4), method="structured")


def test_ensemble_ntk_of_scalar_and_matrix_members():
    assert ntk.ensemble_ntk(torch.tensor([1.0, 2.0, 6.0])).item() == 3.0  # m scalar kernels
    torch.testing.assert_close(
        ntk.ensemble_ntk(torch.ones(4, 2, 3) * torch.arange(4.0)[:, None, None]), torch.full((2, 3), 1.5)
    )
    for bad, shape in [(torch.empty(0, 2), r"\(0, 2\)"), (torch.tensor(1.0), r"\(\)"), ([1.0], r"\(\)")]:
        with pytest.raises(
            ValueError, match=r"member_kernels must be a tensor of shape \(m, \.\.\.\) with m >= 1, got " + shape
        ):
            ntk.ensemble_ntk(bad)


def by_formula(x):
    """The moments of Moments' docstring, by numpy on float64 draws ``x`` (T, ...)."""
    x = np.asarray(x, dtype=np.float64)
    t, mean = len(x), x.mean(0)
    var = x.var(0, ddof=1) if t > 1 else np.full_like(mean, np.nan)
    mu4 = ((x - mean) ** 4).mean(0)
    var_se = np.sqrt(np.maximum(mu4 - (t - 3) / (t - 1) * var**2, 0) / t) if t > 1 else np.full_like(mean, np.nan)
    sq = x**2
    second_se = np.sqrt(sq.var(0, ddof=1) / t) if t > 1 else np.full_like(mean, np.nan)
    return dict(mean=mean, var=var, second=sq.mean(0), mean_se=np.sqrt(var / t), var_se=var_se, second_se=second_se)


@pytest.mark.parametrize("t", [1, 2, 3, 50])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_moments_match_their_formulas_at_any_count_and_scale(t, scale):
    """Small draws (errors well below 1), two draws, one draw (NaN spreads), 1-D and 2-D samples; the
    streaming power sums of ``mc_moments`` give the same as ``moments`` of the stored draws."""
    from cepaper.montecarlo import moments

    g = torch.Generator().manual_seed(t)
    x = scale * (1 + torch.rand(t, 3, generator=g, dtype=torch.float64) ** 3)
    for draws in (x, x[:, 0]):
        got, want = moments(draws).as_dict(), by_formula(draws.numpy())
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=1e-9, atol=0, equal_nan=True, err_msg=k)
        assert got["draws"] == t
        streamed = mc_moments(stored(draws), t, chunk=2)  # in chunks of 2: the power sums accumulate
        for k in want:
            np.testing.assert_allclose(streamed.as_dict()[k], got[k], rtol=1e-7, equal_nan=True, err_msg=k)


def stored(draws):
    """A sampler that hands out the stored ``draws`` in order (its generator unused)."""
    at = [0]

    def sample(n, generator):
        at[0] += n
        return draws[at[0] - n : at[0]]

    return sample


def test_moments_refuse_what_is_not_draws():
    from cepaper.montecarlo import moments

    for bad, shape in [(torch.tensor(1.0), r"\(\)"), (torch.empty(0, 3), r"\(0, 3\)"), ([1.0, 2.0], r"\(\)")]:
        with pytest.raises(
            ValueError, match=r"samples must be a tensor of shape \(T, \.\.\.\) with T >= 1, got " + shape
        ):
            moments(bad)


def test_the_default_chunk_is_the_samplers_and_else_64():
    """Chunking changes which weights are drawn, so the default is part of what a seed means."""
    x1, _ = inputs()
    sample = mlp_ntk_sampler(x1, widths=3)
    assert sample.default_chunk == 4096
    torch.testing.assert_close(mc_moments(sample, 100).mean, mc_moments(sample, 100, chunk=4096).mean, rtol=0, atol=0)
    assert not torch.equal(mc_moments(sample, 100).mean, mc_moments(sample, 100, chunk=64).mean)
    torch.testing.assert_close(mc_samples(sample, 100), mc_samples(sample, 100, chunk=4096), rtol=0, atol=0)
    plain = lambda t, g: torch.randn(t, 2, generator=g)  # no default_chunk
    torch.testing.assert_close(mc_moments(plain, 150).mean, mc_moments(plain, 150, chunk=64).mean, rtol=0, atol=0)
    assert not torch.equal(mc_moments(plain, 150).mean, mc_moments(plain, 150, chunk=65).mean)


def test_default_chunk_counts_exactly_at_a_power_of_two():
    """One member of 3 -> 1024 -> 1 has 4096 weights (2048 per chunk), 5121 with biases (1638)."""
    x = torch.randn(2, 3)
    assert mlp_ntk_sampler(x, widths=(1024,)).default_chunk == 2**23 // 4096 == 2048
    assert mlp_ntk_sampler(x, widths=(1024,), bias=True).default_chunk == 2**23 // 5121 == 1638


def test_entries_select_exactly_what_they_name():
    x1, x2 = inputs()
    model = CollegialMLP(4, (5,), m=2)
    full = ntk.member_ntk(model, x1, x2)
    torch.testing.assert_close(ntk.member_ntk(model, x1, x2, entries=([2], [4])), full[:, [2], [4]])  # one entry
    torch.testing.assert_close(ntk.member_ntk(model, x1[:1], x2[:1]), full[:, :1, :1])  # N1 = N2 = 1
    bad = [
        ("diag", "entries='diag' needs N1 == N2, got 3 and 5"),
        ("all", "entries must be None, 'diag' or \\(rows, cols\\), got 'all'"),
        (([0, 1], [0]), "entries \\(rows, cols\\) must be non-empty and of equal length, got 2 and 1"),
        (([], []), "must be non-empty and of equal length, got 0 and 0"),
        (
            ([0], [5]),
            "entries must index rows in \\[0, 3\\) and cols in \\[0, 5\\), got rows in \\[0, 0\\], cols in \\[5, 5\\]",
        ),
        (([0], [-1]), "cols in \\[-1, -1\\]"),
        (([3], [0]), "rows in \\[3, 3\\]"),
        (([-1], [0]), "rows in \\[-1, -1\\]"),
    ]
    for entries, message in bad:
        with pytest.raises(ValueError, match=message):
            ntk.entry_index(entries, 3, 5)


def test_the_structured_path_casts_the_second_inputs_and_names_bad_ones():
    x1, x2 = inputs()
    model = CollegialMLP(4, (5,), m=2)
    torch.testing.assert_close(ntk.member_ntk(model, x1, x2.double()), ntk.member_ntk(model, x1, x2))
    for args, message in [
        ((torch.randn(2, 3), None), r"^x1 must have shape \(N, 4\) with N >= 1, got \(2, 3\)"),
        ((x1, torch.randn(2, 3)), r"^x2 must have shape \(N, 4\) with N >= 1, got \(2, 3\)"),
        ((x1, [1.0]), r"^x2 must have shape \(N, 4\) with N >= 1, got list"),
        ((torch.empty(0, 4), None), r"^x1 must have shape \(N, 4\) with N >= 1, got \(0, 4\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            ntk.member_ntk(model, *args)
    with pytest.raises(TypeError, match="model must be a CollegialMLP, got Linear; use empirical_ntk"):
        ntk.member_ntk(nn.Linear(4, 1), x1)
    readout = [torch.randn(2, 5, 4), torch.randn(2, 2, 5)]  # two outputs per member
    with pytest.raises(ValueError, match=r"the readout must have shape \(m, 1, n_L\).*got \(2, 2, 5\)"):
        ntk.mlp_features(readout, [1.0, 1.0], x1)


def test_general_inputs_are_named_when_bad():
    net = WithUnused()
    for args, message in [
        (([1.0],), r"^x1 must be a tensor of shape \(N1, \.\.\.\) with N1 >= 1, got list"),
        ((torch.empty(0, 4),), r"^x1 must be a tensor .* got \(0, 4\)"),
        ((torch.randn(2, 4), [1.0]), r"^x2 must be a tensor of shape \(N2, 4\) like x1, got list"),
        ((torch.randn(2, 4), torch.empty(0, 4)), r"^x2 must be .* got \(0, 4\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            ntk.empirical_ntk(net, *args)
    one = torch.randn(1, 4)
    torch.testing.assert_close(ntk.empirical_ntk(net, one, one), by_hand(net, one, one), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"got list for N = 1"):
        ntk._scalar([1.0])


class Scale(nn.Module):
    """``f(x) = w x`` of scalar inputs ``x`` (a batch of shape ``(N,)``): its NTK is ``x1 x2^T``."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.w * x


@pytest.mark.parametrize("method", ["auto", "jacobian", "naive"])
def test_inputs_may_be_scalars(method):
    x1, x2 = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 4.0])
    torch.testing.assert_close(ntk.empirical_ntk(Scale(), x1, x2, method=method), torch.outer(x1, x2))
    torch.testing.assert_close(ntk.empirical_ntk(Scale(), x1, method=method), torch.outer(x1, x1))
