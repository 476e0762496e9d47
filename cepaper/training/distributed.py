"""One training run across processes (torchrun): the process group, each rank's share, reductions.

``torchrun --nproc-per-node N -m cepaper train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous in the environment; :func:`setup` joins them into
one process group (NCCL on GPUs, gloo on CPUs) and gives each rank its device (``cuda:LOCAL_RANK``).
Without those variables it does nothing and the run is the usual single process.

How a recipe step is shared (:func:`rank_span`): the global batch of ``B`` images is cut into the
recipe's micro-batches (``micro_batch``: the paper's per-GPU batch, BatchNorm's batch), in order;
rank ``r`` of ``N`` takes the ``A = B / (micro_batch N)`` consecutive micro-batches
``r A .. r A + A - 1`` and accumulates their gradients, and one all-reduce sums the ranks'
gradients (:func:`all_reduce_grads`). Every loss is divided by the global ``B``, so the sum is the
gradient of the mean loss over the whole batch, the same as one process accumulating all
``B / micro_batch`` micro-batches: the global batch, learning rate and schedule do not depend on
``N``, and ``N`` must divide ``B / micro_batch`` (:func:`check_world`).
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cepaper._checks import choice

BACKENDS = ("nccl", "gloo")


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def writer(self):
        """True on rank 0: the one process that writes checkpoints, records and output."""
        return self.rank == 0


_ALONE = []  # inside alone(): this process is a world of its own


@contextlib.contextmanager
def alone():
    """Within, :func:`world` is a single process (rank 0 of 1) though this process is in a process
    group: a run that cannot be shared between ranks trains here whole (:func:`deal`)."""
    _ALONE.append(True)
    try:
        yield
    finally:
        _ALONE.pop()


def world():
    """The :class:`World` of the default process group, or a single process when there is none
    (or inside :func:`alone`)."""
    if not _ALONE and dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return World()


def launched():
    """True when this process was started by torchrun (or another launcher that sets ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def check_backend(backend, device):
    """The backend for ``device`` (``None``: NCCL on CUDA, gloo else), or a ValueError that says why
    it cannot be used here and what can."""
    device = torch.device(device)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    choice("backend", backend, BACKENDS)
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this build of torch; run one process")
    if backend == "nccl":
        if not dist.is_nccl_available():
            raise ValueError("backend nccl is not available: this torch has no NCCL; use --backend gloo")
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(
                f"backend nccl needs CUDA GPUs, and the device is {device} "
                f"({'no GPU here' if not torch.cuda.is_available() else 'not a GPU'}); "
                "use --backend gloo on CPUs, or --device cuda on a GPU machine"
            )
    if backend == "gloo" and not dist.is_gloo_available():
        raise ValueError("backend gloo is not available: this torch has no gloo; use --backend nccl on GPUs")
    return backend


def setup(device="cpu", backend=None):
    """Join the process group torchrun describes (a no-op when not :func:`launched` or already
    joined); return ``(world, device)``, ``device`` the rank's own (``cuda:LOCAL_RANK`` for ``cuda``)."""
    device = torch.device(device)
    if not launched() or int(os.environ["WORLD_SIZE"]) == 1 and not dist.is_initialized():
        return world(), device
    backend = check_backend(backend, device)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda" and device.index is None:
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node (--nproc-per-node)"
            )
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kw = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, **kw)
    return world(), device


def shutdown():
    """Leave the process group (when one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_world(rec, size):
    """Raise ValueError unless ``size`` processes share recipe ``rec``'s batch into whole per-GPU
    micro-batches (``size`` divides ``batch_size / micro_batch``); return the micro-batches per rank."""
    micro = rec.micro_batch or rec.batch_size
    if rec.batch_size % micro:
        raise ValueError(
            f"recipe {rec.name!r}: batch {rec.batch_size} is not a whole number of micro-batches of {micro}"
        )
    k = rec.batch_size // micro
    if size < 1 or k % size:
        ok = [d for d in range(1, k + 1) if k % d == 0]
        why = (
            f"BatchNorm over the whole batch of {rec.batch_size} on one GPU"
            if k == 1
            else f"{k} per-GPU batches of {micro}"
        )
        raise ValueError(
            f"world size {size} does not divide recipe {rec.name!r}'s batch of {rec.batch_size} "
            f"into its per-GPU batches ({why}): use {', '.join(map(str, ok))} process(es)"
        )
    return k // size


def shares(rec, size):
    """True when ``size`` processes can share each run of recipe ``rec`` (:func:`check_world`)."""
    try:
        check_world(rec, size)
    except ValueError:
        return False
    return True


def deal(items, compute, w):
    """``compute(items)`` with the items dealt over the ranks instead of each shared between them:
    rank ``r`` computes items ``r, r + N, ...`` whole, by itself (:func:`alone`: its own checkpoints
    and records), and every rank returns all the results in order. A single process computes them all."""
    items = list(items)
    if w.size == 1:
        return compute(items)
    with alone():
        mine = compute(items[w.rank :: w.size])
    dealt = gather_objects(mine, w)
    return [dealt[i % w.size][i // w.size] for i in range(len(items))]


def rank_span(n, micro, per_rank, rank):
    """``(start, stop)`` of rank ``rank``'s images in a global batch of ``n`` images: its
    ``per_rank`` micro-batches of ``micro`` (empty when the batch is too short to reach it)."""
    start = min(n, rank * per_rank * micro)
    return start, min(n, start + per_rank * micro)


def shard(n, w):
    """``(start, stop)`` of rank ``w.rank``'s contiguous share of ``n`` items (evaluation)."""
    return n * w.rank // w.size, n * (w.rank + 1) // w.size


