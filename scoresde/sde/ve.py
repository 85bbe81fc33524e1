"""The variance-exploding SDE (Song et al. 2021, eq. 9)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SDE, TimeLike, _as_time

__all__ = ["VESDE"]


class VESDE(SDE):
    """Variance-exploding SDE ``dx = sqrt(d[sigma^2]/dt) dW`` with ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``.

    (Song et al. 2021, eq. 9.) ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))``. The transition kernel
    of this SDE is exactly ``x_t | x_0 ~ N(x_0, sigma_min^2 (r^{2t} - 1))`` with ``r = sigma_max/sigma_min``,
    which is what ``marginal_std`` returns (score_sde instead treats the data as already perturbed by
    ``sigma_min`` and uses ``sigma(t)``; the difference only matters at ``t`` near 0). Prior:
    ``N(0, sigma_max^2 I)``.
    """

    t_min = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not (0 < sigma_min < sigma_max and math.isfinite(sigma_max)):
            raise ValueError(f"VESDE: need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_r = math.log(sigma_max / sigma_min)

    def _params(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def log_alpha(self, t: TimeLike) -> Tensor:
        return torch.zeros_like(_as_time(t))

    def marginal_std(self, t: TimeLike) -> Tensor:
        return self.sigma_min * torch.expm1(2 * self._log_r * _as_time(t)).sqrt()

    def drift_coef(self, t: TimeLike) -> Tensor:
        return torch.zeros_like(_as_time(t))

    def diffusion(self, t: TimeLike) -> Tensor:
        t = _as_time(t)
        return self.sigma_min * (self._log_r * t).exp() * math.sqrt(2 * self._log_r)

    def prior_std(self) -> float:
        return self.sigma_max

    def t_from_log_snr(self, lam: TimeLike) -> Tensor:
        # sigma^2 = e^-lam = sigma_min^2 (r^{2t} - 1)
        return torch.log1p((-_as_time(lam)).exp() / self.sigma_min**2) / (2 * self._log_r)
