"""The base of every forward SDE: :class:`SDE` (what a subclass gives and what it derives) and :class:`Coefs`,
the coefficients at one time with the probability-flow and reverse-SDE drifts written once."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SDE", "Coefs", "append_dims", "TimeLike"]

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
