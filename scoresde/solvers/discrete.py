"""DDPM ancestral sampling and DDIM, on the continuous schedule over any decreasing time grid.

Both use one model call per step (``eps`` and ``x0`` from the same output). For a step ``t -> s < t`` with
``x_t = alpha_t x_0 + sigma_t eps``:

- DDIM (Song, Meng & Ermon 2021, eq. 12): ``x_s = alpha_s x0 + sqrt(sigma_s^2 - sigma_eta^2) eps + sigma_eta z``
  with ``sigma_eta`` from :func:`.base.ddim_noise_std`. ``eta = 0`` is a first-order solver of the
  probability-flow ODE (Lu et al. 2022: DDIM is DPM-Solver-1).
- DDPM (Ho et al. 2020, eq. 6-7): draw from the Gaussian posterior ``q(x_s | x_t, x_0 = x0)``, with
  ``alpha_{t|s} = alpha_t / alpha_s``, ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2``::

      mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0,
      var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2.

  In law this is DDIM with ``eta = 1``; the two differ only in how they write the same Gaussian.
"""

from __future__ import annotations

import math

from ..checks import check_number
from .base import GridSolver, State, ddim_noise_std
from .registry import register

__all__ = ["DDPM", "DDIM", "ddpm_posterior"]


def ddpm_posterior(ct, cs, x, x0):
    """Mean and std of ``q(x_s | x_t = x, x_0 = x0)`` for coefficients ``ct``, ``cs`` (Ho et al. 2020, eq. 6-7)."""
    a_ts = ct.alpha / cs.alpha
    var_ts = ct.sigma**2 - a_ts**2 * cs.sigma**2
    mean = (a_ts * cs.sigma**2 / ct.sigma**2) * x + (cs.alpha * var_ts / ct.sigma**2) * x0
    return mean, math.sqrt(max(0.0, var_ts) * cs.sigma**2 / ct.sigma**2)


@register
class DDIM(GridSolver):
    """DDIM with randomness coefficient ``eta`` (0: deterministic; 1: DDPM's posterior variance)."""

    name = "ddim"
    kind = "ode"
    order = 1
    nfe_per_step = 1
    draws_per_step = 1

    def __init__(self, eta: float = 0.0):
        self.eta = check_number("ddim", "eta", eta, ge=0)

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def step(self, ctx, k, x, state):
        ct, cs = ctx.coefs[k], ctx.coefs[k + 1]
        eps, x0 = ctx.ev.eps_and_x0(x, ct)
        sig = ddim_noise_std(ct, cs, self.eta)
        x = cs.alpha * x0 + math.sqrt(max(0.0, cs.sigma**2 - sig**2)) * eps
        if sig > 0:
            x = x + sig * ctx.randn(k, 0, x)
        return x, State(denoised=x0)


@register
class DDPM(GridSolver):
    """DDPM ancestral sampling: each step draws from the posterior ``q(x_s | x_t, x0(x_t, t))``."""

    name = "ddpm"
    kind = "sde"
    order = 0.5
    weak_order = 1
    nfe_per_step = 1
    draws_per_step = 1

    def step(self, ctx, k, x, state):
        ct, cs = ctx.coefs[k], ctx.coefs[k + 1]
        _, x0 = ctx.ev.eps_and_x0(x, ct)
        mean, std = ddpm_posterior(ct, cs, x, x0)
        return mean + std * ctx.randn(k, 0, x), State(denoised=x0)
