"""What a training run is made of between steps: its data, the state a checkpoint holds (weights, EMA, optimiser,
generators, data order, losses), the signal handler that stops it cleanly, and the checks that let a run resume."""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import data as data_mod
from ..checkpoint import Checkpoint, CheckpointError, has_checkpoint, load_checkpoint, save_checkpoint
from ..models import build_model
from .config import TrainConfig, upgrade_saved_config
from .distributed import Replicas

# Fields that may differ between a checkpoint's config and the config that resumes it.
RESUMABLE_CHANGES = ("steps", "ckpt_every", "log_every", "out", "device", "plots")


class _StopRequest:
    """The SIGINT / SIGTERM handler of a run: the first signal asks the loop to checkpoint and stop after the
    current step; a second one exits at once with status ``128 + signum``."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            os.write(2, f"\nsecond signal ({signal.Signals(signum).name}): exiting now\n".encode())
            os._exit(128 + signum)
        self.signum = signum

    @contextmanager
    def installed(self, enabled: bool):
        """Install the handler for the duration of the block (only from the main thread, where Python allows it)."""
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


class _Batches:
    """Epochs of random permutations, cut into batches; an incomplete last batch is dropped."""

    def __init__(self, n: int, batch_size: int):
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} training examples")
        self.n, self.batch_size = n, batch_size
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self, generator: torch.Generator) -> Tensor:
        if self.pos + self.batch_size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=generator)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


@dataclass
class _Data:
    """The training set on the device; ``y`` only for a class-conditional run (``num_classes`` = null class)."""

    x: Tensor
    y: Tensor | None
    num_classes: int | None

    @classmethod
    def load(cls, cfg: TrainConfig, device: torch.device, ckpt: Checkpoint | None = None) -> _Data:
        """The data set; a cluster-conditional run's cluster labels come from the checkpoint it resumes (the ones
        it trained on, whatever this machine's clustering would give), else from
        :func:`scoresde.data.cluster_labels`."""
        x, y = data_mod.get_dataset(cfg.data, "train", n=cfg.n_train, seed=cfg.data_seed)
        if cfg.clusters:
            y = ckpt.extra.get("cluster_labels") if ckpt is not None else None
            if y is None:
                y = data_mod.cluster_labels(x, cfg.clusters, cfg.cluster_method, seed=cfg.seed)
            elif y.shape != (x.shape[0],) or int(y.min()) < 0 or int(y.max()) >= cfg.clusters:
                raise CheckpointError(
                    f"{ckpt.path}: its cluster labels do not fit {x.shape[0]} examples in {cfg.clusters} clusters"
                )
            y = y.long()
        y = y.to(device) if ((cfg.class_conditional or cfg.clusters) and y is not None) else None
        return cls(x.to(device), y, cfg.model_config()["num_classes"])

    def label_info(self, cfg: TrainConfig) -> dict:
        """What a checkpoint keeps of the labels: how often each occurs (:func:`scoresde.train.draw_labels` samples
        them), and a cluster run's labels themselves."""
        if self.y is None:
            return {}
        y = self.y.cpu()
        return {"label_counts": torch.bincount(y, minlength=self.num_classes).tolist()} | (
            {"cluster_labels": y} if cfg.clusters else {}
        )


@dataclass
class _State:
    """Everything a checkpoint holds: weights, EMA, optimiser, generators, data order and loss history."""

    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    g_data: torch.Generator
    g_noise: torch.Generator
    batches: _Batches
    losses: list[float]
    step: int = 0
    replicas: Replicas | None = None  # this process's part under torchrun (train/distributed.py), else None

    @classmethod
    def fresh(cls, cfg: TrainConfig, device: torch.device, batches: _Batches) -> _State:
        """Weights from the global RNG (seeded by the caller), generators from ``cfg.seed``."""
        model = build_model(cfg.model_config()).to(device)
        ema = copy.deepcopy(model).requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        g_data = torch.Generator().manual_seed(cfg.seed)
        g_noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        return cls(model, ema, optimizer, g_data, g_noise, batches, [])

    def restore(self, ckpt: Checkpoint, device: torch.device) -> None:
        ckpt.restore(self.model, self.ema, self.optimizer)
        self.step = ckpt.step
        self.losses = [float(v) for v in ckpt.extra.get("losses", [])]
        if len(self.losses) != self.step:
            raise CheckpointError(f"{ckpt.path}: {len(self.losses)} recorded losses for {self.step} steps")
        try:
            self.g_data.set_state(ckpt.rng_state["data"])
            self.g_noise.set_state(ckpt.rng_state["noise"])
            torch.set_rng_state(ckpt.rng_state["global"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(ckpt.rng_state["global_cuda"], device)
            self.batches.perm = ckpt.extra["perm"].long()
            self.batches.pos = int(ckpt.extra["pos"])
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"{ckpt.path}: missing or invalid generator/loader state ({err})") from err

    def save(self, out: Path, cfg: TrainConfig, data: _Data) -> None:
        device = data.x.device
        rng = {"data": self.g_data.get_state(), "noise": self.g_noise.get_state(), "global": torch.get_rng_state()}
        if device.type == "cuda":
            rng["global_cuda"] = torch.cuda.get_rng_state(device)
        save_checkpoint(
            out,
            model=self.model,
            ema=self.ema,
            optimizer=self.optimizer,
            step=self.step,
            rng_state=rng,
            config=cfg.to_dict(),
            extra={
                "losses": self.losses,
                "perm": self.batches.perm,
                "pos": self.batches.pos,
                **data.label_info(cfg),
            },
        )


def _check_resumable(saved: dict, cfg: TrainConfig, where: Path) -> None:
    # compare in JSON form: a tuple in a config built in Python equals the list read back from config.json
    saved, now = json.loads(json.dumps(upgrade_saved_config(saved))), json.loads(json.dumps(cfg.to_dict()))
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff)
        raise CheckpointError(f"cannot resume from {where}: the config differs in {detail}")


def _open_checkpoint(cfg: TrainConfig, out: Path, resume: bool) -> Checkpoint | None:
    """The checkpoint to resume (checked against ``cfg``), or ``None`` for a new run in an empty ``out``."""
    if resume:
        ckpt = load_checkpoint(out)
        _check_resumable(ckpt.config, cfg, out)
        return ckpt
    if has_checkpoint(out):
        raise ValueError(f"{out} already holds a checkpoint: resume it (resume=True / --resume) or choose another out")
    return None
