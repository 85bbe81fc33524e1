"""The rectified-flow (flow-matching) path as a forward process."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SDE, TimeLike, _as_time

__all__ = ["FlowSDE"]


class FlowSDE(SDE):
    """The rectified-flow (flow-matching) path ``x_t = (1 - s(t)) x_0 + s(t) eps`` with the time shift
    ``s(t) = shift t / (1 + (shift - 1) t)`` (Liu et al. 2023; Lipman et al. 2023; Esser et al. 2024, eq. 23).

    ``alpha = 1 - s(t)``, ``sigma = s(t)``, so ``alpha + sigma = 1`` and a network predicting the velocity
    ``eps - x_0`` (:class:`~scoresde.param.FlowVelocityScore`) gives ``x_0 = x - sigma v`` and ``eps = x + alpha v``.
    ``shift = 1`` is the plain path of SD3's training; ``shift > 1`` spends more time at high noise (SD3 samples
    with 3.0); the resolution-dependent shift of Flux and diffusers' ``use_dynamic_shifting`` is
    ``shift = exp(mu)``. The forward SDE with these marginals (Albergo & Vanden-Eijnden 2023; Song et al. 2021,
    eq. 29) has ``f = d log alpha / dt = -s'(t) / (1 - s(t))`` and ``g^2 = d sigma^2/dt - 2 f sigma^2 =
    2 s s' / (1 - s)``, with ``s'(t) = shift / (1 + (shift - 1) t)^2``.

    At ``t = 1`` the path is pure noise (``alpha = 0``) and ``f``, ``g`` and the log-SNR are infinite, so the default
    ``T`` is ``1 - 2^-10`` (``alpha / sigma`` about ``1e-3 / shift``, log-SNR about -13.9 at shift 1, beyond the VP
    SDE's -10; a binary fraction, so a float32 time does not round past it), where every sampler has finite
    coefficients; the prior there is ``N(0, (alpha_T^2 + sigma_T^2) I)``, the marginal of unit-variance data. Near
    ``T`` the reverse SDE is stiff (``g^2 = 2 s s' / (1 - s)`` is about 2,000 there): explicit SDE steps on a uniform
    grid need many steps, and the log-SNR grid spreads them better. ``T = 1`` is allowed for the samplers that read
    ``alpha`` and ``sigma`` alone (``ddim`` with a velocity model: diffusers' flow-matching Euler loop).
    """

    DEFAULT_T = 1 - 2**-10

    def __init__(self, shift: float = 1.0, T: float | None = None):
        if not (shift > 0 and math.isfinite(shift)):
            raise ValueError(f"FlowSDE: shift must be a finite number > 0, got {shift}")
        self.shift = float(shift)
        self.T = self.DEFAULT_T if T is None else float(T)
        if not 0 < self.T <= 1:
            raise ValueError(f"FlowSDE: T must lie in (0, 1], got {self.T}")

    def _params(self) -> dict:
        extra = {} if self.T == self.DEFAULT_T else {"T": self.T}
        return {"shift": self.shift, **extra}

    def shifted(self, t: TimeLike) -> Tensor:
        """``s(t) = shift t / (1 + (shift - 1) t)``: the noise level ``sigma(t)`` (diffusers' shifted sigma)."""
        t = _as_time(t)
        return self.shift * t / (1 + (self.shift - 1) * t)

    def unshifted(self, sigma: TimeLike) -> Tensor:
        """The inverse of :meth:`shifted`: the time ``t`` whose noise level is ``sigma``."""
        sigma = _as_time(sigma)
        return sigma / (self.shift - (self.shift - 1) * sigma)

    def _shift_rate(self, t: Tensor) -> Tensor:
        return self.shift / (1 + (self.shift - 1) * t) ** 2

    def log_alpha(self, t: TimeLike) -> Tensor:
        # 1 - s(t) = (1 - t) / (1 + (shift - 1) t), without the cancellation of 1 - s near t = 1
        t = _as_time(t)
        return torch.log1p(-t) - torch.log1p((self.shift - 1) * t)

    def alpha(self, t: TimeLike) -> Tensor:
        t = _as_time(t)
        return (1 - t) / (1 + (self.shift - 1) * t)

    def marginal_std(self, t: TimeLike) -> Tensor:
        return self.shifted(t)

    def drift_coef(self, t: TimeLike) -> Tensor:
        t = _as_time(t)
        return -self._shift_rate(t) / self.alpha(t)

    def diffusion(self, t: TimeLike) -> Tensor:
        t = _as_time(t)
        return (2 * self.shifted(t) * self._shift_rate(t) / self.alpha(t)).sqrt()

    def prior_std(self) -> float:
        a, s = float(self.alpha(self.T)), float(self.marginal_std(self.T))
        return math.sqrt(a * a + s * s)

    def t_from_log_snr(self, lam: TimeLike) -> Tensor:
        # alpha / sigma = e^{lam/2} and alpha + sigma = 1: sigma = 1 / (1 + e^{lam/2}) = sigmoid(-lam/2)
        return self.unshifted(torch.sigmoid(-0.5 * _as_time(lam)))
