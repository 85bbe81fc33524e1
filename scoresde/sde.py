"""Forward SDEs with linear drift, ``dx = f(t) x dt + g(t) dW``, and their closed-form marginals.

Every SDE here has a Gaussian transition kernel (Song et al. 2021, eq. 29 and appendix B)::

    x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I),   alpha(t) = exp(int_0^t f),
    sigma(t)^2 = alpha(t)^2 int_0^t g(s)^2 / alpha(s)^2 ds,

so ``alpha_bar = alpha^2``, ``marginal_std = sigma`` and ``log_snr = log(alpha^2 / sigma^2)``. A subclass
gives ``log_alpha``, ``marginal_std``, ``beta``-like coefficients and the inverse of ``log_snr``; the
base class derives the rest. Time functions accept a float or a tensor and return a tensor (float64 for
a float argument, so that solvers can do their time arithmetic in double precision).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SDE", "Coefs", "VPSDE", "SubVPSDE", "VESDE", "FlowSDE", "DiscreteVPSDE", "cosine_betas", "append_dims"]

TimeLike = float | Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions to a per-sample tensor ``v`` of shape ``(batch,)``."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def _as_time(t: TimeLike) -> Tensor:
    if isinstance(t, Tensor):
        return t if t.is_floating_point() else t.double()
    return torch.tensor(float(t), dtype=torch.float64)


class Coefs(NamedTuple):
    """Everything a solver needs of the SDE at one time ``t``, float64 Python floats.

    ``alpha``, ``sigma``: the marginal ``x_t = alpha x_0 + sigma eps``; ``f``, ``g``: the forward SDE
    ``dx = f x dt + g dW`` (``g2 = g^2``); ``lam = log(alpha / sigma)``, half the log-SNR, the time variable of the
    exponential integrators. Built by :meth:`SDE.coefs` (one time) or :meth:`SDE.coef_table` (a run's grid).
    """

    t: float
    alpha: float
    sigma: float
    f: float
    g: float
    g2: float
    lam: float

    @classmethod
    def make(cls, t: float, alpha: float, sigma: float, f: float, g: float) -> Coefs:
        # alpha = 0 (the flow path's pure-noise end, t = 1) or sigma = 0 (no noise): lambda is -inf or +inf
        lam = -math.inf if alpha == 0 else math.inf if sigma == 0 else math.log(alpha) - math.log(sigma)
        return cls(t, alpha, sigma, f, g, g * g, lam)

    def pf_drift(self, x: Tensor, eps: Tensor, scale: float = 1.0) -> Tensor:
        """``scale`` times the probability-flow drift ``f x - g^2 / 2 score = f x + g^2 / (2 sigma) eps``
        (Song et al. 2021, eq. 13), the coefficients scaled in float64 before they touch ``x``."""
        return (self.f * scale) * x + (self.g2 / (2 * self.sigma) * scale) * eps

    def reverse_drift(self, x: Tensor, eps: Tensor, scale: float = 1.0) -> Tensor:
        """``scale`` times the reverse-time SDE's drift ``f x - g^2 score = f x + g^2 / sigma eps`` (Song et al.
        2021, eq. 6), to be integrated backwards in time."""
        return (self.f * scale) * x + (self.g2 / self.sigma * scale) * eps


class SDE(ABC):
    """A forward SDE ``dx = f(t) x dt + g(t) dW`` on ``t in [0, T]``.

    Attributes:
        T: the end time (the prior lives there).
        t_min: the default time at which sampling stops (``t_min > 0``: the score blows up at 0).
    """

    T: float = 1.0
    t_min: float = 1e-3

    # --- what a subclass defines -------------------------------------------------------------
    @abstractmethod
    def log_alpha(self, t: TimeLike) -> Tensor:
        """``log alpha(t)``, the log of the mean coefficient of ``x_t | x_0``."""

    @abstractmethod
    def marginal_std(self, t: TimeLike) -> Tensor:
        """``sigma(t)``, the standard deviation of ``x_t | x_0``."""

    @abstractmethod
    def drift_coef(self, t: TimeLike) -> Tensor:
        """``f(t)`` with ``drift(x, t) = f(t) x``."""

    @abstractmethod
    def diffusion(self, t: TimeLike) -> Tensor:
        """``g(t)``, the diffusion coefficient."""

    @abstractmethod
    def t_from_log_snr(self, lam: TimeLike) -> Tensor:
        """The inverse of :meth:`log_snr`."""

    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the Gaussian prior ``N(0, prior_std^2 I)`` used at ``T``."""

    # --- derived quantities --------------------------------------------------------------------
    def check_time(self, t: TimeLike, low: float = 0.0) -> None:
        """Raise ``ValueError`` unless every entry of ``t`` lies in ``[low, T]``."""
        tt = _as_time(t)
        if tt.numel() == 0:
            return
        lo, hi = float(tt.min()), float(tt.max())
        if not (lo >= low and hi <= self.T) or math.isnan(lo) or math.isnan(hi):
            raise ValueError(
                f"{type(self).__name__}: time must lie in [{low:g}, {self.T:g}], got values in [{lo:g}, {hi:g}]"
            )

    def coefs(self, t: float) -> Coefs:
        """The coefficients at one time ``t`` as float64 Python floats (:class:`Coefs`)."""
        t = float(t)
        return Coefs.make(
            t, float(self.alpha(t)), float(self.marginal_std(t)), float(self.drift_coef(t)), float(self.diffusion(t))
        )

    def coef_table(self, times: Tensor) -> list[Coefs]:
        """:meth:`coefs` at every time of ``times`` (1-D, float64) with four vectorised calls: a run's table."""
        times = torch.as_tensor(times, dtype=torch.float64).cpu()
        cols = [self.alpha(times), self.marginal_std(times), self.drift_coef(times), self.diffusion(times)]
        return [Coefs.make(*row) for row in zip(times.tolist(), *(c.tolist() for c in cols), strict=True)]

    def alpha(self, t: TimeLike) -> Tensor:
        """``alpha(t) = sqrt(alpha_bar(t))``, the mean coefficient."""
        return self.log_alpha(t).exp()

    def alpha_bar(self, t: TimeLike) -> Tensor:
        """``alpha_bar(t) = alpha(t)^2`` (Ho et al. 2020 notation)."""
        return (2 * self.log_alpha(t)).exp()

    def log_snr(self, t: TimeLike) -> Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)``, decreasing in ``t`` (Kingma et al. 2021)."""
        return 2 * self.log_alpha(t) - 2 * self.marginal_std(t).log()

    def marginal(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``x_t | x_0``; ``t`` is a float or a ``(batch,)`` tensor.

        The mean has ``x0``'s shape; the std is broadcastable against it.
        """
        a, s = self._per_sample_coefs(t, x0)
        return a * x0, s

    def perturb(
        self, x0: Tensor, t: TimeLike, generator: torch.Generator | None = None, check: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Draw ``x_t = alpha(t) x0 + sigma(t) eps`` with ``eps ~ N(0, I)``; returns ``(x_t, eps)``.

        ``check=False`` skips the range check of ``t``, which reads its values back to the host: for times the
        caller drew inside ``[0, T]`` itself (the training loss, every step).
        """
        if check:
            self.check_time(t)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        mean, std = self.marginal(x0, t)
        return mean + std * eps, eps

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        """The forward drift ``f(t) x``."""
        return self._per_sample(self.drift_coef(t), x) * x

    def prior_sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None, **kw) -> Tensor:
        """Draw from the prior ``N(0, prior_std^2 I)``; ``kw`` may carry ``dtype`` and ``device``."""
        return self.prior_std() * torch.randn(shape, generator=generator, **kw)

    def prior_logp(self, x: Tensor) -> Tensor:
        """Log-density of the prior at ``x``, summed over all but the batch dimension, shape ``(batch,)``."""
        s = self.prior_std()
        d = x[0].numel()
        sq = x.flatten(1).pow(2).sum(1)
        return -0.5 * sq / s**2 - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def transition(self, s: TimeLike, t: TimeLike) -> tuple[Tensor, Tensor]:
        """``(alpha_{t|s}, sigma_{t|s})`` of the kernel ``x_t | x_s`` for ``s <= t``."""
        a = (self.log_alpha(t) - self.log_alpha(s)).exp()
        var = self.marginal_std(t) ** 2 - a**2 * self.marginal_std(s) ** 2
        return a, var.clamp_min(0).sqrt()

    # --- discrete-time view -------------------------------------------------------------------------
    def timestep_to_t(self, i: TimeLike, n: int = 1000) -> Tensor:
        """Continuous time of discrete (0-based) timestep ``i`` of an ``n``-step chain: ``t = (i + 1) T / n``."""
        return (_as_time(i) + 1) * self.T / n

    def t_to_timestep(self, t: TimeLike, n: int = 1000) -> Tensor:
        """Inverse of :meth:`timestep_to_t` (fractional for times between grid points)."""
        return _as_time(t) * n / self.T - 1

    def discrete_alpha_bar(self, n: int = 1000) -> Tensor:
        """``alpha_bar`` of the ``n``-step chain, ``prod_{j<=i} (1 - beta_j)``, shape ``(n,)`` float64."""
        return torch.cumprod(1 - self.discrete_betas(n), 0)

    def discrete_betas(self, n: int = 1000) -> Tensor:
        """The ``n`` betas of the discrete chain whose ``alpha_bar_i`` equals ``alpha_bar(timestep_to_t(i))``."""
        t = torch.arange(n + 1, dtype=torch.float64) * self.T / n
        return -torch.expm1(2 * (self.log_alpha(t[1:]) - self.log_alpha(t[:-1])))

    # --- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _per_sample(c: Tensor, x: Tensor) -> Tensor:
        c = c.to(dtype=x.dtype, device=x.device)
        return append_dims(c, x.ndim) if c.ndim == 1 else c

    def _per_sample_coefs(self, t: TimeLike, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._per_sample(self.alpha(t), x), self._per_sample(self.marginal_std(t), x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._params().items())})"

    def _params(self) -> dict:
        return {}


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
