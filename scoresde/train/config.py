"""The configuration of a training run: :class:`TrainConfig`, its checks, and JSON / TOML files.

A config comes from keywords, a ``.json`` or ``.toml`` file, or the command line (``scoresde train``); every
field is checked when the object is built, and unknown keys in a file are named. A run saves its config as
``<out>/config.json``, and :func:`build_sde` and :meth:`TrainConfig.model_config` turn its ``sde`` and
``model`` entries into objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import data as data_mod
from ..augment import AUGMENT_DIM
from ..checks import check_bool, check_choice, check_int, check_number
from ..loss import (
    DEFAULT_LOGIT_NORMAL,
    DEFAULT_LOGNORMAL,
    DEFAULT_SNR_GAMMA,
    DEFAULT_T_EPS,
    PREDICTIONS,
    T_SAMPLERS,
    WEIGHTINGS,
)
from ..sde import SDE
from ..sde_names import CONFIG_NAMES, sde_class
from ..util import atomic_write_text

__all__ = [
    "TrainConfig",
    "build_sde",
    "upgrade_saved_config",
    "SDES",
    "EMA_SCHEDULES",
    "LR_SCHEDULES",
    "TRAIN_DTYPES",
    "TOY_MLP",
]

# the classes a config's {"name": ...} picks: the names of the one table (scoresde/sde_names.py) without a preset
SDES = {name: sde_class(name) for name in CONFIG_NAMES}
EMA_SCHEDULES = ("power", "fixed")
LR_SCHEDULES = ("constant", "cosine")
TRAIN_DTYPES = ("float32", "bfloat16")  # float64 is for sampling (scoresde sample --dtype)
# The default network of the 2-D sets: the residual MLP on 64 random Fourier features of scale 0.5 (Tancik et al.
# 2020); on the checkerboard they took the histogram TV from 4.3x to 2.7x its floor at the same budget.
TOY_MLP = {"arch": "mlp", "fourier_features": 64, "fourier_scale": 0.5}
# What the fields added with the lognormal sampler, min-SNR weighting, the cosine schedule and the pictures meant
# before they existed: a config saved without them is read with these values (upgrade_saved_config).
# Fields added since, with the value every run saved before them had.
_ADDED = {
    "dtype": "float32",
    "clusters": 0,
    "cluster_method": "kmeans",
    "augment": 0.0,
    "logit_mean": DEFAULT_LOGIT_NORMAL[0],
    "logit_std": DEFAULT_LOGIT_NORMAL[1],
}
_LEGACY = {"p_mean": -1.2, "p_std": 1.2, "snr_gamma": 5.0, "lr_schedule": "constant", "lr_min": 0.0, "plots": True}


def upgrade_saved_config(d: dict) -> dict:
    """A config saved by an earlier version, with what it meant then made explicit: the fields it lacks get the
    values that reproduce that version's run (constant learning rate, float32, ...), and an empty ``model`` of a
    2-D set becomes the plain MLP it trained (today's default adds Fourier features). Current configs pass
    unchanged."""
    if not isinstance(d, dict):
        return d
    d = {**_ADDED, **d}
    if "lr_schedule" in d:
        return d
    d = {**_LEGACY, **d}
    if not d.get("model") and d.get("data") in data_mod.TOY_SETS:
        d["model"] = {"arch": "mlp"}
    return d


def build_sde(config: dict) -> SDE:
    """An SDE from ``{"name": "vp" | "subvp" | "ve" | "flow", **constructor kwargs}``, e.g. ``{"name": "vp"}`` or
    ``{"name": "flow", "shift": 3.0}``."""
    if not isinstance(config, dict) or config.get("name") not in SDES:
        raise ValueError(f"sde config must be a dict with 'name' in {tuple(SDES)}, got {config!r}")
    kw = {k: v for k, v in config.items() if k != "name"}
    try:
        return SDES[config["name"]](**kw)
    except TypeError as err:
        raise ValueError(f"bad arguments for sde {config['name']!r}: {err}") from err


@dataclass
class TrainConfig:
    """Everything that defines a training run; :mod:`scoresde.train.loop` describes what each part does.

    Attributes:
        data: a dataset of :data:`scoresde.data.DATASETS` ("moons", ..., "digits").
        n_train: number of points drawn for a toy set (digits: the fixed train split).
        data_seed: seed of the data draw / split.
        model: ``{"arch": "mlp" | "unet", **kwargs}``; empty: :data:`TOY_MLP` (the MLP on Fourier features) for
            toy sets, the U-Net for digits. ``dim`` /
            ``in_channels`` and ``num_classes`` are filled in from the data.
        class_conditional: train with labels (digits) and label dropout ``p_uncond``.
        clusters: ``k > 0`` trains with the cluster of each example as its label instead
            (:func:`scoresde.data.cluster_labels` seeded by ``seed``; no supervision, any data set), dropped with
            ``p_uncond`` like a class label: a cluster-conditional model (Bao et al. 2022's self-conditioned
            diffusion models, Adaloglou et al. 2024). Sample it unconditionally by drawing each sample's cluster
            from the training frequencies (:func:`scoresde.train.draw_labels`, ``scoresde sample --label
            prior``); the null label is the plain unconditional model. ``0``: off.
        cluster_method: how the clusters are found: "kmeans" on the pixels (the default), or "spectral" on their
            nearest-neighbour graph (:func:`scoresde.data.spectral_labels`), whose clusters agree better with
            the digit classes at the same ``k``.
        augment: the probability of each of EDM's non-leaking augmentations of a training image (a flip, quarter
            turns, a translation; :mod:`scoresde.augment`, Karras et al. 2022), image data only. The U-Net is
            conditioned on what was done (``augment_dim``) and sampled as not augmented. ``0``: off.
        prediction: what the network predicts: "v" (the default), "eps", "x0", or "flow" (the velocity
            ``eps - x0`` of flow matching, for ``sde={"name": "flow"}``). v prediction works with every
            sampler: with eps prediction a 2-D MLP under-predicts eps at the prior's tails and deterministic
            samplers fling those samples out (to |x| ~ 100 after 6000 steps, measured); with v,
            eps = alpha v + sigma x tends to x at T whatever the network says.
        sde: ``{"name": "vp" | "subvp" | "ve" | "flow", **kwargs}``; default the linear VP SDE (beta 0.1 to 20).
        t_sampler, t_eps, weighting: see :mod:`scoresde.loss`; ``p_mean``, ``p_std``: the lognormal sampler's
            ``(P_mean, P_std)``; ``logit_mean``, ``logit_std``: the logit-normal sampler's ``(m, s)``;
            ``snr_gamma``: gamma of the min-SNR weighting.
        steps, batch_size, lr, weight_decay, warmup, grad_clip: the optimisation (AdamW).
        lr_schedule, lr_min: after the warm-up, "constant" keeps ``lr``; "cosine" decays it to ``lr_min * lr``
            at the last step (:func:`scoresde.train.learning_rate`).
        ema_schedule, ema_decay, ema_power: the EMA of the weights (:func:`scoresde.train.ema_decay_at`).
        seed: seeds the weights, the data order and all noise.
        ckpt_every, log_every: checkpoint and progress-bar cadence in steps (a checkpoint is also written at
            the end).
        plots: write ``loss.png`` and ``samples.png`` at every checkpoint (:mod:`scoresde.train.monitor`).
        out: output directory (checkpoint and ``config.json``).
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "float32", or "bfloat16": the network's forward pass under ``torch.autocast`` in bfloat16 (its
            matrix products and convolutions), with the weights, the optimiser, the loss and the backward
            pass's accumulation in float32 (:mod:`scoresde.precision`); no loss scaling is needed for bfloat16.
    """

    data: str = "moons"
    n_train: int = 10_000
    data_seed: int = 0
    model: dict = field(default_factory=dict)
    class_conditional: bool = False
    clusters: int = 0
    cluster_method: str = "kmeans"
    prediction: str = "v"
    sde: dict = field(default_factory=lambda: {"name": "vp"})
    t_sampler: str = "lognormal"
    t_eps: float = DEFAULT_T_EPS
    weighting: str = "unit"
    p_mean: float = DEFAULT_LOGNORMAL[0]
    p_std: float = DEFAULT_LOGNORMAL[1]
    logit_mean: float = DEFAULT_LOGIT_NORMAL[0]
    logit_std: float = DEFAULT_LOGIT_NORMAL[1]
    snr_gamma: float = DEFAULT_SNR_GAMMA
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100
    lr_schedule: str = "cosine"
    lr_min: float = 0.01
    grad_clip: float = 1.0
    ema_schedule: str = "power"
    ema_decay: float = 0.9999
    ema_power: float = 6.94
    p_uncond: float = 0.1
    augment: float = 0.0
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 20
    plots: bool = True
    out: str = "runs/default"
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self):
        where = "TrainConfig"
        check_choice(where, "data", self.data, data_mod.DATASETS)
        for name, low in (
            ("n_train", 1),
            ("data_seed", 0),
            ("steps", 1),
            ("batch_size", 1),
            ("warmup", 0),
            ("seed", 0),
            ("clusters", 0),
            ("ckpt_every", 1),
            ("log_every", 1),
        ):
            check_int(where, name, getattr(self, name), ge=low)
        check_number(where, "lr", self.lr, gt=0)
        check_number(where, "weight_decay", self.weight_decay, ge=0)
        check_number(where, "grad_clip", self.grad_clip, ge=0, hint="0: no clipping")
        check_number(where, "ema_decay", self.ema_decay, ge=0, le=1)
        check_number(where, "ema_power", self.ema_power, ge=0)
        check_number(where, "p_uncond", self.p_uncond, ge=0, lt=1)
        check_number(where, "augment", self.augment, ge=0, le=1, hint="a probability; 0: off")
        check_number(where, "t_eps", self.t_eps, gt=0, lt=1)
        check_number(where, "p_mean", self.p_mean)
        check_number(where, "p_std", self.p_std, gt=0)
        check_number(where, "logit_mean", self.logit_mean)
        check_number(where, "logit_std", self.logit_std, gt=0)
        check_number(where, "snr_gamma", self.snr_gamma, gt=0)
        check_number(where, "lr_min", self.lr_min, ge=0, le=1, hint="a fraction of lr")
        check_choice(where, "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice(where, "prediction", self.prediction, PREDICTIONS)
        check_choice(where, "t_sampler", self.t_sampler, T_SAMPLERS)
        check_choice(where, "weighting", self.weighting, WEIGHTINGS)
        check_choice(where, "ema_schedule", self.ema_schedule, EMA_SCHEDULES)
        check_choice(where, "dtype", self.dtype, TRAIN_DTYPES)
        check_choice(where, "cluster_method", self.cluster_method, data_mod.CLUSTER_METHODS)
        check_bool(where, "class_conditional", self.class_conditional)
        check_bool(where, "plots", self.plots)

        def bad(name, want):
            raise ValueError(f"{where}: {name} must be {want}, got {getattr(self, name)!r}")

        if self.class_conditional and data_mod.dataset_info(self.data)["num_classes"] is None:
            bad("class_conditional", f"False for {self.data!r}, which has no labels")
        if self.clusters:
            if self.class_conditional:
                bad("clusters", "0 for a class-conditional run (both give the network its labels)")
            digits = self.data == "digits"
            n = len(data_mod.digit_split_indices("train", seed=self.data_seed)) if digits else self.n_train
            if self.clusters > n:
                bad("clusters", f"at most the {n} training examples")
        if not isinstance(self.model, dict) or (self.model and self.model.get("arch") not in ("mlp", "unet")):
            bad("model", "a dict with 'arch' in ('mlp', 'unet') (or empty for the data's default)")
        if self.augment and (len(data_mod.dataset_info(self.data)["shape"]) != 3 or self.model.get("arch") == "mlp"):
            bad("augment", f"0 for {self.data!r} with this model (the augmentations are for images and the U-Net)")
        if not isinstance(self.sde, dict) or self.sde.get("name") not in SDES:
            bad("sde", f"a dict with 'name' in {tuple(SDES)}")
        for name in ("out", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                bad(name, "a non-empty string")

    # --- conversions -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict; unknown keys raise ``ValueError`` naming them and the known ones."""
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a mapping, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known keys: {', '.join(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a ``.json`` or ``.toml`` file (TOML needs Python >= 3.11's ``tomllib``)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".json":
            try:
                d = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"config file {path} is not valid JSON: {err}") from err
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError as err:  # Python 3.10
                raise ValueError(f"reading {path} needs Python >= 3.11 (tomllib); use a .json config") from err
            try:
                d = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"config file {path} is not valid TOML: {err}") from err
        else:
            raise ValueError(f"config file {path}: expected a .json or .toml file")
        return cls.from_dict(d)

    @classmethod
    def from_saved(cls, path: str | Path) -> TrainConfig:
        """Read a run's ``config.json`` as the run meant it (:func:`upgrade_saved_config`)."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read the saved config {path}: {err}") from err
        return cls.from_dict(upgrade_saved_config(d))

    def save(self, path: str | Path) -> None:
        """Write the config as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def model_config(self) -> dict:
        """The full model config: the data's default architecture, with its shape and classes filled in."""
        info = data_mod.dataset_info(self.data)
        shape = info["shape"]
        cfg = dict(self.model) or (dict(TOY_MLP) if len(shape) == 1 else {"arch": "unet"})
        if cfg["arch"] == "mlp":
            cfg.setdefault("dim", math.prod(shape))
        elif len(shape) != 3:
            raise ValueError(f"TrainConfig: the U-Net needs image data (C, H, W); {self.data!r} has shape {shape}")
        else:
            cfg.setdefault("in_channels", shape[0])
        cfg["num_classes"] = self.clusters or (info["num_classes"] if self.class_conditional else None)
        if self.augment:
            cfg["augment_dim"] = AUGMENT_DIM
        return cfg
