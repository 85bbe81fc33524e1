"""EDM samplers (Karras et al. 2022): the deterministic Heun sampler (Alg. 1) and its stochastic churn (Alg. 2).

**Variables.** Karras et al. write every diffusion as ``x = s(t) x_hat`` with ``x_hat = x_0 + sigma_hat n``
(eq. 4 / Table 1). Here ``s = alpha`` and ``sigma_hat = sigma / alpha``, so one code path serves VP, sub-VP,
VE and discrete VP SDEs. Differentiating ``x_hat = x / alpha`` along the probability-flow ODE
``dx/dt = f x + g^2 / (2 sigma) eps`` with ``f = (log alpha)'`` and ``g^2 = 2 sigma sigma' - 2 f sigma^2``
gives ``dx_hat/dt = (sigma' - f sigma) eps / alpha = d sigma_hat/dt * eps``, that is (EDM eq. 3 with ``s = 1``)::

    d x_hat / d sigma_hat = (x_hat - D(x_hat; sigma_hat)) / sigma_hat = eps(x, t),

an ODE whose right-hand side is the noise prediction itself.

**Heun (Alg. 1).** A step ``t -> s`` with ``h = sigma_hat(s) - sigma_hat(t)``::

    d   = eps(x_t, t),               x_hat' = x_hat_t + h d                       (Euler predictor)
    d'  = eps(alpha_s x_hat', s),    x_hat_s = x_hat_t + h (d + d') / 2           (trapezoidal corrector)

Order 2 in the step (the trapezoidal rule), tested against the Gaussian flow map.

**The last step is an Euler step**, as in EDM's Alg. 1 (line 6) and k-diffusion, so NFE is ``2 * steps - 1``
(``nfe_per_step = 2`` is the cost of every other step; the benchmark's ``steps = budget // 2`` then spends one
call less than the budget, and the counted NFE is what it reports). EDM needs it because its last ``sigma`` is 0;
we need it because of what the corrector does on a long step. With ``D = x0(x_t)``, ``D' = x0(x')``, the
Euler predictor is ``x_hat' = D + (sigma_hat' / sigma_hat)(x_hat_t - D)`` (the DDIM step) and Heun adds to it

    x_hat_s - x_hat' = (sigma_hat / sigma_hat' - 1) / 2 * (D' - D):

the change of the data prediction over the step, amplified by the ratio of noise levels. Exponential
integrators weigh the same difference by ``O((sigma_hat' / sigma_hat) log(sigma_hat / sigma_hat'))`` instead.
The last step of a grid to ``t_min`` has by far the largest ratio (36 on a 3-step quadratic grid, 117 on a
3-step Karras grid for the linear VP, ``sigma_hat(t_min) = 0.0105``) and crosses the scale of the modes, where
``D`` moves most: a Heun last step multiplies that move by 18-58. This is why Heun-type samplers "blow up" at
5-10 NFE (k-diffusion's on its Karras grid without a final Euler step: mode SWD 10.9 at 4 NFE on gmm16).
Measured on gmm16 (float32, n = 4000, Karras grid, mode-conditional SWD): Heun on every step gives
nan (non-finite metric) / 1.67 / 0.48 at 4 / 6 / 10 NFE; with the Euler last step 0.47 / 0.09 / 0.16 at
3 / 5 / 9 NFE. The order stays 2 (one Euler step adds an ``O(h^2)`` local error). ``last_euler=False``
keeps the corrector on the last step (NFE ``2 * steps``).

**Churn (Alg. 2).** Before step ``i`` (of ``N``), if ``S_tmin <= sigma_hat_i <= S_tmax``, raise the noise level
to ``sigma_hat^ = (1 + gamma) sigma_hat_i``, ``gamma = min(S_churn / N, sqrt(2) - 1)``, by adding fresh noise
``sqrt(sigma_hat^2 - sigma_hat_i^2) S_noise z``, then take the Heun step from ``sigma_hat^`` to
``sigma_hat_{i+1}``. The raised level is mapped back to a time through ``log_snr = -2 log sigma_hat`` and capped
at ``sigma_hat(T)`` (the score is not defined beyond ``T``). With ``S_noise = 1`` and the exact score, adding the
noise maps the exact marginal at ``sigma_hat_i`` to the exact marginal at ``sigma_hat^`` (a convolution of
Gaussians), so the only error left is the Heun step's: weak order 2 for the marginals, tested on Gaussian data.
"""

from __future__ import annotations

import math

import torch

from ..checks import check_number
from .base import GridSolver, State
from .registry import register

__all__ = ["EDMHeun", "EDMChurn"]


