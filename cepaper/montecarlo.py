"""Monte Carlo moments of the empirical NTK over independent draws of the weights (Sec. 2, Lemma 1).

Draws are batched: a sampler returns the NTK entries of a whole chunk of independent draws at once
(the MLP's structured path over ``m`` members, or any module built with ``groups = T``), and
:func:`mc_moments` / :func:`mc_samples` accumulate them chunk by chunk in float64 power sums, so
memory does not grow with the number of draws. The NMK ``K_n^inf = E_theta[K_n(theta)]`` of Eq. 5
and ``Var(K)`` of Eq. 2 are their first two moments (:class:`Moments`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm import tqdm

from cepaper._checks import positive_int
from cepaper.models.mlp import CollegialMLP, hidden_widths
from cepaper.ntk import check_inputs, empirical_ntk, entry_index, member_ntk


class Moments(NamedTuple):
    """Monte Carlo moments of a kernel entry over ``draws`` independent draws (float64 tensors).

    ``mean`` estimates ``E[K]`` (the NMK of Eq. 5), ``var`` the unbiased ``Var(K)``, ``second``
    ``E[K^2]``; ``*_se`` are their standard errors: ``sqrt(var/T)``,
    ``sqrt((mu_4 - (T-3)/(T-1) var^2) / T)`` and ``sqrt(Var(K^2)/T)``.
    """

    mean: torch.Tensor
    var: torch.Tensor
    second: torch.Tensor
    mean_se: torch.Tensor
    var_se: torch.Tensor
    second_se: torch.Tensor
    draws: int

    def cpu(self):
        """The same moments with every tensor on the CPU."""
        return Moments(*(v.cpu() if torch.is_tensor(v) else v for v in self))

    def as_dict(self):
        """The moments as a dict of numpy arrays (and ``draws``), ready for ``results.Run.save``."""
        return {k: (v.cpu().numpy() if torch.is_tensor(v) else v) for k, v in self._asdict().items()}


class _PowerSums:
    """Float64 sums of ``(K - c)^k``, ``k = 1..4``, about a shift ``c`` (the first chunk's mean)."""

    def __init__(self):
        self.count, self.shift, self.sums = 0, None, None

    def add(self, samples):
        k = samples.detach().to(torch.float64)
        if self.shift is None:
            self.shift = k.mean(0)
            self.sums = [torch.zeros_like(self.shift) for _ in range(4)]
        d = k - self.shift
        p = d.clone()
        for s in self.sums:
            s.add_(p.sum(0))
            p.mul_(d)
        self.count += k.shape[0]

    def moments(self):
        t = self.count
        s1, s2, s3, s4 = (s / t for s in self.sums)
        c2 = s2 - s1**2
        c3 = s3 - 3 * s1 * s2 + 2 * s1**3
        c4 = s4 - 4 * s1 * s3 + 6 * s1**2 * s2 - 3 * s1**4
        mean = self.shift + s1
        nan = torch.full_like(mean, math.nan)
        var = c2 * t / (t - 1) if t > 1 else nan
        var_se = ((c4 - (t - 3) / (t - 1) * var**2).clamp_min(0) / t).sqrt() if t > 1 else nan
        var_sq = (4 * mean**2 * c2 + 4 * mean * c3 + c4 - c2**2).clamp_min(0)
        second_se = (var_sq / (t - 1)).sqrt() if t > 1 else nan
        return Moments(mean, var, mean**2 + c2, (var / t).sqrt(), var_se, second_se, t)


def moments(samples: Tensor) -> Moments:
    """Monte Carlo :class:`Moments` of a ``(T, ...)`` tensor of ``T`` independent draws, over dim 0.

    Computed in float64 (about the sample mean); ``T = 1`` gives ``NaN`` variances and errors.
    """
    if not torch.is_tensor(samples) or samples.ndim < 1 or samples.shape[0] < 1:
        raise ValueError(
            f"samples must be a tensor of shape (T, ...) with T >= 1, got {tuple(getattr(samples, 'shape', ()))}"
        )
    acc = _PowerSums()
    acc.shift = samples.detach().to(torch.float64).mean(0)
    acc.sums = [torch.zeros_like(acc.shift) for _ in range(4)]
    acc.add(samples)
    return acc.moments()


@contextlib.contextmanager
def intra_op_threads(threads):
    """Run a block with ``torch.set_num_threads(threads)``, restoring the old count; ``None``: unchanged."""
    if threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(positive_int("threads", threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _chunks(sample, draws, chunk, seed, device, progress, desc):
    draws = positive_int("draws", draws)
    chunk = positive_int("chunk", getattr(sample, "default_chunk", 64) if chunk is None else chunk)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    sizes = [min(chunk, draws - i) for i in range(0, draws, chunk)]
    if progress:
        sizes = tqdm(sizes, desc=desc, unit="chunk")
    return gen, sizes


def mc_samples(
    sample: Callable[[int, torch.Generator], Tensor],
    draws: int,
    chunk: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    threads: int | None = None,
) -> Tensor:
    """``draws`` independent samples from ``sample(t, generator)``, drawn ``chunk`` at a time.

    Args:
        sample: a callable ``(t, generator) -> tensor (t, ...)`` of ``t`` independent draws, e.g.
            :func:`mlp_ntk_sampler` or :func:`module_ntk_sampler`.
        draws: total number of draws ``T >= 1``.
        chunk: draws per call of ``sample``; ``None`` takes ``sample.default_chunk`` (about 2^23
            weights per chunk for :func:`mlp_ntk_sampler`), else 64.
        seed: seed of the ``torch.Generator`` (on ``device``) passed to every call; the result is
            reproducible for a given ``(seed, chunk, device)``.
        progress: show a ``tqdm`` bar.
        threads: CPU intra-op threads while drawing (restored after); ``None`` leaves them. For narrow
            nets the single-threaded random-number generator bounds the rate, and ``threads=1``
            avoids the cost of waking threads for small kernels (large when other processes load the CPU).
    Returns:
        tensor of shape ``(T, ...)`` in the sampler's dtype.
    """
    gen, sizes = _chunks(sample, draws, chunk, seed, device, progress, "mc draws")
    with intra_op_threads(threads):
        return torch.cat([sample(t, gen) for t in sizes])


def mc_moments(
    sample: Callable[[int, torch.Generator], Tensor],
    draws: int,
    chunk: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    threads: int | None = None,
) -> Moments:
    """Monte Carlo :class:`Moments` of ``sample`` over ``draws`` draws, without storing the samples.

    Each chunk is computed in the sampler's dtype (float32 by default) and accumulated in float64
    (power sums about the first chunk's mean). Same draws as :func:`mc_samples` with equal arguments,
    so ``mc_moments(...) == moments(mc_samples(...))`` up to float64 rounding.

    Args:
        sample: a callable ``(t, generator) -> tensor (t, ...)``; see :func:`mc_samples`.
        draws, chunk, seed, device, progress, threads: as :func:`mc_samples`.
    Returns:
        :class:`Moments` with tensors of shape ``(...)``.
    """
    gen, sizes = _chunks(sample, draws, chunk, seed, device, progress, "mc moments")
    acc = _PowerSums()
    with intra_op_threads(threads):
        for t in sizes:
            acc.add(sample(t, gen))
    return acc.moments()


def mlp_ntk_sampler(
    x1: Tensor,
    x2: Tensor | None = None,
    widths: int | Sequence[int] = 64,
    depth: int | None = None,
    entries: str | None = None,
    bias: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Callable[[int, torch.Generator], Tensor]:
    """Sampler of member NTKs ``K_n(theta)`` of the Eq. 3 MLP for :func:`mc_samples` / :func:`mc_moments`.

    A call ``sample(t, generator)`` draws a :class:`CollegialMLP` with ``m = t`` members (weights
    i.i.d. N(0, 1) from ``generator``, on its device) and returns its :func:`member_ntk`.

    Args:
        x1: inputs ``(N1, n_in)``; x2: ``(N2, n_in)`` or ``None``.
        widths: hidden widths ``(n_1, ..., n_L)``, or one int repeated ``depth`` times.
        entries: ``None``, ``"diag"`` or ``(rows, cols)``.
        bias, dtype: as :class:`CollegialMLP`.
    Returns:
        a callable ``(t, generator) -> (t, N1, N2)`` (or ``(t, P)``), whose ``default_chunk``
        attribute is ``t`` with about 2^23 weights drawn per call (between 1 and 4096).
    """
    check_inputs(x1, x2)
    if x1.ndim != 2:
        raise ValueError(f"x1 must have shape (N1, n_in), got {tuple(x1.shape)}")
    widths = hidden_widths(widths, depth)
    entry_index(entries, x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0])
    n_in = x1.shape[1]

    def sample(t, generator):
        model = CollegialMLP(
            n_in, widths, m=t, bias=bias, generator=generator, streams=2, dtype=dtype, device=generator.device
        )
        dev = generator.device
        return member_ntk(model, x1.to(dev), None if x2 is None else x2.to(dev), entries)

    fans = (n_in,) + widths
    size = sum(i * o for i, o in zip(fans, widths + (1,))) + (sum(widths) + 1 if bias else 0)
    sample.default_chunk = max(1, min(4096, 2**23 // size))
    return sample


def module_ntk_sampler(
    make_model: Callable[[torch.Generator], torch.nn.Module],
    x1: Tensor,
    x2: Tensor | None = None,
    entries: str | None = None,
    method: str = "auto",
) -> Callable[[int, torch.Generator], Tensor]:
    """Sampler for any scalar-output module: one :func:`empirical_ntk` per draw (a Python loop).

    Args:
        make_model: ``generator -> module``, a freshly initialized model drawn from ``generator``.
        x1, x2: inputs as :func:`empirical_ntk`; entries: ``None``, ``"diag"`` or ``(rows, cols)``.
        method: passed to :func:`empirical_ntk`.
    Returns:
        a callable ``(t, generator) -> (t, N1, N2)`` (or ``(t, P)``).
    """
    check_inputs(x1, x2)
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    idx = entry_index(entries, x1.shape[0], n2)

    def sample(t, generator):
        out = []
        for _ in range(t):
            k = empirical_ntk(make_model(generator), x1, x2, method=method).detach()
            out.append(k if idx is None else k[idx[0].to(k.device), idx[1].to(k.device)])
        return torch.stack(out)

    return sample
