"""The variance-preserving family: :class:`VPSDE` (linear and cosine schedules), :class:`SubVPSDE`,
:class:`DiscreteVPSDE` (a DDPM chain in continuous time) and :func:`cosine_betas`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SDE, TimeLike, _as_time

__all__ = ["VPSDE", "SubVPSDE", "DiscreteVPSDE", "cosine_betas"]


class VPSDE(SDE):
    """Variance-preserving SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW`` (Song et al. 2021, eq. 11).

    ``schedule="linear"``: ``beta(t) = beta_min + t (beta_max - beta_min)``, so
    ``log alpha(t) = -1/2 (beta_min t + 1/2 (beta_max - beta_min) t^2)`` (DDPM's schedule in the limit).

    ``schedule="cosine"``: ``alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0))``, ``phi(t) = pi/2 (t + s)/(1 + s)``
    (Nichol & Dhariwal 2021, eq. 17), ``beta(t) = pi/(1 + s) tan(phi(t))``. ``alpha_bar`` reaches 0 at
    ``t = 1``, where ``log_snr`` is infinite, so the cosine SDE ends at ``T = 0.9946`` (as in Lu et al. 2022).

    ``sigma(t)^2 = 1 - alpha_bar(t)`` for both; the prior is ``N(0, I)``.
    """

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        schedule: str = "linear",
        cosine_s: float = 0.008,
        T: float | None = None,
    ):
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"VPSDE: unknown schedule {schedule!r}; expected 'linear' or 'cosine'")
        if schedule == "linear" and not (0 < beta_min <= beta_max and math.isfinite(beta_max)):
            raise ValueError(
                f"VPSDE: need 0 < beta_min <= beta_max < inf, got beta_min={beta_min}, beta_max={beta_max}"
            )
        if schedule == "cosine" and not cosine_s > 0:
            raise ValueError(f"VPSDE: cosine offset s must be > 0, got {cosine_s}")
        self.beta_min, self.beta_max, self.schedule, self.cosine_s = (
            float(beta_min),
            float(beta_max),
            schedule,
            cosine_s,
        )
        default_T = 1.0 if schedule == "linear" else 0.9946
        self.T = default_T if T is None else float(T)
        # The linear schedule extends past t = 1 (e.g. to reach DDPM's last timestep, alpha_bar = 4.04e-5 at
        # t = 1.0034); the cosine one ends where alpha_bar reaches 0.
        limit = math.inf if schedule == "linear" else default_T
        if not (0 < self.T <= limit) or not math.isfinite(self.T):
            raise ValueError(f"VPSDE({schedule}): T must lie in (0, {limit:g}], got {self.T}")
        if schedule == "cosine":
            phi0 = math.pi / 2 * cosine_s / (1 + cosine_s)
            self._log_cos0, self._tan_phi0 = math.log(math.cos(phi0)), math.tan(phi0)

    def _params(self) -> dict:
        if self.schedule == "linear":
            extra = {} if self.T == 1.0 else {"T": self.T}
            return {"beta_min": self.beta_min, "beta_max": self.beta_max, **extra}
        return {"schedule": "cosine", "cosine_s": self.cosine_s, "T": self.T}

    def _phi(self, t: Tensor) -> Tensor:
        return math.pi / 2 * (t + self.cosine_s) / (1 + self.cosine_s)

    def beta(self, t: TimeLike) -> Tensor:
        """``beta(t) = -2 d log alpha / dt``."""
        t = _as_time(t)
        if self.schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        return math.pi / (1 + self.cosine_s) * torch.tan(self._phi(t))

    def log_alpha(self, t: TimeLike) -> Tensor:
        t = _as_time(t)
        if self.schedule == "linear":
            return -0.5 * t * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * t)
        # cos(phi0 + d) / cos(phi0) = 1 - 2 sin^2(d/2) - tan(phi0) sin(d): no cancellation near t = 0 (exactly 0
        # there); near T, where the ratio is small, the direct quotient keeps its relative precision.
        d = math.pi / 2 * t / (1 + self.cosine_s)
        small = torch.log1p(-2 * torch.sin(d / 2) ** 2 - self._tan_phi0 * torch.sin(d))
        return torch.where(t < 0.5, small, torch.cos(self._phi(t)).log() - self._log_cos0)

    def marginal_std(self, t: TimeLike) -> Tensor:
        return (-torch.expm1(2 * self.log_alpha(t))).sqrt()

    def drift_coef(self, t: TimeLike) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion(self, t: TimeLike) -> Tensor:
        return self.beta(t).sqrt()

    def prior_std(self) -> float:
        return 1.0

    def t_from_log_snr(self, lam: TimeLike) -> Tensor:
        # alpha_bar = sigmoid(lam), so -log alpha_bar = softplus(-lam).
        neg_log_abar = torch.nn.functional.softplus(-_as_time(lam))
        if self.schedule == "linear":
            # Solve beta_min t + 1/2 (beta_max - beta_min) t^2 = L in the cancellation-free form.
            d = self.beta_max - self.beta_min
            return 2 * neg_log_abar / (self.beta_min + (self.beta_min**2 + 2 * d * neg_log_abar).sqrt())
        cos_phi = (-0.5 * neg_log_abar + self._log_cos0).exp()
        return 2 * (1 + self.cosine_s) / math.pi * torch.arccos(cos_phi) - self.cosine_s

    def discrete_betas(self, n: int = 1000) -> Tensor:
        """The ``n`` discrete betas of this schedule on ``[0, T]`` (timestep ``i`` at ``t = (i + 1) T / n``).

        Linear: ``linspace(beta(0) T / n, beta(T) T / n, n)``, which for ``T = 1`` is Ho et al.'s sequence
        (1e-4 to 0.02 for n = 1000), the one pretrained DDPM models use; its ``alpha_bar`` matches the
        continuous one to O(1/n). Cosine: ``1 - alpha_bar(t_i) / alpha_bar(t_{i-1})``, exact at the knots.
        Nichol & Dhariwal's own chain (on ``[0, 1]``, clipped at 0.999) is :func:`cosine_betas`.
        """
        if self.schedule == "linear":
            return torch.linspace(
                float(self.beta(0.0)) * self.T / n, float(self.beta(self.T)) * self.T / n, n, dtype=torch.float64
            )
        return super().discrete_betas(n)


def cosine_betas(n: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's (2021, eq. 17) discrete cosine chain: ``beta_i = 1 - f(i/n) / f((i-1)/n)``, clipped.

    ``f(t) = cos^2(pi/2 (t + s)/(1 + s))``; the last beta is 1 before clipping. Use it with
    :class:`DiscreteVPSDE` for models trained on this chain.
    """
    t = torch.arange(n + 1, dtype=torch.float64) / n
    f = torch.cos(math.pi / 2 * (t + s) / (1 + s)) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


