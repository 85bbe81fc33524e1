"""A trained network as a score: load its checkpoint, wrap labels and guidance, pick the parameterisation.

``score, sde, config, model = load_score("runs/digits", y=3, guidance=2.0)`` gives a score for
:func:`scoresde.sample`; :func:`make_score` does the same for a network already in memory;
:func:`draw_labels` draws labels from the frequencies a labelled model was trained on (how a cluster-conditional
model samples its data's law).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import data as data_mod
from ..checkpoint import CheckpointError, load_checkpoint
from ..checks import check_choice, check_int, check_number, is_int
from ..models import build_model
from ..noise import LABEL_STREAM, NoiseSource
from ..param import DataScore, EpsilonScore, FlowVelocityScore, Score, VScore
from ..sde import SDE
from .config import TrainConfig, build_sde, upgrade_saved_config
from .shipped import is_export, resolve_checkpoint

__all__ = [
    "ConditionalModel",
    "AutoGuided",
    "make_score",
    "load_score",
    "load_guide",
    "load_network",
    "draw_labels",
    "label_counts",
    "SCORES",
]

SCORES = {"eps": EpsilonScore, "x0": DataScore, "v": VScore, "flow": FlowVelocityScore}


class ConditionalModel:
    """``model(x, t)`` for a class-conditional network: fixed labels and optional classifier-free guidance.

    ``out = (1 + w) m(x, t, y) - w m(x, t, null)`` (Ho & Salimans 2022, eq. 6), in one network call on a
    doubled batch when ``w != 0``. Combining outputs is the same as combining eps predictions for every
    parameterisation here, because eps is affine in the output with coefficients that depend only on
    ``(x, alpha, sigma)``: ``eps = a out + b x`` with ``(1 + w) - w = 1``. ``y=None`` (or the null class) is the
    unconditional model.

    ``interval=(lo, hi)`` applies the guidance only at noise levels ``lo < sigma / alpha <= hi`` and samples the
    conditional model alone elsewhere (Kynkaenniemi et al. 2024, "Applying guidance in a limited interval"):
    guidance at high noise pushes samples towards the class's mode and costs diversity, at low noise it does
    little; outside the interval a step costs one network call on the batch, not two.

    Args:
        model: ``model(x, t, y)`` with labels in ``[0, num_classes]`` (``num_classes`` = null class).
        y: an int (every sample) or a ``(batch,)`` long tensor; ``None`` for the null class.
        guidance: ``w >= 0``.
        interval: ``(lo, hi)`` with ``0 <= lo < hi`` in ``sigma / alpha`` (``hi`` may be ``inf``); ``None``: every
            level. Needs ``sde`` to map ``t`` to ``sigma / alpha``.
        sde: the SDE the network was trained on (only for ``interval``).
    """

    def __init__(
        self,
        model,
        num_classes: int,
        y: int | Tensor | None = None,
        guidance: float = 0.0,
        interval: tuple[float, float] | None = None,
        sde: SDE | None = None,
    ):
        where = "ConditionalModel"
        check_int(where, "num_classes", num_classes, ge=1)
        check_number(where, "guidance", guidance, ge=0)
        if y is not None and not isinstance(y, Tensor) and not (is_int(y) and 0 <= y <= num_classes):
            raise ValueError(f"{where}: y must be None, an int in [0, {num_classes}] or a tensor, got {y!r}")
        self.model, self.num_classes, self.y, self.guidance = model, num_classes, y, float(guidance)
        self.interval, self.sde = check_interval(interval), sde
        if self.interval is not None and sde is None:
            raise ValueError(f"{where}: a guidance interval is in sigma / alpha and needs the model's sde")

    def labels(self, batch: int, device) -> Tensor:
        if self.y is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        if isinstance(self.y, Tensor):
            if self.y.shape != (batch,):
                raise ValueError(f"ConditionalModel: labels of shape {tuple(self.y.shape)}, batch is {batch}")
            return self.y.to(device=device, dtype=torch.long)
        return torch.full((batch,), int(self.y), dtype=torch.long, device=device)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        y = self.labels(x.shape[0], x.device)
        if self.guidance == 0.0:
            return self.model(x, t, y)
        inside = guided_rows(self.interval, self.sde, t)
        if inside is False:
            return self.model(x, t, y)
        null = torch.full_like(y, self.num_classes)
        cond, uncond = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        return _extrapolate(cond, uncond, self.guidance, inside)


class AutoGuided:
    """``model(x, t)`` guided by a weaker version of itself: ``out = (1 + w) m(x, t) - w g(x, t)`` (Karras et al.
    2024, "Guiding a diffusion model with a bad version of itself", arXiv 2406.02507, eq. 1 with their ``w`` our
    ``1 + w``).

    The guide ``g`` is the same kind of network, trained on the same data with the same conditioning, but smaller
    and/or trained for a fraction of the steps. Its errors are those of the main model, only larger, so stepping
    away from it corrects the main model's errors: it sharpens where the model is vague without pulling every
    sample towards one mode, as classifier-free guidance does, and it guides unconditional models too. ``model``
    and ``guide`` are ``(x, t) -> output`` callables with the same parameterisation (wrap labels in
    :class:`ConditionalModel` with ``guidance=0`` first); outputs combine as eps predictions do (see
    :class:`ConditionalModel`). Two network calls a step, one of each; ``interval`` as in :class:`ConditionalModel`.
    """

    def __init__(
        self, model, guide, guidance: float, interval: tuple[float, float] | None = None, sde: SDE | None = None
    ):
        check_number("AutoGuided", "guidance", guidance, ge=0)
        self.model, self.guide, self.guidance = model, guide, float(guidance)
        self.interval, self.sde = check_interval(interval), sde
        if self.interval is not None and sde is None:
            raise ValueError("AutoGuided: a guidance interval is in sigma / alpha and needs the model's sde")

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        inside = False if self.guidance == 0.0 else guided_rows(self.interval, self.sde, t)
        if inside is False:
            return self.model(x, t)
        return _extrapolate(self.model(x, t), self.guide(x, t), self.guidance, inside)


def guided_rows(interval: tuple[float, float] | None, sde: SDE | None, t: Tensor) -> Tensor | bool | None:
    """Which samples a guidance ``interval`` in ``sigma / alpha`` guides at times ``t``: ``None`` for all of them
    (or no interval), ``False`` for none, else a boolean mask (samples at different times)."""
    if interval is None:
        return None
    level = sde.marginal_std(t) / sde.alpha(t)
    inside = (level > interval[0]) & (level <= interval[1])
    guided = int(inside.sum())  # one host read; with one time for the batch (every sampler) 0 or all
    if guided == 0:
        return False
    return None if guided == inside.numel() else inside


def _extrapolate(good: Tensor, bad: Tensor, w: float, inside: Tensor | None) -> Tensor:
    """``good + w (good - bad)``, on the rows of ``inside`` only when it is a mask."""
    if inside is None:
        return good + w * (good - bad)
    weight = w * inside.to(good.dtype).view(-1, *[1] * (good.ndim - 1))
    return good + weight * (good - bad)


def check_interval(interval) -> tuple[float, float] | None:
    """A guidance interval ``(lo, hi)`` in ``sigma / alpha`` as two floats, or ``None``; a clear error otherwise."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance interval must be two numbers (lo, hi), got {interval!r}") from None
    if not (0 <= lo < hi) or math.isnan(hi):
        raise ValueError(f"guidance interval must satisfy 0 <= lo < hi in sigma / alpha, got ({lo:g}, {hi:g})")
    return lo, hi


