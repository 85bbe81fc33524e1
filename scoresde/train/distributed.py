"""Data-parallel training over the processes of ``torchrun`` (DistributedDataParallel), with the loss trajectory of
one process.

When :func:`scoresde.train.train` runs in an initialised default process group of ``W > 1`` processes (``scoresde
train`` under ``torchrun`` starts one: gloo on the CPU, nccl on CUDA), every rank

- draws the same *global* batch of ``batch_size`` examples, its label dropout, times and noise from the shared
  generators (as one process would: the same draws in the same order), and evaluates the network on its own
  contiguous rows ``[r B / W, (r + 1) B / W)`` only (:class:`Replicas`, ``loss_model``); the other rows stay zero
  and do not count;
- back-propagates the mean loss of its rows; DDP averages the gradients, which with equal shares is the gradient of
  the global batch's mean loss (``batch_size`` must be divisible by ``W``);
- clips, steps AdamW, updates the EMA and the learning rate from the same gradients and the same step counter, so
  weights, EMA and optimiser state stay the same on every rank;
- records the mean of the ranks' losses (one ``all_gather`` per step, which also carries the stop flag: a SIGINT or
  SIGTERM that reaches any rank stops every rank after the same step, with one checkpoint);
- leaves the checkpoint, ``config.json`` and the pictures to rank 0; the others wait for it (and fail with it).

So the losses of 1 and ``W`` processes at equal global batch agree to float rounding (the network sees other batch
shapes and the gradients are summed in another order), and a checkpoint does not record ``W``: a run resumes under
any number of processes (``--resume`` under ``torchrun`` loads the checkpoint on every rank). Dropout layers draw
from each process's global generator, so with ``dropout > 0`` the trajectory does depend on ``W``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import torch
from torch import Tensor, nn

from ..process_group import launched, shard, world

__all__ = ["Replicas", "replica_device", "start_replicas", "on_rank0", "process_group"]


def replica_device(device: str | torch.device) -> torch.device:
    """The device of this process: ``cuda`` without an index becomes ``cuda:LOCAL_RANK`` in a process group of
    more than one process (one GPU per process, as torchrun numbers them), and is made the current CUDA device."""
    device = torch.device(device)
    rank, size = world()
    if device.type == "cuda" and size > 1:
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    return device


class Replicas:
    """This process's part in data-parallel training (module docstring): its rows of the global batch, the DDP
    wrapper that averages the gradients, and the per-step exchange of losses and stop flags."""

    def __init__(self, model: nn.Module, batch_size: int, device: torch.device):
        self.rank, self.size = world()
        if batch_size % self.size:
            raise ValueError(
                f"batch_size {batch_size} must be divisible by the {self.size} processes (each takes "
                f"batch_size / {self.size} examples of every global batch)"
            )
        self.rows = slice(*shard(batch_size, self.rank, self.size))
        self.comm = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.stopped_by: int | None = None

    def loss_model(self, x: Tensor, t: Tensor, *y: Tensor | None) -> Tensor:
        """The network (through DDP) on this rank's rows of ``x``; zeros elsewhere (not part of this rank's loss).
        ``y``: the labels and augmentation labels the network takes after ``t`` (``None`` passes through)."""
        rows = self.rows
        part = self.ddp(x[rows], t[rows], *(None if v is None else v[rows] for v in y))
        rest = x.shape[1:]
        return torch.cat([part.new_zeros((rows.start, *rest)), part, part.new_zeros((x.shape[0] - rows.stop, *rest))])

    def local_loss(self, per_sample: Tensor) -> Tensor:
        """The mean of this rank's rows of the per-sample losses (what it back-propagates)."""
        return per_sample[self.rows].mean()

    def exchange(self, loss: float, signum: int | None) -> tuple[float, int | None]:
        """``(mean of the ranks' losses, a signal any rank received or None)``, the same on every rank; every rank
        must call it once per step. Once a signal is returned it is kept in ``stopped_by``."""
        mine = torch.tensor([loss, float(signum or 0)], dtype=torch.float64, device=self.comm)
        parts = [torch.empty_like(mine) for _ in range(self.size)]
        torch.distributed.all_gather(parts, mine)
        rows = torch.stack(parts).cpu().tolist()
        total = 0.0
        for value, _ in rows:  # in rank order: the same sum on every rank
            total += value
        signals = [int(s) for _, s in rows if s]
        if signals:
            self.stopped_by = signals[0]
        return total / self.size, self.stopped_by

    def rank0_writes(self, write: Callable[..., object], *args) -> None:
        """``write(*args)`` on rank 0; the other ranks wait for it, and every rank raises if it failed."""
        error = None
        if self.rank == 0:
            try:
                write(*args)
            except BaseException as err:  # noqa: BLE001 (re-raised below, after the others are told)
                error = err
        failed = torch.tensor([int(error is not None)], device=self.comm)
        torch.distributed.all_reduce(failed)
        if error is not None:
            raise error
        if failed.item():
            raise RuntimeError("rank 0 failed to write the checkpoint (its error is in its output)")


def start_replicas(model: nn.Module, batch_size: int, device: torch.device) -> Replicas | None:
    """A :class:`Replicas` when a default process group of more than one process is running, else ``None``."""
    return Replicas(model, batch_size, device) if world()[1] > 1 else None


def on_rank0(replicas: Replicas | None, write: Callable[..., object], *args) -> None:
    """``write(*args)`` in one process, or on rank 0 alone with the others waiting (:meth:`Replicas.rank0_writes`)."""
    if replicas is None:
        write(*args)
    else:
        replicas.rank0_writes(write, *args)


@contextmanager
def process_group(device: str | None) -> Iterator[int]:
    """For ``scoresde train`` under ``torchrun``: start the default process group when ``WORLD_SIZE > 1`` (nccl
    for a CUDA ``device``, else gloo, which never touches CUDA), silence ranks other than 0 (their messages are
    rank 0's), yield the rank, and end the group afterwards. In one process: yields 0 and does nothing."""
    backend = "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"
    with launched(backend):
        rank = world()[0]
        if rank == 0:
            yield rank
        else:
            with open(os.devnull, "w") as quiet, redirect_stdout(quiet), redirect_stderr(quiet):
                yield rank
