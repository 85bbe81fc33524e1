"""The training loop: denoising loss, AdamW, EMA of the weights, checkpoints and exact resumption.

One step (:func:`train`)::

    idx   = the next batch_size indices of a permutation of the data (a new permutation each epoch, drawn
            from the data generator; an incomplete last batch is dropped)
    y     = labels; each replaced by the null class with probability p_uncond (classifier-free guidance,
            Ho & Salimans 2022), drawn from the noise generator
    x0, a = with augment > 0, EDM's non-leaking augmentations of the batch and their labels, drawn from the
            noise generator (scoresde.augment)
    loss  = denoising_loss(model, sde, x0, y, prediction, t_sampler, weighting, augment=a)      (scoresde.loss)
    grads clipped to a global norm of grad_clip (0: off); lr_k = lr min(1, (k + 1) / warmup) for
    lr_schedule "constant"; "cosine" then decays it after the warm-up (Loshchilov & Hutter 2017, one cycle):
        lr_k = lr (r + (1 - r) (1 + cos(pi (k - warmup) / (steps - warmup))) / 2),   r = lr_min
    AdamW step (Loshchilov & Hutter 2019), then the EMA  theta_ema <- d_n theta_ema + (1 - d_n) theta,
    n = k + 1 the number of updates so far, with
        ema_schedule "fixed": d_n = ema_decay
        ema_schedule "power": d_n = min(ema_decay, (1 - 1/n)^(ema_power + 1))   (Karras et al. 2024, EDM2,
            power-function EMA), which without the cap averages the iterates with weights
            (n^(p+1) - (n-1)^(p+1)) / N^(p+1), close to proportional to n^p.

Every random draw comes from a generator whose state is checkpointed: ``data`` (permutations), ``noise`` (t,
eps and label dropout, on the training device) and the global RNG inside :func:`torch.random.fork_rng`
(weight initialisation from ``seed`` and dropout layers), so the caller's global RNG is left as it was. A
checkpoint (:mod:`scoresde.checkpoint`) holds the weights, the EMA, the optimiser state, these states, the
current permutation and its position, and the loss history; resuming from it continues bit for bit on the CPU
(same losses, weights, EMA and optimiser state as an uninterrupted run with the same config). With ``plots``
each checkpoint also writes ``loss.png`` and ``samples.png`` (:mod:`scoresde.train.monitor`).

Interruption (``handle_signals=True``, as ``scoresde train`` runs): the first SIGINT or SIGTERM lets the current
step finish, writes a checkpoint and returns with ``interrupted`` set to the signal's number; a second signal
before that ends the process at once (exit status 128 + the signal's number; the last checkpoint on disk is
intact, since every write is atomic). ``--resume`` then continues bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..augment import augment_images
from ..loss import denoising_loss
from ..models import count_parameters
from ..precision import check_dtype_device, network_precision
from ..sde import SDE
from .config import TrainConfig, build_sde
from .distributed import on_rank0, replica_device, start_replicas
from .state import RESUMABLE_CHANGES, _Batches, _Data, _open_checkpoint, _State, _StopRequest

__all__ = ["TrainResult", "train", "ema_decay_at", "learning_rate", "RESUMABLE_CHANGES"]


def ema_decay_at(n: int, schedule: str, ema_decay: float, ema_power: float) -> float:
    """The EMA decay ``d_n`` of the ``n``-th update (``n >= 1``), module docstring."""
    if schedule == "fixed":
        return ema_decay
    return min(ema_decay, (1.0 - 1.0 / n) ** (ema_power + 1.0))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step ``k`` (counted from 0): the warm-up ``lr min(1, (k + 1) / warmup)``, then for
    ``lr_schedule="cosine"`` the decay of the module docstring to ``lr_min * lr`` at ``k = steps - 1``.
    Resuming with another ``steps`` changes the cosine's length from then on."""
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "constant" or cfg.steps - 1 <= cfg.warmup:
        return cfg.lr
    frac = min(1.0, (step - cfg.warmup) / (cfg.steps - 1 - cfg.warmup))
    return cfg.lr * (cfg.lr_min + (1.0 - cfg.lr_min) * 0.5 * (1.0 + math.cos(math.pi * frac)))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``losses`` is the whole loss history (including steps before a resume); ``examples_per_s`` counts the
    steps of this call only (checkpoint writes excluded); ``interrupted`` is the number of the signal that
    stopped the run early (``None``: it ran to ``config.steps``); ``peak_memory_mib`` is the process's peak resident
    set (``ru_maxrss``, CPU; it includes everything the process did before) or CUDA's
    ``max_memory_allocated`` during this call.
    """

    losses: list[float]
    step: int
    steps_run: int
    seconds: float
    examples_per_s: float
    peak_memory_mib: float | None
    memory_kind: str
    out: Path
    model: nn.Module
    ema: nn.Module
    num_parameters: int
    interrupted: int | None = None


def _next_batch(st: _State, cfg: TrainConfig, data: _Data) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A batch of data, its labels, each dropped to the null class with probability ``p_uncond``, and with
    ``augment`` its augmentations' labels (the batch augmented), else ``None``."""
    idx = st.batches.next(st.g_data).to(data.x.device)
    x0, y = data.x[idx], None
    if data.num_classes is not None:
        y = data.y[idx]
        if cfg.p_uncond > 0:
            drop = torch.rand(y.shape, generator=st.g_noise, device=y.device) < cfg.p_uncond
            y = torch.where(drop, torch.full_like(y, data.num_classes), y)
    a = None
    if cfg.augment:
        x0, a = augment_images(x0, cfg.augment, st.g_noise)
    return x0, y, a


