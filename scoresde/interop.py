"""Models trained elsewhere as scores on our SDEs: a diffusers model with its scheduler.

A diffusers DDPM-family scheduler describes a discrete chain ``alpha_bar_i = prod_{j<=i} (1 - beta_j)``,
``i = 0..n-1``; :class:`~scoresde.sde.DiscreteVPSDE` is that chain in continuous time, with timestep ``i`` at
``t = (i + 1) / n`` (:meth:`~scoresde.sde.SDE.timestep_to_t`). The model is called at the timestep index
``t n - 1`` (fractional between knots, as in DPM-Solver's treatment of discrete-time models), and its
``prediction_type`` picks the conversion: ``"epsilon"`` -> :class:`~scoresde.param.EpsilonScore`,
``"v_prediction"`` -> :class:`~scoresde.param.VScore`, ``"sample"`` -> :class:`~scoresde.param.DataScore`.

A flow-matching scheduler (``FlowMatchEulerDiscreteScheduler``, ``FlowMatchHeunDiscreteScheduler``, or a
DPM-Solver / UniPC config with ``use_flow_sigmas=True``) describes the rectified-flow path ``x = (1 - s) x_0 + s eps``
at the shifted noise level ``s = shift t / (1 + (shift - 1) t)``: :class:`~scoresde.sde.FlowSDE` with its ``shift``
(``flow_shift``), a model predicting the velocity ``eps - x_0`` (``flow_prediction``) wrapped in
:class:`~scoresde.param.FlowVelocityScore`, called at diffusers' timestep ``s * num_train_timesteps``.

diffusers itself is never imported here unless a scheduler is given only as a config without betas (then its
``DDPMScheduler`` computes them); a model and a scheduler are used through their attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .param import DataScore, EpsilonScore, FlowVelocityScore, Score, VScore
from .sde import DiscreteVPSDE, FlowSDE

__all__ = ["from_diffusers", "diffusers_sde", "flow_sde", "is_flow_scheduler"]

_PARAM = {"epsilon": EpsilonScore, "v_prediction": VScore, "sample": DataScore}
_SNAP = 1e-6  # a timestep index this close to an integer is passed as that integer (float rounding of t n - 1)


def _config(scheduler: Any) -> Mapping:
    config = getattr(scheduler, "config", scheduler)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"from_diffusers: scheduler must be a diffusers scheduler or its config (a mapping), got "
            f"{type(scheduler).__name__}"
        )
    return config


def _alphas_cumprod(scheduler: Any, config: Mapping) -> Tensor:
    """The chain's ``alpha_bar``, float64, from the scheduler's own tensors (what its loop uses), else its config."""
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None and getattr(scheduler, "betas", None) is not None:
        ac = torch.cumprod(1 - torch.as_tensor(scheduler.betas, dtype=torch.float64), 0)
    if ac is None and config.get("trained_betas") is not None:
        ac = torch.cumprod(1 - torch.as_tensor(config["trained_betas"], dtype=torch.float64), 0)
    if ac is None and "beta_schedule" in config:
        try:
            from diffusers import DDPMScheduler
        except ImportError as err:
            raise ImportError(
                "from_diffusers: this scheduler config names a beta_schedule but has no betas; computing them "
                "needs diffusers (pip install 'scoresde[peers]'), or pass the scheduler object"
            ) from err
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "rescale_betas_zero_snr")
        ac = DDPMScheduler(**{k: config[k] for k in keys if k in config}).alphas_cumprod
    if ac is None:
        raise ValueError(
            f"from_diffusers: {type(scheduler).__name__} has no betas or alphas_cumprod (nor a beta_schedule in its "
            "config): it does not describe a discrete variance-preserving (DDPM) chain, so it has no DiscreteVPSDE"
        )
    return torch.as_tensor(ac, dtype=torch.float64).detach().cpu().flatten()


def diffusers_sde(scheduler: Any) -> DiscreteVPSDE:
    """The :class:`~scoresde.sde.DiscreteVPSDE` of a diffusers scheduler's training chain.

    The betas are recovered from the scheduler's ``alphas_cumprod`` (``beta_i = 1 - abar_i / abar_{i-1}``) so that
    at every timestep our ``alpha_bar`` equals the one its own loop uses, up to float64 rounding.
    """
    config = _config(scheduler)
    ac = _alphas_cumprod(scheduler, config)
    betas = 1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    if not ((betas > 0) & (betas < 1)).all():
        raise ValueError(
            "from_diffusers: the scheduler's betas must lie in (0, 1); a zero-terminal-SNR chain "
            "(rescale_betas_zero_snr=True, alpha_bar = 0 at the last timestep) has an infinite log-SNR there and "
            "is not supported"
        )
    return DiscreteVPSDE(betas)


def _is_flow_match(scheduler: Any, config: Mapping) -> bool:
    """A FlowMatch* scheduler (object or saved config): its loop takes the model output as the velocity."""
    return str(config.get("_class_name", type(scheduler).__name__)).startswith("FlowMatch")


def _call(model: Callable, x: Tensor, timestep: Tensor) -> Tensor:
    """One call of a diffusers-style model: the input in the model's parameter dtype (a ModelMixin's ``dtype``), the
    output unwrapped from ``.sample`` or a tuple's first element."""
    dtype = getattr(model, "dtype", None)
    out = model(x if not isinstance(dtype, torch.dtype) else x.to(dtype), timestep)
    out = getattr(out, "sample", out)
    return out[0] if isinstance(out, tuple) else out