def _edm_step(ctx, x, ct, cs, correct: bool):
    """One EDM step ``t -> s`` on ``x`` (the state at ``t`` in the SDE's own scaling): Euler, then the
    trapezoidal correction if ``correct`` (one or two model calls). Returns the state and ``D = x0(x_t)``."""
    h = cs.sigma / cs.alpha - ct.sigma / ct.alpha
    xh = x / ct.alpha
    d = ctx.ev.eps(x, ct)
    denoised = xh - (ct.sigma / ct.alpha) * d
    xh_pred = xh + h * d
    if not correct:
        return cs.alpha * xh_pred, denoised
    d2 = ctx.ev.eps(cs.alpha * xh_pred, cs)
    return cs.alpha * (xh + (0.5 * h) * (d + d2)), denoised


class _EDMBase(GridSolver):
    nfe_per_step = 2
    default_grid = "karras"

    def __init__(self, last_euler: bool = True):
        if not isinstance(last_euler, bool):
            raise ValueError(f"{self.name}: last_euler must be True or False, got {last_euler!r}")
        self.last_euler = last_euler

    def step(self, ctx, k, x, state):
        x, ct = self.perturb(ctx, k, x) if self.stochastic else (x, ctx.coefs[k])
        correct = not (self.last_euler and k == ctx.n_steps - 1)
        x, denoised = _edm_step(ctx, x, ct, ctx.coefs[k + 1], correct)
        return x, State(denoised=denoised)


@register
class EDMHeun(_EDMBase):
    """EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1) in ``sigma_hat = sigma / alpha``.

    Two model calls per step, one on the last (an Euler step; ``last_euler=False`` corrects it too).
    """

    name = "edm-heun"
    kind = "ode"
    order = 2

    @property
    def stochastic(self) -> bool:
        return False


@register
class EDMChurn(_EDMBase):
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2): churn noise, then a Heun step.

    Options (EDM's names): ``S_churn >= 0`` (total churn, ``gamma = min(S_churn / steps, sqrt(2) - 1)``),
    ``S_tmin <= S_tmax`` (the ``sigma_hat`` range where churn applies), ``S_noise > 0`` (noise inflation; 1 keeps
    the exact marginal, EDM's tuned values 1.003-1.007 compensate for a learned denoiser's smoothing), and
    ``last_euler`` as for ``edm-heun``. Two model calls per step, one on the last.
    """

    name = "edm-churn"
    kind = "sde"
    order = 1  # the strong order of a splitting for additive noise; not tested (the weak order is)
    weak_order = 2
    draws_per_step = 1

    def __init__(
        self,
        S_churn: float = 10.0,
        S_tmin: float = 0.0,
        S_tmax: float = math.inf,
        S_noise: float = 1.0,
        last_euler: bool = True,
    ):
        super().__init__(last_euler)
        self.S_churn = check_number("edm-churn", "S_churn", S_churn, ge=0)
        self.S_tmin = check_number("edm-churn", "S_tmin", S_tmin, ge=0)
        if isinstance(S_tmax, bool) or not (isinstance(S_tmax, int | float) and S_tmax >= S_tmin):
            raise ValueError(f"edm-churn: S_tmax must be a number >= S_tmin = {S_tmin}, got {S_tmax!r}")
        self.S_tmax = float(S_tmax)
        self.S_noise = check_number("edm-churn", "S_noise", S_noise, gt=0)

    @property
    def stochastic(self) -> bool:
        return self.S_churn > 0

    def churned_time(self, ctx, ct) -> float:
        """The time ``t^ >= t`` of the raised noise level ``(1 + gamma) sigma_hat(t)``, capped at ``sde.T``."""
        sh = ct.sigma / ct.alpha
        if self.S_churn == 0 or not (self.S_tmin <= sh <= self.S_tmax):
            return ct.t
        sde = ctx.sde
        gamma = min(self.S_churn / ctx.n_steps, math.sqrt(2) - 1)
        sh_up = (1 + gamma) * sh
        c_T = ctx.at(ctx.sde.T)
        if sh_up >= c_T.sigma / c_T.alpha:
            return sde.T
        t_up = float(sde.t_from_log_snr(torch.tensor(-2 * math.log(sh_up), dtype=torch.float64)))
        return min(max(t_up, ct.t), sde.T)

    def perturb(self, ctx, k, x):
        """Alg. 2, lines 5-6: ``x_hat^ = x_hat + sqrt(sigma_hat^2 - sigma_hat_i^2) S_noise z``; returns ``(x, c^)``."""
        ct = ctx.coefs[k]
        t_up = self.churned_time(ctx, ct)
        if t_up <= ct.t:
            return x, ct
        cu = ctx.at(t_up)
        sh, sh_up = ct.sigma / ct.alpha, cu.sigma / cu.alpha
        z = ctx.randn(k, 0, x)
        return cu.alpha * (x / ct.alpha + (math.sqrt(max(0.0, sh_up**2 - sh**2)) * self.S_noise) * z), cu
