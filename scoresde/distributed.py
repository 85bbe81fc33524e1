"""Sampling over several processes with torch.distributed (launched by ``torchrun``), with results that do not
depend on the number of processes.

Process ``r`` of ``W`` draws the contiguous shard ``[r n / W, (r + 1) n / W)`` (integer division) of the ``n``
samples with ``sample_offset`` = the shard's start, so sample ``i`` draws its own noise streams
(:class:`~scoresde.noise.NoiseSource`) whatever ``W`` is; rank 0 gathers the shards in rank order and alone gets
the result (and, in the CLI, alone writes the files). EDM's ``generate.py`` shards seeds by rank the same way.

If torch.distributed is not initialised but ``WORLD_SIZE > 1`` is in the environment (``torchrun`` sets it, with
``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), :func:`init_from_env` starts a ``gloo`` process group; gloo
gathers the CPU copies of the shards whatever device the sampling ran on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .sample import Samples, sample

__all__ = ["world", "init_from_env", "launched", "any_rank", "shard", "gather_samples", "sharded", "sample_distributed"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(backend: str = "gloo") -> bool:
    """Start the default process group (``backend``: gloo, or nccl for training on CUDA) when ``WORLD_SIZE > 1``
    and none is running.

    Returns whether it was started here (the caller then ends it with ``torch.distributed.destroy_process_group``).
    """
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend)
    return True


@contextmanager
def launched(backend: str = "gloo") -> Iterator[bool]:
    """The command line's process group under ``torchrun``: started on entry (:func:`init_from_env`), yields
    whether it was started here; on a normal exit every rank meets at a barrier before the group is torn down
    (gloo aborted a rank that was still in it when another tore down first); on an exception, torn down at once."""
    started = init_from_env(backend)
    try:
        yield started
        if started:
            torch.distributed.barrier()
    finally:
        if started:
            torch.distributed.destroy_process_group()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (all processes must call it); ``flag`` itself in one process."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([int(flag)])
    torch.distributed.all_reduce(t)
    return bool(t.item())


def shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous share ``[start, stop)`` of ``n`` samples of process ``rank``; shares differ by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return rank * n // world_size, (rank + 1) * n // world_size


def gather_samples(local: Samples | None) -> Samples | None:
    """Rank 0: the processes' :class:`Samples` concatenated in rank order (``None`` entries, empty shards, skipped);
    other ranks: ``None``. Without a process group: ``local`` itself."""
    rank, size = world()
    if size == 1:
        return local
    part = None
    if local is not None:
        traj = None if local.trajectory is None else local.trajectory.cpu()
        part = (local.x.cpu(), local.nfe, local.times.cpu(), traj, local.method, local.fit_nfe)
    parts: list | None = [None] * size if rank == 0 else None
    torch.distributed.gather_object(part, parts, dst=0)
    if rank != 0:
        return None
    parts = [p for p in parts if p is not None]
    x, nfe, times, _, method, fit_nfe = parts[0]
    trajs = [p[3] for p in parts]
    traj = None if any(t is None for t in trajs) else torch.cat(trajs, dim=1)
    x = torch.cat([p[0] for p in parts])
    return Samples(x=x, nfe=max(p[1] for p in parts), times=times, trajectory=traj, method=method, fit_nfe=fit_nfe)


def sharded(n: int, run: Callable[[int, int], Samples]) -> Samples | None:
    """Call ``run(start, stop)`` on this process's shard of ``n`` samples and gather on rank 0
    (:func:`gather_samples`). ``run`` must draw sample ``start + j`` as row ``j`` (``sample_offset=start``)."""
    rank, size = world()
    start, stop = shard(n, rank, size)
    return gather_samples(run(start, stop) if stop > start else None)


def sample_distributed(score, sde=None, shape: tuple[int, ...] | None = None, *, seed: int, x_init=None, **kwargs):
    """:func:`scoresde.sample` over the processes of the default group: rank 0 returns all ``shape[0]`` samples,
    bit-identical to a one-process ``sample(..., seed=seed)`` where the model is row-wise deterministic; the
    other ranks return ``None``. ``seed`` is required (a generator's state is not shared between processes);
    ``x_init`` (all ``n`` rows) is sharded too. Without a process group it is plain :func:`scoresde.sample`.

    NFE is per process (each calls the model the same number of times, on its own shard).
    """
    if "generator" in kwargs or "noise" in kwargs or "sample_offset" in kwargs:
        raise ValueError(
            "sample_distributed draws from seed= with the shard's sample_offset; do not pass "
            "generator, noise or sample_offset"
        )
    if shape is None:
        if x_init is None:
            raise ValueError("give shape=(n, ...) or x_init")
        shape = tuple(x_init.shape)
    n, dims = int(shape[0]), tuple(shape[1:])

    def run(start: int, stop: int) -> Samples:
        part = None if x_init is None else x_init[start:stop]
        return sample(score, sde, (stop - start, *dims), seed=seed, sample_offset=start, x_init=part, **kwargs)

    return sharded(n, run)
