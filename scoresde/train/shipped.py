"""Trained models that ship inside the package, and the export that makes one from a training run.

A shipped model is a checkpoint of the usual format (:mod:`scoresde.checkpoint`: a safetensors file and its
hashed sidecar) under ``scoresde/weights/<name>/``, holding the EMA weights alone in float16 (what sampling uses;
the raw weights, the optimiser and the generators stay with the training run). :func:`resolve_checkpoint` lets
every place that takes a checkpoint folder take a shipped name instead::

    score, sde, cfg, model = sd.load_score(sd.train.resolve_checkpoint("mnist"), y=3, guidance=1.0)
    scoresde bench --problems learned:mnist            # the same model, without training it

A folder that holds a checkpoint wins over a shipped name, so a run of your own called ``mnist`` is never
shadowed. :func:`export_checkpoint` writes such a file from a training run (``scoresde`` never overwrites one).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, has_checkpoint, load_checkpoint, save_checkpoint
from ..models import build_model

__all__ = ["SHIPPED", "WEIGHTS_DIR", "shipped_checkpoint", "resolve_checkpoint", "export_checkpoint"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

SHIPPED: dict[str, str] = {
    "mnist": "the class-conditional MNIST U-Net of recipe('mnist'): sample it with labels drawn from the training "
    "frequencies for the data's law (`--label prior`), or guided with w = 1 (docs/guides/training.md)",
}

EXPORT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def shipped_checkpoint(name: str) -> Path:
    """The folder of the shipped model ``name`` (one of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped model {name!r}; the package ships {', '.join(SHIPPED)}")
    path = WEIGHTS_DIR / name
    if not has_checkpoint(path):
        raise CheckpointError(f"the shipped model {name!r} is missing from this installation ({path})")
    return path


def resolve_checkpoint(where: str | Path) -> Path:
    """``where`` if it is a folder holding a checkpoint or names no shipped model, else the shipped model of that
    name."""
    path = Path(where)
    if has_checkpoint(path) or str(where) not in SHIPPED:
        return path  # loading it gives the error that says what is wrong with the folder
    return shipped_checkpoint(str(where))


def export_checkpoint(source: str | Path, dest: str | Path, dtype: str = "float16") -> Path:
    """Write the EMA weights of the training run in ``source`` as a checkpoint in ``dest`` (a new folder, or one
    without a checkpoint) with the weights in ``dtype``; returns the data file's path.

    The export keeps the training config, the step, the label frequencies and the loss history, and records
    where it came from (``extra["export"]``: the weights kept, their dtype, the source's step and data-file
    SHA-256). It loads with :func:`~scoresde.train.load_score` (``ema=True``, the default, reads these weights;
    ``ema=False`` is refused: the raw weights are not there) and cannot resume training."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"export_checkpoint: dtype must be one of {tuple(EXPORT_DTYPES)}, got {dtype!r}")
    if has_checkpoint(dest):
        raise ValueError(f"export_checkpoint: {dest} already holds a checkpoint; export into a new folder")
    ckpt = load_checkpoint(source)
    if "export" in ckpt.extra:
        raise ValueError(f"export_checkpoint: {source} is an export already")
    if ckpt.ema is None or ckpt.model_config is None:
        raise CheckpointError(f"{source}: only a training checkpoint with EMA weights and a model config exports")
    model = build_model(ckpt.model_config)
    model.load_state_dict(ckpt.ema, strict=True)
    model = model.to(EXPORT_DTYPES[dtype])
    keep = {k: v for k, v in ckpt.extra.items() if k in ("label_counts", "cluster_labels", "losses")}
    origin = {"weights": "ema", "dtype": dtype, "source_step": ckpt.step, "source_sha256": ckpt.sidecar.get("sha256")}
    return save_checkpoint(dest, model=model, step=ckpt.step, config=ckpt.config, extra={**keep, "export": origin})


def is_export(ckpt) -> bool:
    """Whether a loaded checkpoint is an export (EMA weights only, stored as its model weights)."""
    return "export" in ckpt.extra