def all_reduce_sum(t, w):
    """``t`` summed over the ranks (in place; ``t`` itself for a single process)."""
    if w.size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(params, w):
    """Sum the gradients of ``params`` over the ranks, in one flat buffer (a rank that saw no image
    of the step contributes zeros)."""
    if w.size == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    i = 0
    for p in params:
        p.grad.copy_(flat[i : i + p.numel()].view_as(p.grad))
        i += p.numel()


def broadcast_state(model, w):
    """Make every rank's parameters and buffers rank 0's (the start of a run)."""
    if w.size == 1:
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, 0)


def average_buffers(model, w):
    """Average the floating-point buffers (BatchNorm's running statistics) over the ranks, and give
    every rank rank 0's other buffers (counts), so that every rank evaluates and checkpoints the same model."""
    if w.size == 1:
        return
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b.data, op=dist.ReduceOp.SUM)
            b.data /= w.size
        else:
            dist.broadcast(b.data, 0)


def _momentum_bns(model):
    """The BatchNorm layers of ``model`` whose running statistics are exponential averages."""
    return [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.momentum is not None
    ]


def bn_snapshot(model, w):
    """The running statistics of ``model``'s BatchNorm layers before a step's micro-batches (``None`` for
    a single process): what :func:`sequential_bn` needs to combine the ranks' updates."""
    if w.size == 1:
        return None
    return [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in _momentum_bns(model)
    ]


def sequential_bn(model, before, updates, w):
    """Give every rank the BatchNorm running statistics one process would hold after running the
    step's micro-batches of all ranks in rank order, so that evaluation and checkpoints do not depend on
    the world size.

    A layer of momentum ``a`` updates ``r <- (1 - a) r + a mu`` once per micro-batch; rank ``s``, after its
    ``u_s`` (``updates`` here) from ``r_0`` (``before``), holds ``(1 - a)^u_s r_0 + c_s``. Run in rank order
    the updates compose to ``(1 - a)^(sum u) r_0 + sum_s (1 - a)^(u_(s+1) + ... ) c_s``; one all-gather of
    every rank's ``c_s`` and ``u_s`` gives it. (A layer with ``momentum=None``, a cumulative average, is
    left to :func:`average_buffers`.)"""
    if w.size == 1:
        return
    bns = _momentum_bns(model)
    if not bns:
        return
    # one entry per buffer, running means first: (layer, the buffer's name, its value before the step)
    stats = [(m, "running_mean", r0) for m, (r0, _, _) in zip(bns, before)]
    stats += [(m, "running_var", v0) for m, (_, v0, _) in zip(bns, before)]
    mine = [(getattr(m, name) - (1 - m.momentum) ** updates * r0).reshape(-1).double() for m, name, r0 in stats]
    flat = torch.cat(mine + [torch.tensor([float(updates)], dtype=torch.float64, device=mine[0].device)])
    parts = [torch.empty_like(flat) for _ in range(w.size)]
    dist.all_gather(parts, flat)
    counts = [int(p[-1].item()) for p in parts]
    later = [sum(counts[s + 1 :]) for s in range(w.size)]  # updates that run after rank s's, in rank order
    i = 0
    for m, name, r0 in stats:
        keep, k = 1 - m.momentum, r0.numel()
        combined = keep ** sum(counts) * r0.reshape(-1).double()
        for s in range(w.size):
            combined = combined + keep ** later[s] * parts[s][i : i + k]
        getattr(m, name).copy_(combined.view_as(r0))
        i += k
    for m, (_, _, n0) in zip(bns, before):
        m.num_batches_tracked.copy_(n0 + sum(counts))


def gather_objects(obj, w):
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for a single process)."""
    if w.size == 1:
        return [obj]
    out = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def barrier(w):
    """Wait for every rank (nothing for a single process)."""
    if w.size > 1:
        dist.barrier()