def make_score(
    model: nn.Module,
    sde: SDE,
    prediction: str,
    y: int | Tensor | None = None,
    guidance: float = 0.0,
    guidance_interval: tuple[float, float] | None = None,
    guide: nn.Module | None = None,
) -> Score:
    """The score object of a trained network: :class:`EpsilonScore`, :class:`DataScore` or :class:`VScore` by
    ``prediction``, around a :class:`ConditionalModel` when the network is class-conditional.

    With a ``guide`` network (the same parameterisation and labels, a weaker model: :class:`AutoGuided`),
    ``guidance`` is the autoguidance weight: both networks see the labels ``y`` and the guide replaces the null
    label of classifier-free guidance."""
    check_choice("", "prediction", prediction, SCORES)
    num_classes = getattr(model, "num_classes", None)
    if guide is not None:
        if getattr(guide, "num_classes", None) != num_classes:
            raise ValueError(
                f"the guide must take the model's labels: {getattr(guide, 'num_classes', None)} labels there, "
                f"{num_classes} here (None: unconditional)"
            )
        if num_classes is None:
            if y is not None:
                raise ValueError("labels given for an unconditional model")
            return SCORES[prediction](AutoGuided(model, guide, guidance, guidance_interval, sde), sde)
        good, bad = ConditionalModel(model, num_classes, y), ConditionalModel(guide, num_classes, y)
        return SCORES[prediction](AutoGuided(good, bad, guidance, guidance_interval, sde), sde)
    if num_classes is None:
        if y is not None or guidance or guidance_interval is not None:
            raise ValueError("labels or guidance given for an unconditional model")
        return SCORES[prediction](model, sde)
    cond = ConditionalModel(model, num_classes, y, guidance, guidance_interval, sde)
    return SCORES[prediction](cond, sde)