def is_flow_scheduler(scheduler: Any) -> bool:
    """Whether a diffusers scheduler (or config) describes a flow-matching path rather than a DDPM chain."""
    config = _config(scheduler)
    return (
        _is_flow_match(scheduler, config)
        or bool(config.get("use_flow_sigmas"))
        or (config.get("prediction_type") == "flow_prediction")
    )


def flow_sde(scheduler: Any, *, mu: float | None = None, T: float | None = None) -> FlowSDE:
    """The :class:`~scoresde.sde.FlowSDE` of a flow-matching scheduler: its ``shift`` (``flow_shift``), or
    ``exp(mu)`` for a scheduler with ``use_dynamic_shifting`` (the resolution-dependent shift, given per call)."""
    config = _config(scheduler)
    if config.get("use_dynamic_shifting") or mu is not None:
        if mu is None:
            raise ValueError(
                "from_diffusers: the scheduler uses dynamic (resolution-dependent) shifting: pass mu=, the value "
                "its pipeline gives set_timesteps"
            )
        if config.get("time_shift_type", "exponential") != "exponential":
            raise ValueError("from_diffusers: only the exponential time shift (exp(mu)) is a FlowSDE shift")
        shift = float(torch.tensor(float(mu), dtype=torch.float64).exp())
    else:
        shift = float(config.get("shift", config.get("flow_shift", 1.0)))
    for key in ("shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas"):
        if config.get(key):
            raise ValueError(
                f"from_diffusers: {key} changes the scheduler's inference sigmas, not its path; pass its sigmas as "
                f"a grid instead (FlowSDE.unshifted(sigmas)) with a scheduler config without {key}"
            )
    return FlowSDE(shift=shift, T=T)


def _flow_score(model: Callable, scheduler: Any, config: Mapping, mu: float | None, T: float | None) -> Score:
    pred = config.get("prediction_type", "flow_prediction")
    if _is_flow_match(scheduler, config):
        pred = "flow_prediction"  # its loop takes the model output as the velocity, whatever else the config says
    if pred != "flow_prediction":
        raise ValueError(
            f"from_diffusers: a flow-sigma scheduler with prediction_type {pred!r}: only 'flow_prediction' "
            "(the velocity eps - x0) is defined on the flow path"
        )
    sde = flow_sde(scheduler, mu=mu, T=T)
    n = int(config.get("num_train_timesteps", 1000))

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        return _call(model, x, sde.shifted(t).to(t.dtype) * n).to(x.dtype)

    return FlowVelocityScore(velocity, sde)


