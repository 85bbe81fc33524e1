"""Sampling over several processes with torch.distributed (launched by ``torchrun``), with results that do not
depend on the number of processes.

Process ``r`` of ``W`` draws the contiguous shard ``[r n / W, (r + 1) n / W)`` (integer division) of the ``n``
samples with ``sample_offset`` = the shard's start, so sample ``i`` draws its own noise streams
(:class:`~scoresde.noise.NoiseSource`) whatever ``W`` is; rank 0 gathers the shards in rank order and alone gets
the result (and, in the CLI, alone writes the files). EDM's ``generate.py`` shards seeds by rank the same way.

If torch.distributed is not initialised but ``WORLD_SIZE > 1`` is in the environment (``torchrun`` sets it, with
``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), :func:`init_from_env` starts a ``gloo`` process group; gloo
gathers the CPU copies of the shards whatever device the sampling ran on. The group's life cycle
(:func:`world`, :func:`init_from_env`, :func:`launched`, :func:`any_rank`, :func:`shard`) lives in
:mod:`scoresde.process_group` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .process_group import any_rank, init_from_env, launched, shard, world
from .sample import Samples, sample

__all__ = ["world", "init_from_env", "launched", "any_rank", "shard", "gather_samples", "sharded", "sample_distributed"]


def gather_samples(local: Samples | None) -> Samples | None:
    """Rank 0: the processes' :class:`Samples` concatenated in rank order (``None`` entries, empty shards, skipped);
    other ranks: ``None``. Without a process group: ``local`` itself."""
    rank, size = world()
    if size == 1:
        return local
    part = None
    if local is not None:
        traj = None if local.trajectory is None else local.trajectory.cpu()
        part = (local.x.cpu(), local.nfe, local.times.cpu(), traj, local.method, local.fit_nfe, local.check_nfe)
    parts: list | None = [None] * size if rank == 0 else None
    torch.distributed.gather_object(part, parts, dst=0)
    if rank != 0:
        return None
    parts = [p for p in parts if p is not None]
    x, nfe, times, _, method, fit_nfe, check_nfe = parts[0]
    trajs = [p[3] for p in parts]
    traj = None if any(t is None for t in trajs) else torch.cat(trajs, dim=1)
    x = torch.cat([p[0] for p in parts])
    nfe = max(p[1] for p in parts)
    return Samples(x=x, nfe=nfe, times=times, trajectory=traj, method=method, fit_nfe=fit_nfe, check_nfe=check_nfe)


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
