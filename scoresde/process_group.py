"""The process group of a ``torchrun`` job, with nothing of the sampling or training code: who this process is
(:func:`world`), starting and ending the group (:func:`init_from_env`, :func:`launched`), a flag any process
raised (:func:`any_rank`) and a process's contiguous share of ``n`` items (:func:`shard`).

:mod:`scoresde.distributed` (sampling) and :mod:`scoresde.train.distributed` (DDP) build on it; importing it
imports torch alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["world", "init_from_env", "launched", "tear_down", "any_rank", "shard"]

_TEARDOWN_TIMEOUT_S = 60.0


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(backend: str = "gloo") -> bool:
    """Start the default process group (``backend``: gloo, or nccl for training on CUDA) when ``WORLD_SIZE > 1``
    and none is running.

    Returns whether it was started here (the caller then ends it with :func:`tear_down`).
    """
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend)
    return True


@contextmanager
def launched(backend: str = "gloo") -> Iterator[bool]:
    """The command line's process group under ``torchrun``: started on entry (:func:`init_from_env`); yields
    whether it was started here.

    On a normal exit the ranks meet at a barrier, each tears its group down, and none returns before all have
    (counted on the rendezvous store, not on the group): a gloo process whose peer closed its connections while
    its own group was still alive was aborted ("terminate called without an active exception"), which a barrier
    alone did not prevent, since the first rank through it could tear down and exit before the others had. On an
    exception the group is torn down at once.
    """
    started = init_from_env(backend)
    ok = False
    try:
        yield started
        if started:
            torch.distributed.barrier()
        ok = True
    finally:
        if started:
            _tear_down(wait_for_all=ok)


def tear_down() -> None:
    """End the default process group of a script that started it itself (``init_process_group``) once every process
    has finished its work: a barrier, then each process destroys its group and returns only when all have (counted
    on the rendezvous store, 60 s at most).

    Prefer it to a bare ``torch.distributed.destroy_process_group()`` at the end of a gloo job: a process whose
    peer exited while its own group was still alive is aborted ("terminate called without an active exception",
    SIGABRT), a race that a spawned 2-process training run lost about one time in ten. A no-op without a group;
    every process must call it. After an exception, destroy the group directly instead: the others may never come.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    _tear_down(wait_for_all=True)


def _tear_down(wait_for_all: bool) -> None:
    dist = torch.distributed
    size = dist.get_world_size()
    store = None
    if wait_for_all:
        try:
            store = dist.distributed_c10d._get_default_store()  # the rendezvous store outlives the group
        except Exception:  # noqa: BLE001 (a torch without it: tear down without the count)
            store = None
    dist.destroy_process_group()
    if store is None:
        return
    key = "scoresde/torn_down"
    try:
        store.add(key, 1)
        deadline = time.monotonic() + _TEARDOWN_TIMEOUT_S
        while store.add(key, 0) < size and time.monotonic() < deadline:
            time.sleep(0.005)
    except Exception:  # noqa: BLE001 (the store's host exited first: everyone has torn down)
        return


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