def from_diffusers(
    model: Callable,
    scheduler: Any,
    *,
    ignore_clip_sample: bool = False,
    mu: float | None = None,
    T: float | None = None,
) -> Score:
    """A diffusers model and its scheduler as a :class:`~scoresde.param.Score` on a ``DiscreteVPSDE``.

    Args:
        model: e.g. a ``diffusers.UNet2DModel``, or any callable ``model(sample, timestep)`` returning a tensor
            or an object with ``.sample`` (a tuple's first element is taken too). A model that also predicts
            the variance (``variance_type`` ``"learned"``/``"learned_range"``, twice the channels) has its
            first half used.
        scheduler: the scheduler it was trained with (any DDPM-family scheduler: DDPM, DDIM, DPMSolverMultistep,
            Euler, ...), or its config; its betas give the SDE and ``prediction_type`` the parameterisation.
        ignore_clip_sample: diffusers' DDPM/DDIM loops clip the data prediction to ``[-clip_sample_range,
            clip_sample_range]`` at every step when ``clip_sample=True`` (or threshold it when
            ``thresholding=True``); our solvers integrate the unclipped model, so such a config is refused
            unless you accept the difference with ``True``. For data in ``[-1, 1]`` the difference is small
            once the model is good; for other data, clipping was wrong anyway.

        mu, T: flow-matching schedulers only: ``mu`` of a scheduler with ``use_dynamic_shifting`` (shift
            ``exp(mu)``), and the start time of the :class:`~scoresde.sde.FlowSDE` (default its ``1 - 2^-10``;
            ``T=1`` starts from pure noise as diffusers does, for ``ddim``, which is then its Euler loop).

    Returns:
        The score; its SDE is ``score.sde``. For a DDPM chain, the scheduler's timestep ``i`` is at time
        ``score.sde.timestep_to_t(i, score.sde.n) = (i + 1) / n``, so its inference grid is
        ``score.sde.timestep_to_t(scheduler.timesteps, score.sde.n)``. For a flow path the model is called at
        ``sigma * num_train_timesteps``, and a scheduler's ``sigmas`` are the times ``score.sde.unshifted(sigmas)``.
    """
    config = _config(scheduler)
    if not callable(model):
        raise TypeError(f"from_diffusers: model must be callable as model(sample, t), got {type(model).__name__}")
    if is_flow_scheduler(scheduler):
        return _flow_score(model, scheduler, config, mu, T)
    if mu is not None or T is not None:
        raise ValueError("from_diffusers: mu and T apply to flow-matching schedulers only")
    pred = config.get("prediction_type", "epsilon")
    if pred not in _PARAM:
        raise ValueError(
            f"from_diffusers: prediction_type {pred!r} cannot be mapped; known: {', '.join(sorted(_PARAM))}"
        )
    for key, what in (("clip_sample", "clips"), ("thresholding", "thresholds")):
        if config.get(key) and not ignore_clip_sample:
            raise ValueError(
                f"from_diffusers: the scheduler has {key}=True: diffusers {what} the predicted x0 at every step, "
                "which a continuous-time solver does not do; pass ignore_clip_sample=True to sample without it, "
                f"or a scheduler with {key}=False"
            )
    sde = diffusers_sde(scheduler)
    n = sde.n
    learned = config.get("variance_type") in ("learned", "learned_range")

    def continuous(x: Tensor, t: Tensor) -> Tensor:
        idx = t * n - 1  # timestep_to_t's inverse, t_to_timestep
        near = idx.round()
        idx = torch.where((idx - near).abs() < _SNAP, near, idx)
        out = _call(model, x, idx)
        if learned and out.ndim > 1 and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        return out.to(x.dtype)

    return _PARAM[pred](continuous, sde)
