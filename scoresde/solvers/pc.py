"""Predictor-corrector sampling (Song et al. 2021) and the adaptive reverse-SDE solver of Jolicoeur-Martineau
et al. 2021 ("Gotta Go Fast When Generating Data with Score-Based Models").

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

**sde-adaptive** (Jolicoeur-Martineau et al. 2021, Alg. 1). From ``t`` with step ``h`` and one draw ``z``::

    x'  = x - h (f x + g^2/sigma eps)(x, t) + g(t) sqrt(h) z                          (Euler-Maruyama)
    x~  = x' - h (f x + g^2/sigma eps)(x', t - h) + g(t - h) sqrt(h) z
    x'' = (x + x~) / 2                                                                 (improved Euler)
    delta = max(atol, rtol max(|x'|, |x'_prev|)),   E = ||(x' - x'') / delta||_2 / sqrt(n)

(``n`` elements, ``x'_prev`` the ``x'`` of the last accepted step). If ``E <= 1`` the step is accepted with
the extrapolated ``x''``; then ``h <- min(t - t_min, theta h E^{-r})`` (``theta = 0.9``, ``r = 0.9``, the
paper's values). The last step lands exactly on ``t_min``. Two model calls per attempt, accepted or not, all
counted (NFE = 2 x attempts).

**The error is controlled for the whole batch**, as in the paper: ``E`` is the RMS over every element of the
batch, and all samples share ``t`` and ``h``. Each sample's noise is its own (stream ``1 + j`` at attempt
``j``), but its step sizes depend on the whole batch, so a sample changes with its batch; the same seed and
batch give the same samples.
A per-sample controller (each sample its own ``t`` and ``h``) was tried and rejected: a rejected step draws
new noise, so with per-sample acceptance the accepted increments are selected on their own ``z``, which
biases the law. Measured on Gaussian data ``N(0.5, 0.05)`` per coordinate (VP, 20k samples in 1-D, 2k in
16-D; relative error of the variance at tol 0.1 / 0.03 / 0.01): per-sample +48% / +43% / +49% in 1-D and
+0.9% / +6.6% / +5.8% in 16-D; batch-wide -2.1% / +1.9% / +0.3% in 1-D and -1.8% / -0.6% / +0.0% in 16-D,
with fewer model calls (58 / 122 / 254 against 154 / 304 / 606). With a batch of many samples the batch-wide
acceptance is almost independent of any one sample's noise, which is why it is unbiased in practice.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks import check_choice, check_int, check_number
from ..sde import Coefs
from .base import EngineSolver, Evaluator, GridSolver, SolverResult, State
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


@register
class AdaptiveSDE(EngineSolver):
    """Adaptive reverse-SDE solver (Jolicoeur-Martineau et al. 2021, Alg. 1): EM + improved-Euler error control.

    Options: ``rtol``, ``atol`` (``> 0``; the mixed tolerance; defaults 0.05 and 0.0078, the paper's settings for
    data in [-1, 1]), ``h_init`` (first step, 0.01 as in the paper), ``safety`` (``theta``, 0.9), ``exponent``
    (``r``, 0.9), ``max_iters`` (attempts before giving up). One step size for the batch; NFE is counted.
    """

    name = "sde-adaptive"
    kind = "sde"
    order = 1  # improved Euler for additive noise (as torchsde's Heun); rejection-resampling makes it indicative
    weak_order = 1
    nfe_per_step = None
    adaptive = True

    def __init__(
        self,
        rtol: float = 0.05,
        atol: float = 0.0078,
        h_init: float = 0.01,
        safety: float = 0.9,
        exponent: float = 0.9,
        max_iters: int = 10_000,
    ):
        m = "sde-adaptive"
        self.rtol, self.atol = check_number(m, "rtol", rtol, gt=0), check_number(m, "atol", atol, gt=0)
        self.h_init = check_number(m, "h_init", h_init, gt=0)
        self.safety = check_number(m, "safety", safety, gt=0, le=1)
        self.exponent = check_number(m, "exponent", exponent, gt=0)
        self.max_iters = check_int(m, "max_iters", max_iters, ge=1)

    def solve(self, ctx, x, *, callback=None, return_trajectory=False):
        if callback is not None:
            raise ValueError("sde-adaptive chooses its own steps: it takes no per-step callback")
        ev = ctx.ev
        T, t_min = ctx.times[0], ctx.times[-1]
        t, h = T, min(self.h_init, T - t_min)
        x_start, x_prev = x, x
        it = 0
        while t > t_min:
            if it >= self.max_iters:
                raise RuntimeError(
                    f"sde-adaptive: still at t = {t:.6g} > t_min = {t_min:g} after max_iters = {self.max_iters} "
                    f"attempts; loosen rtol/atol ({self.rtol:g}/{self.atol:g}) or raise max_iters"
                )
            last = h >= t - t_min
            s = t_min if last else t - h
            h = t - s if last else h
            # attempt j draws stream 1 + j: the steps are not those of a grid
            z = ctx.noise.randn(x.shape, stream=it + 1, dtype=x.dtype, device=x.device)
            ct, cs = ctx.at(t), ctx.at(s)
            x1 = ev.check(x - h * ct.reverse_drift(x, ev.eps(x, ct)) + (ct.g * math.sqrt(h)) * z, s, "the solver state")
            x2 = 0.5 * (x + x1 - h * cs.reverse_drift(x1, ev.eps(x1, cs)) + (cs.g * math.sqrt(h)) * z)
            x2 = ev.check(x2, s, "the solver state")
            delta = torch.maximum(x1.abs(), x_prev.abs()).mul(self.rtol).clamp_min(self.atol)
            r = (x1 - x2) / delta
            err = float((r.double() if r.device.type == "cpu" else r).pow(2).mean().sqrt())  # no float64 on MPS
            if err <= 1:
                x, x_prev, t = x2, x1, s
            h = min(t - t_min, self.safety * h * max(err, 1e-10) ** -self.exponent)
            it += 1
        traj = torch.stack([x_start, x]) if return_trajectory else None
        return SolverResult(x, ctx.grid[[0, -1]], traj)
