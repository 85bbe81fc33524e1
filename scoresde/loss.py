"""Denoising training losses: eps-MSE (Ho et al. 2020) and its x0 and v variants, with four samplers for t.

With ``x_t = alpha(t) x_0 + sigma(t) eps`` drawn by :meth:`scoresde.sde.SDE.perturb`, every loss here is a
Monte Carlo estimate of one objective::

    L = 1/(T - t_eps) int_{t_eps}^{T} w(t) E_{x_0, eps} [ mean_i (model(x_t, t)_i - target_i)^2 ] dt

with ``target = eps`` (:func:`eps_mse`, Ho et al. 2020, eq. 14), ``x_0`` (:func:`x0_mse`),
``v = alpha eps - sigma x_0`` (:func:`v_mse`, Salimans & Ho 2022, appendix D) or the rectified-flow velocity
``u = eps - x_0`` (:func:`flow_mse`, the conditional flow-matching loss of Lipman et al. 2023 and Liu et al. 2023
on :class:`~scoresde.sde.FlowSDE`, where ``dx_t / dt = u`` at shift 1). The squared error is
averaged over the elements of one sample and the batch. Its minimiser at each ``t`` is the conditional mean
of the target given ``x_t``: ``E[eps | x_t] = -sigma grad log p_t`` (Vincent 2011), so a trained eps model
plugs into :class:`scoresde.param.EpsilonScore` (x0: ``DataScore``, v: ``VScore``, flow: ``FlowVelocityScore``).

The weight ``w(t)``:

- ``"unit"``: ``w = 1``, the "simple" loss of Ho et al. 2020;
- ``"likelihood"``: ``w = g(t)^2 / sigma(t)^2 = -d lambda / dt`` (``lambda`` = log-SNR). For an eps model,
  ``1/2 (T - t_eps) L`` is then the diffusion term of the negative ELBO of Kingma et al. 2021 (VDM, continuous time),
  equivalently Song et al. 2021's likelihood weighting ``g^2`` of the score-matching loss (Song, Durkan,
  Murray & Ermon 2021, Theorem 1), since ``|s - grad log p|^2 = |eps_hat - eps|^2 / sigma^2``;
- ``"min-snr"``: the min-SNR-gamma weighting of Hang et al. 2023: the error of the implied data prediction
  ``x0_hat`` weighted by ``min(SNR, gamma)``, ``SNR = alpha^2 / sigma^2``, written for the target at hand:
  ``w = min(SNR, gamma) (d x0 / d target)^2``, i.e. ``min(SNR, gamma) / SNR`` for eps,
  ``min(SNR, gamma)`` for x0, ``min(SNR, gamma) sigma^2 / (alpha^2 + sigma^2)^2`` for v
  (``min(SNR, gamma) / (SNR + 1)`` on a VP SDE) and ``min(SNR, gamma) sigma^2 / (alpha + sigma)^2`` for the flow
  velocity. It caps the weight of the nearly clean, easy levels.

The first three ways to draw ``t`` change only the variance of the estimate, never the objective (they are
unbiased); the fourth is a choice of objective:

- ``"uniform"``: ``t = t_eps + (T - t_eps) u``, ``u ~ U(0, 1)`` i.i.d.;
- ``"stratified"``: the low-discrepancy sampler of Kingma et al. 2021 (VDM):
  ``u_i = (u_0 + i / B) mod 1`` for one ``u_0 ~ U(0, 1)``, so each of the ``B`` strata
  ``[t_eps + i (T - t_eps)/B, t_eps + (i + 1)(T - t_eps)/B)`` holds exactly one ``t`` (in rotated order:
  pair them with a batch in random order);
- ``"importance"``: ``t`` with density ``q(t) = (g^2 / sigma^2) / (lambda(t_eps) - lambda(T))``, i.e.
  ``lambda(t)`` uniform, drawn exactly as ``t = t_from_log_snr(lambda)`` (the importance distribution of
  Song, Durkan, Murray & Ermon 2021), and each term weighted by ``1 / ((T - t_eps) q(t))``.
  With ``weighting="likelihood"`` that weight cancels ``w(t)`` exactly: every ``t`` counts the same;
- ``"lognormal"``: the noise levels of EDM (Karras et al. 2022, table 1): ``sigma / alpha = exp(P_mean + P_std
  z)``, ``z ~ N(0, 1)``, i.e. ``lambda = -2 (P_mean + P_std z)``, ``t = t_from_log_snr(lambda)`` clamped to
  ``[t_eps, T]``, with no importance weight: the level density becomes part of the weighting, so this changes
  the objective (towards the middle noise levels where the data's structure is decided). With ``prediction="v"``
  and unit weighting on a VP SDE and data of unit variance this is EDM's training exactly: EDM's
  preconditioning with ``sigma_data = 1`` gives ``c_in x_hat = x``, ``D = alpha x - sigma F`` (``F = v``) and
  its loss weight ``1 / c_out^2`` turns ``|D - x_0|^2`` into ``|F - v|^2``;
- ``"logit-normal"``: SD3's times (Esser et al. 2024, eq. 19): ``t = sigmoid(m + s z)``, ``z ~ N(0, 1)``, clamped to
  ``[t_eps, T]``, no importance weight (a choice of objective, like lognormal): on the flow path at shift 1 the
  noise level is ``t`` itself, and the default ``(m, s) = (0, 1)`` favours the middle levels.

The identity ``d lambda / dt = -g^2 / sigma^2`` holds for every SDE with linear drift here: ``lambda = log
alpha^2 - log sigma^2`` and ``d sigma^2 / dt = 2 f sigma^2 + g^2`` (Song et al. 2021, appendix B) give
``d lambda / dt = 2 f - (2 f sigma^2 + g^2) / sigma^2``.

``t_eps`` (default ``1e-5``, as Song et al. 2021 train every SDE) keeps ``sigma(t) > 0``: the score is
singular at ``t = 0``. Sampling usually stops later (``sde.t_min``, 1e-3 for VP).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .checks import check_choice, check_int, check_number
from .sde import SDE, append_dims

__all__ = [
    "PREDICTIONS",
    "T_SAMPLERS",
    "WEIGHTINGS",
    "DEFAULT_T_EPS",
    "sample_t",
    "denoising_loss",
    "eps_mse",
    "x0_mse",
    "v_mse",
    "flow_mse",
    "target",
    "min_snr_weight",
    "DEFAULT_LOGNORMAL",
    "DEFAULT_SNR_GAMMA",
    "DEFAULT_LOGIT_NORMAL",
]

PREDICTIONS = ("eps", "x0", "v", "flow")
T_SAMPLERS = ("uniform", "stratified", "importance", "lognormal", "logit-normal")
WEIGHTINGS = ("unit", "likelihood", "min-snr")
DEFAULT_T_EPS = 1e-5
DEFAULT_LOGNORMAL = (-1.2, 1.2)  # EDM's (P_mean, P_std) of log(sigma / alpha)
DEFAULT_SNR_GAMMA = 5.0  # Hang et al. 2023
DEFAULT_LOGIT_NORMAL = (0.0, 1.0)  # SD3's (m, s) of logit(t)


def sample_t(
    batch: int,
    sde: SDE,
    *,
    t_sampler: str = "uniform",
    t_eps: float = DEFAULT_T_EPS,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    lognormal: tuple[float, float] = DEFAULT_LOGNORMAL,
    logit_normal: tuple[float, float] = DEFAULT_LOGIT_NORMAL,
) -> tuple[Tensor, Tensor]:
    """Draw ``batch`` times in ``[t_eps, T]`` and their importance weights ``1 / ((T - t_eps) q(t))``.

    Returns ``(t, iw)``, both ``(batch,)`` of ``dtype`` on ``device``; ``iw`` is all ones for the uniform,
    stratified, lognormal and logit-normal samplers (see the module docstring). ``lognormal`` is ``(P_mean, P_std)``
    of the lognormal sampler, ``logit_normal`` the ``(m, s)`` of the logit-normal one. The draws are made on the
    generator's device, in float64 on the CPU and in ``dtype`` on a device (Apple MPS has no float64), then cast
    and moved.
    """
    check_choice("", "t_sampler", t_sampler, T_SAMPLERS)
    check_number("", "t_eps", t_eps, gt=0, lt=sde.T, hint="the SDE's (0, T)")
    check_int("", "batch", batch, ge=1)
    gdev = generator.device if generator is not None else torch.device("cpu")
    wide = torch.float64 if gdev.type == "cpu" else dtype
    T = float(sde.T)
    if t_sampler == "lognormal":
        p_mean, p_std = (float(v) for v in lognormal)
        check_number("", "lognormal P_std", p_std, gt=0)
        z = torch.randn(batch, generator=generator, dtype=wide, device=gdev)
        t = sde.t_from_log_snr(-2.0 * (p_mean + p_std * z)).clamp(t_eps, T)
        return t.to(dtype=dtype, device=device), torch.ones(batch, dtype=dtype, device=device)
    if t_sampler == "logit-normal":
        m, s = (float(v) for v in logit_normal)
        check_number("", "logit-normal s", s, gt=0)
        z = torch.randn(batch, generator=generator, dtype=wide, device=gdev)
        t = torch.sigmoid(m + s * z).clamp(t_eps, T)
        return t.to(dtype=dtype, device=device), torch.ones(batch, dtype=dtype, device=device)
    if t_sampler == "stratified":
        u0 = torch.rand((), generator=generator, dtype=wide, device=gdev)
        u = torch.remainder(u0 + torch.arange(batch, dtype=wide, device=gdev) / batch, 1.0)
    else:
        u = torch.rand(batch, generator=generator, dtype=wide, device=gdev)
    if t_sampler == "importance":
        lam_hi, lam_lo = float(sde.log_snr(t_eps)), float(sde.log_snr(T))
        t = sde.t_from_log_snr(lam_hi - u * (lam_hi - lam_lo)).clamp(t_eps, T)
        rate = sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2  # -d lambda / dt
        iw = (lam_hi - lam_lo) / ((T - t_eps) * rate)
    else:
        t = t_eps + (T - t_eps) * u
        iw = torch.ones_like(t)
    return t.to(dtype=dtype, device=device), iw.to(dtype=dtype, device=device)


def target(prediction: str, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The regression target of ``prediction``: ``eps``, ``x0``, ``v = alpha eps - sigma x0`` or the flow velocity
    ``eps - x0``."""
    check_choice("", "prediction", prediction, PREDICTIONS)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "flow":
        return eps - x0
    return alpha * eps - sigma * x0


