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

The noise of step ``k`` is stream ``k + 1`` of the per-sample noise source (stream 0 is the prior).
"""

from __future__ import annotations

import math

import torch

from .base import Solver, SolverResult, check_finite_state, coefs, ddim_noise_std
from .registry import register

__all__ = ["DDPM", "DDIM"]


class _GridSolver(Solver):
    """A one-call-per-step solver over the grid: subclasses implement ``step(ev, x, t, s, k, noise)``."""

    nfe_per_step = 1

    def solve(self, ev, x, grid, noise, return_trajectory):
        ts = grid.tolist()
        traj = [x] if return_trajectory else None
        for k in range(len(ts) - 1):
            ev.step = k
            x = check_finite_state(ev, self.step(ev, x, ts[k], ts[k + 1], k, noise), ts[k + 1])
            if traj is not None:
                traj.append(x)
        return SolverResult(x, grid, torch.stack(traj) if traj is not None else None)


@register
class DDIM(_GridSolver):
    """DDIM with randomness coefficient ``eta`` (0: deterministic; 1: DDPM's posterior variance)."""

    name = "ddim"
    kind = "ode"
    order = 1

    def __init__(self, eta: float = 0.0):
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"ddim: eta must be a finite number >= 0, got {eta}")
        self.eta = float(eta)

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def step(self, ev, x, t, s, k, noise):
        eps, x0 = ev.eps_and_x0(x, t)
        a_s, s_s = coefs(ev.sde, s)
        sig = ddim_noise_std(ev.sde, t, s, self.eta)
        x = a_s * x0 + math.sqrt(max(0.0, s_s**2 - sig**2)) * eps
        if sig > 0:
            x = x + sig * noise.randn(x.shape, stream=k + 1, dtype=x.dtype, device=x.device)
        return x


@register
class DDPM(_GridSolver):
    """DDPM ancestral sampling: each step draws from the posterior ``q(x_s | x_t, x0(x_t, t))``."""

    name = "ddpm"
    kind = "sde"
    order = 0.5
    weak_order = 1

    def step(self, ev, x, t, s, k, noise):
        _, x0 = ev.eps_and_x0(x, t)
        a_t, s_t = coefs(ev.sde, t)
        a_s, s_s = coefs(ev.sde, s)
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        mean = (a_ts * s_s**2 / s_t**2) * x + (a_s * var_ts / s_t**2) * x0
        std = math.sqrt(max(0.0, var_ts) * s_s**2 / s_t**2)
        return mean + std * noise.randn(x.shape, stream=k + 1, dtype=x.dtype, device=x.device)