def load_score(
    directory: str | Path,
    ema: bool = True,
    *,
    y: int | Tensor | None = None,
    guidance: float = 0.0,
    guidance_interval: tuple[float, float] | None = None,
    guide: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Score, SDE, TrainConfig, nn.Module]:
    """Load a trained model from its checkpoint directory: ``(score, sde, config, model)``.

    ``ema`` picks the EMA weights (else the raw ones); the model is in eval mode on ``device`` with frozen
    parameters; ``y``, ``guidance`` and ``guidance_interval`` go to :class:`ConditionalModel` for a
    class-conditional model. ``guide``: the checkpoint directory of a weaker model to guide with instead
    (:class:`AutoGuided`; ``guidance`` is then its weight), checked by :func:`load_guide`.
    """
    cfg, model, ckpt = load_network(directory, ema, device)
    sde = build_sde(cfg.sde)
    weak = None if guide is None else _guide_for(guide, cfg, ckpt, directory, ema, device)
    score = make_score(model, sde, cfg.prediction, y, guidance, guidance_interval, guide=weak)
    return score, sde, cfg, model


def load_guide(
    directory: str | Path, main: str | Path, ema: bool = True, device: str | torch.device = "cpu"
) -> nn.Module:
    """The network of checkpoint ``directory`` as an autoguidance guide for the model of checkpoint ``main``
    (:class:`AutoGuided`): refused with a clear error unless both were trained on the same data, SDE,
    parameterisation and labels (the same classes, or the same cluster of every example), since the guidance
    extrapolates from one output to the other and would otherwise mix two different things."""
    mckpt = load_checkpoint(main)
    return _guide_for(directory, TrainConfig.from_dict(upgrade_saved_config(mckpt.config)), mckpt, main, ema, device)


def _guide_for(directory, mcfg: TrainConfig, mckpt, main, ema: bool, device) -> nn.Module:
    gcfg, guide, gckpt = load_network(directory, ema, device)
    for name in ("data", "n_train", "data_seed", "sde", "prediction", "class_conditional", "clusters"):
        if getattr(gcfg, name) != getattr(mcfg, name):
            raise ValueError(
                f"the guide {directory} was trained with {name}={getattr(gcfg, name)!r}, the model {main} with "
                f"{getattr(mcfg, name)!r}: a guide must share the model's data, SDE, prediction and labels"
            )
    if mcfg.clusters and not torch.equal(
        torch.as_tensor(gckpt.extra["cluster_labels"]), torch.as_tensor(mckpt.extra["cluster_labels"])
    ):
        raise ValueError(f"the guide {directory} numbers its clusters differently from the model {main}")
    return guide