def denoising_loss(
    model: Callable[..., Tensor],
    sde: SDE,
    x0: Tensor,
    *,
    prediction: str = "eps",
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    t_sampler: str = "uniform",
    t_eps: float = DEFAULT_T_EPS,
    weighting: str = "unit",
    reduction: str = "mean",
    lognormal: tuple[float, float] = DEFAULT_LOGNORMAL,
    snr_gamma: float = DEFAULT_SNR_GAMMA,
    augment: Tensor | None = None,
    logit_normal: tuple[float, float] = DEFAULT_LOGIT_NORMAL,
) -> Tensor:
    """The denoising loss of the module docstring for ``prediction`` in ``("eps", "x0", "v", "flow")``.

    Args:
        model: ``model(x_t, t) -> Tensor`` of ``x_t``'s shape, or ``model(x_t, t, y)`` when ``y`` is given.
        x0: a batch of data ``(batch, *shape)``.
        y: optional class labels ``(batch,)`` passed to the model.
        generator: drives ``t`` (unless given) and ``eps``.
        t: fixed times ``(batch,)`` (or a scalar) in ``[0, T]``; then ``t_sampler`` is not used and the
            importance weight is 1.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (per-sample weighted losses, ``(batch,)``).
        lognormal: ``(P_mean, P_std)`` of the ``"lognormal"`` sampler; ``logit_normal``: ``(m, s)`` of the
            ``"logit-normal"`` one.
        snr_gamma: ``gamma`` of the ``"min-snr"`` weighting.
        augment: optional augmentation labels ``(batch, k)`` of ``x0`` (:mod:`scoresde.augment`), passed to the
            model as ``model(x_t, t, y, augment)``.
    """
    check_choice("", "prediction", prediction, PREDICTIONS)
    check_choice("", "weighting", weighting, WEIGHTINGS)
    check_choice("", "reduction", reduction, ("mean", "none"))
    if not isinstance(x0, Tensor) or x0.ndim < 2 or not x0.is_floating_point():
        got = f"shape {tuple(x0.shape)}, dtype {x0.dtype}" if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a floating tensor of shape (batch, *data_shape), got {got}")
    batch = x0.shape[0]
    given = t is not None
    if not given:
        t, iw = sample_t(
            batch,
            sde,
            t_sampler=t_sampler,
            t_eps=t_eps,
            generator=generator,
            dtype=x0.dtype,
            device=x0.device,
            lognormal=lognormal,
            logit_normal=logit_normal,
        )
    else:
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        t = t.expand(batch) if t.ndim == 0 else t
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or of shape (batch,) = ({batch},), got {tuple(t.shape)}")
        iw = torch.ones_like(t)
    if y is not None and (not isinstance(y, Tensor) or y.shape != (batch,)):
        raise ValueError(f"y must be a tensor of labels of shape ({batch},), got {getattr(y, 'shape', y)!r}")
    if augment is not None and (not isinstance(augment, Tensor) or augment.ndim != 2 or augment.shape[0] != batch):
        raise ValueError(f"augment must be a tensor of shape ({batch}, k), got {getattr(augment, 'shape', augment)!r}")
    # the coefficients in float64 on the CPU, then cast to x0's dtype (as perturb does); on a device in x0's dtype
    t64 = t.double() if x0.device.type == "cpu" else t
    # drawn times lie in [t_eps, T] by construction: no check, so no host synchronisation per step
    x_t, eps = sde.perturb(x0, t64, generator=generator, check=given)
    if augment is not None:
        out = model(x_t, t, y, augment)
    else:
        out = model(x_t, t) if y is None else model(x_t, t, y)
    if not isinstance(out, Tensor) or out.shape != x0.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model output has shape {got}, expected x0's shape {tuple(x0.shape)}")
    alpha = append_dims(sde.alpha(t64).to(x0.dtype), x0.ndim)
    sigma = append_dims(sde.marginal_std(t64).to(x0.dtype), x0.ndim)
    err = (out - target(prediction, x0, eps, alpha, sigma)).square().flatten(1).mean(1)
    w = iw
    if weighting == "likelihood":
        w = w * (sde.diffusion(t64) ** 2 / sde.marginal_std(t64) ** 2).to(err)
    elif weighting == "min-snr":
        w = w * min_snr_weight(sde, t64, prediction, snr_gamma).to(err)
    per_sample = w * err
    return per_sample.mean() if reduction == "mean" else per_sample