def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(p, 1.0 - decay)
        for be, b in zip(ema.buffers(), model.buffers(), strict=True):
            be.copy_(b)


def _lowered(net, dtype: str, device: torch.device):
    """``net``'s forward pass under :func:`scoresde.precision.network_precision` (bfloat16 autocast), its output
    back in float32 for the loss; the backward pass runs outside the context, as autocast asks."""

    def forward(*args):
        with network_precision(dtype, device):
            out = net(*args)
        return out.float()

    return forward


def _optimise(
    st: _State, cfg: TrainConfig, sde: SDE, x0: Tensor, y: Tensor | None, a: Tensor | None = None
) -> tuple[float, float]:
    """One AdamW step on the denoising loss, then the EMA; returns ``(loss, lr)`` (under torchrun: this rank's)."""
    replicas = st.replicas  # the global batch's draws on every rank, the network on this rank's rows
    net = st.model if replicas is None else replicas.loss_model
    loss = denoising_loss(
        net if cfg.dtype == "float32" else _lowered(net, cfg.dtype, x0.device),
        sde,
        x0,
        prediction=cfg.prediction,
        y=y,
        generator=st.g_noise,
        t_sampler=cfg.t_sampler,
        t_eps=cfg.t_eps,
        weighting=cfg.weighting,
        lognormal=(cfg.p_mean, cfg.p_std),
        logit_normal=(cfg.logit_mean, cfg.logit_std),
        snr_gamma=cfg.snr_gamma,
        augment=a,
        reduction="mean" if replicas is None else "none",
    )
    if replicas is not None:
        loss = replicas.local_loss(loss)
    st.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_([p for p in st.model.parameters() if p.requires_grad], cfg.grad_clip)
    lr = learning_rate(cfg, st.step)
    for group in st.optimizer.param_groups:
        group["lr"] = lr
    st.optimizer.step()
    _update_ema(st.ema, st.model, ema_decay_at(st.step + 1, cfg.ema_schedule, cfg.ema_decay, cfg.ema_power))
    return float(loss.detach()), lr


def _progress_bar(cfg: TrainConfig, start: int, progress: bool):
    if not progress or start >= cfg.steps:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.data}", unit="step", dynamic_ncols=True)


def _checkpoint(st: _State, cfg: TrainConfig, sde: SDE, data: _Data, out: Path) -> None:
    st.save(out, cfg, data)
    if cfg.plots:
        from .monitor import write_pngs

        write_pngs(out, st.step, st.losses, st.ema, sde, cfg, data.x)