def load_network(directory: str | Path, ema: bool, device) -> tuple[TrainConfig, nn.Module, object]:
    """``(config, network, checkpoint)`` of a checkpoint directory or shipped name: eval mode on ``device``, frozen
    (:func:`load_score` without the score, for a caller that also reads the checkpoint's other parts)."""
    ckpt = load_checkpoint(resolve_checkpoint(directory))
    try:
        cfg = TrainConfig.from_dict(upgrade_saved_config(ckpt.config))
    except ValueError as err:
        raise CheckpointError(f"{directory}: the stored training config is invalid: {err}") from err
    if ckpt.model_config is None:
        raise CheckpointError(f"{directory}: the checkpoint holds no model config")
    model = build_model(ckpt.model_config)
    export = is_export(ckpt)  # an export keeps the EMA weights as its model weights, in a dtype load_state_dict casts
    if export and not ema:
        raise CheckpointError(f"{directory}: an exported model holds its EMA weights only (use ema=True)")
    if ema and not export and ckpt.ema is None:
        raise CheckpointError(f"{directory}: the checkpoint holds no EMA weights (use ema=False)")
    try:
        model.load_state_dict(ckpt.ema if ema and not export else ckpt.model, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{directory}: weights do not fit the model: {err}") from err
    return cfg, model.to(device).eval().requires_grad_(False), ckpt


def draw_labels(source: str | Path | list[int] | Tensor, n: int, seed: int = 0, offset: int = 0) -> Tensor:
    """``n`` labels ``(n,)`` drawn from the label frequencies of a labelled model's training set: the unconditional
    law of a cluster-conditional model (``TrainConfig.clusters``) is ``sum_c p(c) p(x | c)``, so draw ``c`` with
    its training frequency, then sample the model with ``y = c``.

    ``source`` is a checkpoint directory (its ``label_counts``; a class-conditional checkpoint saved before they
    were kept gets its data's labels) or the counts themselves. Sample ``i``'s label is the inverse CDF of the
    frequencies at ``Phi(z_i)``, ``z_i`` the normal of :class:`scoresde.noise.NoiseSource` ``(seed, offset + i)`` on
    stream :data:`~scoresde.noise.LABEL_STREAM`: it depends only on ``(seed, offset + i)``, as a sampler's noise
    does, so labels and samples agree in any batch layout and under sharding (pass the same ``seed`` and
    ``offset`` as to :func:`scoresde.sample`)."""
    check_int("draw_labels", "n", n, ge=1)
    check_int("draw_labels", "offset", offset, ge=0)
    counts = source if isinstance(source, (list, tuple, Tensor)) else label_counts(source)
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0 or bool((counts < 0).any()) or float(counts.sum()) <= 0:
        raise ValueError("draw_labels: label counts must be a non-empty list of counts >= 0 with a positive sum")
    cdf = counts.cumsum(0) / counts.sum()
    u = torch.special.ndtr(NoiseSource(seed, offset).randn((n, 1), stream=LABEL_STREAM).double().flatten())
    return torch.searchsorted(cdf, u, right=True).clamp_(max=counts.numel() - 1)


def label_counts(directory: str | Path) -> list[int]:
    """How often each label occurs in a labelled checkpoint's training set (what :func:`draw_labels` samples): its
    stored ``label_counts``, or for a class-conditional checkpoint saved before they were kept, its data's labels."""
    ckpt = load_checkpoint(resolve_checkpoint(directory))
    if "label_counts" in ckpt.extra:
        return ckpt.extra["label_counts"]
    cfg = TrainConfig.from_dict(upgrade_saved_config(ckpt.config))
    if not cfg.class_conditional:
        raise ValueError(f"draw_labels: {directory} holds an unconditional model, which takes no labels")
    _, y = data_mod.get_dataset(cfg.data, "train", n=cfg.n_train, seed=cfg.data_seed)
    return torch.bincount(y).tolist()


def label_sampler(label: str | int | None, checkpoint, num_classes: int | None, seed: int):
    """For ``scoresde sample --label``: ``labels(start, stop)``, the labels of samples ``start .. stop - 1``, or
    ``None`` without a label. An int ``c`` in ``[0, num_classes)`` labels every sample; ``"all"`` cycles through the
    classes by sample index; ``"prior"`` draws each sample's from the training frequencies (:func:`draw_labels`
    keyed on ``seed`` and the sample's index, so a shard draws what the whole run would). The label is checked,
    and the checkpoint's counts read, once here."""
    if label is None:
        return lambda start, stop: None
    if num_classes is None:
        raise ValueError(f"--label {label}: {checkpoint} holds an unconditional model, which takes no labels")
    if label == "all":
        return lambda start, stop: torch.arange(start, stop) % num_classes
    if label == "prior":
        counts = label_counts(checkpoint)
        return lambda start, stop: (
            draw_labels(counts, stop - start, seed, start) if stop > start else torch.zeros(0, dtype=torch.long)
        )
    c = int(label) if str(label).isdigit() else -1
    if not 0 <= c < num_classes:
        raise ValueError(f"--label must be a class 0-{num_classes - 1}, 'all' or 'prior', got {label!r}")
    return lambda start, stop: torch.full((stop - start,), c)