def min_snr_weight(sde: SDE, t: Tensor, prediction: str, gamma: float = DEFAULT_SNR_GAMMA) -> Tensor:
    """The min-SNR-gamma weight (Hang et al. 2023) of ``prediction``'s squared error at times ``t``: the weight
    ``min(SNR, gamma)`` of the implied x0 error times ``(d x0 / d target)^2`` (module docstring)."""
    check_choice("", "prediction", prediction, PREDICTIONS)
    check_number("", "snr_gamma", gamma, gt=0)
    a2, s2 = sde.alpha(t) ** 2, sde.marginal_std(t) ** 2
    snr = a2 / s2
    capped = snr.clamp(max=gamma)
    if prediction == "eps":
        return capped / snr
    if prediction == "x0":
        return capped
    if prediction == "flow":
        return capped * s2 / (sde.alpha(t) + sde.marginal_std(t)) ** 2
    return capped * s2 / (a2 + s2) ** 2


def eps_mse(model, sde: SDE, x0: Tensor, **kw) -> Tensor:
    """``mean |model(x_t, t) - eps|^2`` (Ho et al. 2020, eq. 14); keywords as :func:`denoising_loss`."""
    return denoising_loss(model, sde, x0, prediction="eps", **kw)


def x0_mse(model, sde: SDE, x0: Tensor, **kw) -> Tensor:
    """``mean |model(x_t, t) - x_0|^2``; keywords as :func:`denoising_loss`."""
    return denoising_loss(model, sde, x0, prediction="x0", **kw)


def flow_mse(model, sde: SDE, x0: Tensor, **kw) -> Tensor:
    """``mean |model(x_t, t) - (eps - x_0)|^2``, the conditional flow-matching loss; as :func:`denoising_loss`."""
    return denoising_loss(model, sde, x0, prediction="flow", **kw)


def v_mse(model, sde: SDE, x0: Tensor, **kw) -> Tensor:
    """``mean |model(x_t, t) - v|^2``, ``v = alpha eps - sigma x_0`` (Salimans & Ho 2022); as :func:`denoising_loss`."""
    return denoising_loss(model, sde, x0, prediction="v", **kw)
