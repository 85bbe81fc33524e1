"""A trained network exported in diffusers' folder layout: safetensors weights and JSON configs, no pickle.

``export_pretrained("runs/digits", "export/digits")`` writes::

    export/digits/
      model_index.json                              what the folder holds (diffusers' index file)
      unet/config.json                              the network: class, constructor arguments, what it predicts
      unet/diffusion_pytorch_model.safetensors      its weights (EMA by default), float32, by parameter name
      scheduler/scheduler_config.json               the SDE it was trained on and how the model reads time

The names are diffusers' (``save_pretrained``), so tools that move such folders (the Hugging Face Hub, safetensors
readers) handle it; the network is ours, not a diffusers ``UNet2DModel``: it takes continuous time ``t`` in
``[0, T]`` (not a timestep index) and class labels as ``y``. :func:`load_pretrained` gives back a score for
:func:`scoresde.sample`; without scoresde's loader the files are read with ``json`` and ``safetensors`` and the
network is rebuilt by ``scoresde.models.build_model(config)`` (the docs show both).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .util import atomic_write_text, save_tensors

__all__ = ["export_pretrained", "load_pretrained"]

WEIGHTS = "diffusion_pytorch_model.safetensors"
# our parameterisation names -> diffusers' prediction_type
PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
_OURS = {v: k for k, v in PREDICTION_TYPES.items()}
# what unet/config.json holds besides the network's constructor arguments (and keys starting with "_")
DESCRIPTIVE = ("prediction_type", "time_input", "sample_shape", "num_class_embeds", "data", "weights")


def _version() -> str:
    from ._version import __version__

    return __version__


def export_pretrained(checkpoint: str | Path, out: str | Path, *, ema: bool = True, force: bool = False) -> Path:
    """Export the network of a training run's checkpoint folder to ``out`` (see the module docstring).

    ``ema`` picks the EMA weights (else the raw ones). An existing ``out`` with files is refused unless ``force``.
    Returns ``out``.
    """
    from .data import dataset_info
    from .train.pretrained import load_score

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass force=True to overwrite it")
    _, sde, cfg, model = load_score(checkpoint, ema=ema)
    model_config = dict(getattr(model, "config", None) or {})
    if "arch" not in model_config:
        raise ValueError(f"{checkpoint}: the network has no config with an 'arch' to rebuild it from")
    info = dataset_info(cfg.data)
    version = _version()
    unet = {
        "_class_name": type(model).__name__,
        "_scoresde_version": version,
        **model_config,
        "prediction_type": PREDICTION_TYPES[cfg.prediction],
        "time_input": "continuous t in [0, T], shape (batch,)",
        "sample_shape": list(info["shape"]),
        "num_class_embeds": getattr(model, "num_classes", None),
        "data": cfg.data,
        "weights": "ema" if ema else "raw",
    }
    scheduler = {
        "_class_name": type(sde).__name__,
        "_scoresde_version": version,
        "sde": dict(cfg.sde),
        "repr": repr(sde),
        "prediction_type": unet["prediction_type"],
        "t_min": sde.t_min,
        "T": sde.T,
    }
    index = {
        "_class_name": "ScoreSDEPipeline",
        "_scoresde_version": version,
        "unet": ["scoresde.models", unet["_class_name"]],
        "scheduler": ["scoresde", scheduler["_class_name"]],
    }
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    save_tensors(out / "unet" / WEIGHTS, state, metadata={"format": "pt"})
    atomic_write_text(out / "unet" / "config.json", json.dumps(unet, indent=2, sort_keys=True) + "\n")
    atomic_write_text(
        out / "scheduler" / "scheduler_config.json", json.dumps(scheduler, indent=2, sort_keys=True) + "\n"
    )
    atomic_write_text(out / "model_index.json", json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out


def load_pretrained(
    folder: str | Path,
    *,
    device: str | torch.device = "cpu",
    y: int | torch.Tensor | None = None,
    guidance: float = 0.0,
    guidance_interval: tuple[float, float] | None = None,
):
    """``(score, sde, model)`` from a folder written by :func:`export_pretrained`: the network in eval mode on
    ``device`` with its weights, the SDE it was trained on, and the score (with labels ``y`` and classifier-free
    ``guidance``, optionally limited to ``guidance_interval``, for a class-conditional network) for
    :func:`scoresde.sample`."""
    from safetensors.torch import load_file

    from .models import build_model
    from .train.config import build_sde
    from .train.pretrained import make_score

    folder = Path(folder)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    model: nn.Module = build_model({k: v for k, v in unet.items() if not k.startswith("_") and k not in DESCRIPTIVE})
    model.load_state_dict(load_file(str(folder / "unet" / WEIGHTS)), strict=True)
    model = model.to(device).eval().requires_grad_(False)
    sde = build_sde(scheduler["sde"])
    score = make_score(model, sde, _OURS[unet["prediction_type"]], y, guidance, guidance_interval)
    return score, sde, model
