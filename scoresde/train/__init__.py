"""Training a score network, and loading it back as a score.

- :mod:`~scoresde.train.config`: :class:`TrainConfig`, its checks and its JSON / TOML files;
- :mod:`~scoresde.train.recipes`: :func:`recipe`, the measured recipes behind ``scoresde train``'s defaults;
- :mod:`~scoresde.train.loop`: :func:`train` (denoising loss, AdamW, EMA, checkpoints, exact resumption);
- :mod:`~scoresde.train.pretrained`: :func:`load_score`, :class:`ConditionalModel` (labels, guidance),
  :class:`AutoGuided` (guidance by a weaker model) and :func:`draw_labels` (labels from the training frequencies);
- :mod:`~scoresde.train.shipped`: the trained models the package ships (:func:`shipped_checkpoint`, ``"mnist"``),
  :func:`resolve_checkpoint` (a folder, else a shipped name) and :func:`export_checkpoint` (a run's EMA weights).

``import scoresde`` does not import this package; ``sd.train``, ``sd.TrainConfig``, ``sd.load_score`` ... load
it on first use.
"""

from .config import SDES, TrainConfig, build_sde
from .loop import RESUMABLE_CHANGES, TrainResult, ema_decay_at, learning_rate, train
from .pretrained import SCORES, AutoGuided, ConditionalModel, draw_labels, load_guide, load_score, make_score
from .recipes import RECIPES, Recipe, recipe
from .shipped import SHIPPED, export_checkpoint, resolve_checkpoint, shipped_checkpoint

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "build_sde",
    "ConditionalModel",
    "AutoGuided",
    "make_score",
    "load_score",
    "load_guide",
    "draw_labels",
    "ema_decay_at",
    "learning_rate",
    "RESUMABLE_CHANGES",
    "SDES",
    "SCORES",
    "Recipe",
    "RECIPES",
    "recipe",
    "SHIPPED",
    "export_checkpoint",
    "resolve_checkpoint",
    "shipped_checkpoint",
]