def _run_steps(
    st: _State, cfg: TrainConfig, sde: SDE, data: _Data, out: Path, progress: bool, stop: _StopRequest
) -> float:
    """Steps ``st.step + 1 .. cfg.steps`` with their checkpoints, or until ``stop`` holds a signal (then one more
    checkpoint); returns the seconds spent outside the writes."""
    device = data.x.device
    bar = _progress_bar(cfg, st.step, progress and (st.replicas is None or st.replicas.rank == 0))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    st.model.train()
    seconds = 0.0
    _sync(device)
    tic = time.perf_counter()
    while st.step < cfg.steps:
        x0, y, a = _next_batch(st, cfg, data)
        loss, lr = _optimise(st, cfg, sde, x0, y, a)
        signum = stop.signum
        if st.replicas is not None:  # the ranks' mean loss; a signal on any rank stops all after this step
            loss, signum = st.replicas.exchange(loss, signum)
        st.losses.append(loss)
        st.step += 1
        if bar is not None:
            bar.update(1)
            if st.step % cfg.log_every == 0 or st.step == cfg.steps:
                recent = st.losses[-cfg.log_every :]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", lr=f"{lr:.2e}")
        if st.step % cfg.ckpt_every == 0 or st.step == cfg.steps or signum is not None:
            _sync(device)
            seconds += time.perf_counter() - tic
            on_rank0(st.replicas, _checkpoint, st, cfg, sde, data, out)
            tic = time.perf_counter()
            if signum is not None:
                break
    _sync(device)
    seconds += time.perf_counter() - tic
    if bar is not None:
        bar.close()
    return seconds


def train(
    config: TrainConfig, resume: bool = False, progress: bool = True, handle_signals: bool = False
) -> TrainResult:
    """Train (or, with ``resume``, continue training) as described in the module docstring.

    ``handle_signals``: stop cleanly on SIGINT / SIGTERM with a checkpoint (module docstring); only from the
    main thread.

    Writes ``<out>/config.json`` and a checkpoint every ``ckpt_every`` steps and at the end. Without
    ``resume`` the output directory must not hold a checkpoint already; with it, it must, and its config
    may differ from ``config`` only in :data:`RESUMABLE_CHANGES`.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"train needs a TrainConfig, got {type(config).__name__}")
    cfg, out, device = config, Path(config.out), replica_device(config.device)  # replicas: cuda:LOCAL_RANK
    check_dtype_device(cfg.dtype, device)  # a bfloat16 warning names the line that called train
    ckpt = _open_checkpoint(cfg, out, resume)
    sde = build_sde(cfg.sde)
    data = _Data.load(cfg, device, ckpt)
    batches = _Batches(data.x.shape[0], cfg.batch_size)
    with torch.random.fork_rng(devices=_cuda_index(device)):
        torch.manual_seed(cfg.seed)
        st = _State.fresh(cfg, device, batches)
        if ckpt is not None:
            st.restore(ckpt, device)
        st.replicas = start_replicas(st.model, cfg.batch_size, device)  # DDP under torchrun, else None
        start = st.step
        on_rank0(st.replicas, _write_config, cfg, out)
        with _StopRequest().installed(handle_signals) as stop:
            seconds = _run_steps(st, cfg, sde, data, out, progress, stop)
    st.model.eval()
    st.ema.eval()
    steps_run = st.step - start
    peak, kind = _peak_memory(device)
    return TrainResult(
        losses=st.losses,
        step=st.step,
        steps_run=steps_run,
        seconds=seconds,
        examples_per_s=steps_run * cfg.batch_size / seconds if seconds > 0 else float("nan"),
        peak_memory_mib=peak,
        memory_kind=kind,
        out=out,
        model=st.model,
        ema=st.ema,
        num_parameters=count_parameters(st.model),
        interrupted=stop.signum if st.replicas is None else st.replicas.stopped_by,
    )


def _write_config(cfg: TrainConfig, out: Path) -> None:  # rank 0's under torchrun (on_rank0 of the replicas)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")


# --- devices ------------------------------------------------------------------------------------------------
def _cuda_index(device: torch.device) -> list[int]:
    """The CUDA device whose RNG :func:`torch.random.fork_rng` must fork (none on the CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _peak_memory(device: torch.device) -> tuple[float | None, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda-max-allocated"
    try:
        import resource
        import sys
    except ImportError:  # Windows
        return None, "unavailable"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu-maxrss"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