class SubVPSDE(VPSDE):
    """Sub-VP SDE ``dx = -1/2 beta x dt + sqrt(beta (1 - exp(-2 int_0^t beta))) dW`` (Song et al. 2021, eq. 12).

    Same mean as the VP SDE, ``sigma(t) = 1 - alpha_bar(t)`` (so its variance never exceeds VP's).
    """

    def marginal_std(self, t: TimeLike) -> Tensor:
        return -torch.expm1(2 * self.log_alpha(t))

    def diffusion(self, t: TimeLike) -> Tensor:
        abar = self.alpha_bar(t)
        return (self.beta(t) * (1 - abar**2)).sqrt()

    def t_from_log_snr(self, lam: TimeLike) -> Tensor:
        # alpha_bar / (1 - alpha_bar)^2 = e^lam  ->  the root of e^lam a^2 - (2 e^lam + 1) a + e^lam in (0, 1):
        # a = 2 e^lam / (2 e^lam + 1 + sqrt(4 e^lam + 1))  (the stable form of the smaller root).
        e = _as_time(lam).exp()
        abar = 2 * e / (2 * e + 1 + (4 * e + 1).sqrt())
        return super().t_from_log_snr(torch.log(abar) - torch.log1p(-abar))


class DiscreteVPSDE(SDE):
    """The VP SDE of a discrete DDPM chain: ``alpha_bar`` interpolated between the chain's timesteps.

    Given the ``n`` betas a model was trained with, ``alpha_bar_i = prod_{j<=i} (1 - beta_j)`` sits at
    ``t_i = (i + 1) / n`` (``timestep_to_t``) and ``log alpha`` is piecewise linear in ``t`` through
    ``(0, 0), (t_0, log alpha_0), ..., (1, log alpha_{n-1})`` (Lu et al. 2022, DPM-Solver, appendix
    "discrete-time DPMs"). On the grid ``t_i`` every sampler then sees exactly the chain's ``alpha_bar``:
    DDPM on the uniform grid ``t_{n-1}, ..., t_0`` with ``denoise=True`` is Ho et al.'s sampler, step for step.
    Between knots ``beta(t) = -2 d log alpha/dt`` is piecewise constant. Wrap the model with
    :func:`scoresde.param.discrete_time_model` so it receives (fractional) timestep indices.
    """

    def __init__(self, betas):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
        if betas.numel() < 2 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("DiscreteVPSDE: need at least 2 betas, each in (0, 1)")
        self.n = betas.numel()
        self._betas = betas
        self._knots = torch.linspace(0, 1, self.n + 1, dtype=torch.float64)
        self._log_alpha = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.cumsum(torch.log1p(-betas), 0)])
        self.t_min = 1.0 / self.n  # the chain's first timestep

    def _params(self) -> dict:
        return {"n": self.n, "beta_0": float(self._betas[0]), "beta_last": float(self._betas[-1])}

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        k = (t * self.n).floor().clamp(0, self.n - 1).long()
        return k.cpu(), (t - k.to(t.dtype) / self.n) * self.n

    def log_alpha(self, t: TimeLike) -> Tensor:
        t = _as_time(t)
        k, frac = self._segment(t)
        lo, hi = self._log_alpha[k].to(t), self._log_alpha[k + 1].to(t)
        return lo + frac * (hi - lo)

    def marginal_std(self, t: TimeLike) -> Tensor:
        return (-torch.expm1(2 * self.log_alpha(t))).sqrt()

    def drift_coef(self, t: TimeLike) -> Tensor:
        t = _as_time(t)
        k, _ = self._segment(t)
        return ((self._log_alpha[k + 1] - self._log_alpha[k]) * self.n).to(t)

    def diffusion(self, t: TimeLike) -> Tensor:
        return (-2 * self.drift_coef(t)).sqrt()

    def prior_std(self) -> float:
        return 1.0

    def t_from_log_snr(self, lam: TimeLike) -> Tensor:
        lam = _as_time(lam)
        log_a = -0.5 * torch.nn.functional.softplus(-lam)  # log alpha = 1/2 log sigmoid(lam)
        desc = -self._log_alpha  # increasing in t
        k = (torch.searchsorted(desc, (-log_a).cpu().contiguous(), right=True) - 1).clamp(0, self.n - 1)
        lo, hi = self._log_alpha[k].to(lam), self._log_alpha[k + 1].to(lam)
        return (k.to(lam) + (log_a - lo) / (hi - lo)) / self.n

    def discrete_betas(self, n: int = 1000) -> Tensor:
        if n != self.n:
            raise ValueError(f"DiscreteVPSDE holds a chain of {self.n} steps, not {n}")
        return self._betas.clone()
