"""Predictor-corrector sampling (Song et al. 2021); the adaptive reverse-SDE solver (``sde-adaptive``) is in
:mod:`.adaptive_sde`.

Notation: ``x_t = alpha_t x_0 + sigma_t eps``, ``score = -eps / sigma``, forward SDE ``dx = f x dt + g dW`` and
reverse SDE ``dx = [f x - g^2 score] dt + g dW_bar = [f x + g^2 / sigma eps] dt + g dW_bar`` (Song et al. eq. 6).

**pc** (Song et al. 2021, Alg. 1, and Alg. 2 / 3 for VE / VP). Each step ``t -> s`` is one predictor step
followed by ``n_corrector`` Langevin corrector steps at ``s``.

- Predictor ``"reverse-diffusion"`` (eq. 46-47 of appendix E): discretise the forward process by its exact
  transition ``x_t = a x_s + sqrt(v) z`` with ``a = alpha_t / alpha_s``, ``v = sigma_t^2 - a^2 sigma_s^2``, i.e.
  ``f_i(x) = (a - 1) x`` and ``G_i = sqrt(v)``, and reverse it: ``x_s = (2 - a) x_t + v score(x_t, t) + sqrt(v) z``.
  For the VE SDE (``a = 1``) this is Alg. 2's ``x + (sigma_t^2 - sigma_s^2) score + sqrt(sigma_t^2 - sigma_s^2) z``;
  for the VP SDE (``a = sqrt(1 - beta)``, ``v = beta``) Alg. 3's ``(2 - sqrt(1 - beta)) x + beta score + sqrt(beta) z``.
- Predictor ``"euler-maruyama"``: ``x_s = x_t - h (f x_t + g^2 / sigma_t eps) + g sqrt(h) z``, ``h = t - s``.
- Predictor ``"ancestral"``: a draw from the DDPM posterior ``q(x_s | x_t, x0(x_t))`` (Ho et al. 2020 eq. 6-7;
  Song et al. eq. 47 is its VP special case to first order), the ``ddpm`` method's step.
- Corrector (Alg. 4 / 5, step size from appendix G): ``x <- x + e score(x, s) + sqrt(2 e) z`` with
  ``e = 2 r_a (snr ||z|| / ||score||)^2``, so that ``snr`` is the ratio of the drift's displacement to the
  noise's. The paper's code averages the norms over the batch (``step_size="batch"``), so a sample depends
  (weakly, through two scalars) on its batch; the default ``step_size="sigma"`` puts in their expected values,
  ``||z|| ~ sqrt(d)``, ``||score|| ~ sqrt(d) / sigma_t``, giving ``e = 2 r_a (snr sigma_t)^2``: independent of
  the state and of the batch. Per-sample norms would make samples batch-independent but are wrong: the step
  ``e(x)`` then depends on the state, and Langevin dynamics with a state-dependent step no longer leaves
  ``p_s`` invariant (it would need a ``grad e`` correction). Near a mode's centre ``||score|| -> 0`` and the
  displacement ``e ||score|| ~ 1 / ||score||`` is unbounded. Measured with per-sample norms: on 1-D Gaussian
  data (20k-200k samples, 10-80 steps, snr 0.16) a relative variance error of 1e5-1e7 (batch norms: 0.1-2, the
  predictor's error); on an 8-D Gaussian at t = 0.3, 20 corrector steps with snr 0.05 from the exact marginal
  inflate every variance by 9-13% (batch norms: within the 1% sampling error).
  ``r_a``: Alg. 5 multiplies by ``alpha_i = 1 - beta_i`` of the
  1000-step training chain (within 2% of 1); we take 1 (Alg. 4), which keeps the corrector independent of the
  sampling grid.

Langevin dynamics leaves ``p_s`` invariant as ``e -> 0`` (the unadjusted chain's bias is ``O(e)``, e.g. the
variance of a Gaussian of variance ``v`` becomes ``v / (1 - e / (2 v))``); with a fixed ``snr`` the step does not
shrink with the grid, so PC converges to ``p_t`` up to that ``O(snr^2)`` bias. NFE is ``1 + n_corrector`` per step.
Noise: step ``k`` draws ``1 + n_corrector`` times, ``j = 0`` the predictor, ``j >= 1`` the correctors.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..checks import check_choice, check_int, check_number
from ..sde import Coefs
from .adaptive_sde import AdaptiveSDE  # noqa: F401 - sde-adaptive lived here; importable from here as before
from .base import Evaluator, GridSolver, State
from .discrete import ddpm_posterior
from .registry import register

__all__ = ["PC", "AdaptiveSDE", "langevin_correct"]

PREDICTORS = ("reverse-diffusion", "euler-maruyama", "ancestral")


def langevin_correct(
    ev: Evaluator, x: Tensor, c: Coefs, snr: float, draws: list, scale: float = 1.0, step_size: str = "sigma"
) -> Tensor:
    """Langevin corrector steps at time ``c.t`` (Song et al. 2021, Alg. 4; step size of appendix G), one per draw.

    ``x <- x + e score + sqrt(2 e) z``; step ``j`` uses ``draws[j]()``, a standard normal of ``x``'s shape. One
    model call per step. ``step_size="batch"``: ``e = 2 scale (snr mean ||z|| / mean ||score||)^2``, the norms
    averaged over the batch (the paper's code). ``"sigma"``: ``e = 2 scale (snr sigma_t)^2``, the same rule with its
    expected norms, ``||z|| ~ sqrt(d)`` and ``||score|| = ||eps|| / sigma_t ~ sqrt(d) / sigma_t``; it depends on
    neither the state nor the batch, so Langevin's invariance holds and a sample is the same in any batch.
    """
    for draw in draws:
        score = ev.eps(x, c) / -c.sigma
        z = draw()
        if step_size == "sigma":
            e = 2 * scale * (snr * c.sigma) ** 2
        else:
            g_norm = float(score.flatten(1).norm(dim=1).mean())
            z_norm = float(z.flatten(1).norm(dim=1).mean())
            if g_norm == 0:
                raise ValueError(f"langevin corrector: the score is exactly 0 on the whole batch at t = {c.t:g}")
            e = 2 * scale * (snr * z_norm / g_norm) ** 2
        x = ev.check(x + e * score + math.sqrt(2 * e) * z, c.t, what="the solver state")
    return x


@register
class PC(GridSolver):
    """Predictor-corrector sampler (Song et al. 2021, Alg. 1-3): a predictor step, then Langevin corrector steps.

    Options: ``predictor`` (``"reverse-diffusion"``, ``"euler-maruyama"`` or ``"ancestral"``), ``n_corrector``
    Langevin steps per step (``>= 0``), ``snr`` (``> 0``, default 0.16 as in the paper's VE experiments),
    ``step_size`` (``"sigma"``, the default: ``e = 2 (snr sigma_t)^2``, batch-independent; ``"batch"``: the
    paper's code, norms averaged over the batch; see :func:`langevin_correct`).
    The configured solver's ``nfe_per_step`` and ``draws_per_step`` are ``1 + n_corrector`` (2 for the defaults).
    """

    name = "pc"
    kind = "sde"
    order = 0.5  # the corrector's noise does not shrink with the step: no pathwise convergence is claimed
    weak_order = 1  # the predictor's, up to the corrector's O(snr^2) bias

    def __init__(
        self, predictor: str = "reverse-diffusion", n_corrector: int = 1, snr: float = 0.16, step_size: str = "sigma"
    ):
        self.step_size = check_choice("pc", "step_size", step_size, ("sigma", "batch"))
        self.predictor = check_choice("pc", "predictor", predictor, PREDICTORS)
        self.n_corrector = check_int("pc", "n_corrector", n_corrector, ge=0)
        self.snr = check_number("pc", "snr", snr, gt=0)

    @property
    def nfe_per_step(self) -> int:
        """One call for the predictor, one per corrector step."""
        return 1 + self.n_corrector

    @property
    def draws_per_step(self) -> int:
        """Draw 0 for the predictor, draw ``j`` for corrector step ``j``."""
        return 1 + self.n_corrector

    def step(self, ctx, k, x, state):
        ct, cs = ctx.coefs[k], ctx.coefs[k + 1]
        x, denoised = self.predict(ctx.ev, x, ct, cs, ctx.randn(k, 0, x))
        x = ctx.ev.check(x, cs.t, what="the solver state")
        draws = [lambda j=j: ctx.randn(k, j, x) for j in range(1, 1 + self.n_corrector)]
        return langevin_correct(ctx.ev, x, cs, self.snr, draws, step_size=self.step_size), State(denoised=denoised)

    def predict(self, ev, x, ct, cs, z):
        """One predictor step ``t -> s`` with noise ``z``; returns the state and the data prediction if computed."""
        if self.predictor == "reverse-diffusion":
            a = ct.alpha / cs.alpha
            v = max(0.0, ct.sigma**2 - a**2 * cs.sigma**2)
            return (2 - a) * x - (v / ct.sigma) * ev.eps(x, ct) + math.sqrt(v) * z, None
        if self.predictor == "euler-maruyama":
            h = ct.t - cs.t
            return x - h * ct.reverse_drift(x, ev.eps(x, ct)) + (ct.g * math.sqrt(h)) * z, None
        _, x0 = ev.eps_and_x0(x, ct)  # ancestral: the DDPM posterior q(x_s | x_t, x0)
        mean, std = ddpm_posterior(ct, cs, x, x0)
        return mean + std * z, x0
