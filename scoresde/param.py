"""Parameterisations: one conversion layer between what a model predicts and the score.

With ``x_t = alpha x_0 + sigma eps`` (see :mod:`scoresde.sde`), the identities used throughout are::

    score(x, t) = grad log p_t(x) = -eps / sigma              (Song et al. 2021, Vincent 2011)
    x0 = (x - sigma eps) / alpha                               (Tweedie: x0 = E[x_0 | x_t])
    v  = alpha eps - sigma x0                                  (Salimans & Ho 2022, for alpha^2 + sigma^2 = 1)
    D(x / alpha; sigma / alpha) = x0                           (Karras et al. 2022, the denoiser in sigma-space)
    u  = eps - x0                                              (the rectified-flow velocity, Liu et al. 2023)

Every class exposes ``score``, ``eps`` and ``x0``; each call evaluates the model exactly once and adds one
to ``nfe``, the count the samplers report. A model is any callable ``model(x, t) -> Tensor`` of ``x``'s
shape with ``t`` a float tensor of shape ``(batch,)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .sde import SDE, Coefs, append_dims

__all__ = ["Score", "EpsilonScore", "DataScore", "VScore", "FlowVelocityScore", "DenoiserScore", "discrete_time_model"]

Model = Callable[[Tensor, Tensor], Tensor]


class Score:
    """Base class: wraps ``model`` and converts its output with :meth:`to_eps` and :meth:`to_x0`.

    Subclasses implement the conversion from their native prediction; the base class handles time
    broadcasting, shape checks and counting model evaluations in ``self.nfe``.
    """

    def __init__(self, model: Model, sde: SDE):
        if not callable(model):
            raise TypeError(f"{type(self).__name__}: model must be callable as model(x, t), got {type(model).__name__}")
        self.model = model
        self.sde = sde
        self.nfe = 0

    # --- the model call ---------------------------------------------------------------------------
    def _times(self, x: Tensor, t: float | Tensor) -> Tensor:
        """``t`` as a ``(batch,)`` tensor on ``x``'s device, in ``x``'s dtype, but at least float32: bfloat16 would
        round ``t = 0.999`` to 1 (timestep 1000 of a 1000-step chain), float16 keeps only 11 bits."""
        if x.ndim < 1:
            raise ValueError("x must have a leading batch dimension")
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        t = torch.as_tensor(t, dtype=dtype, device=x.device)
        if t.ndim == 0:
            return t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or of shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    def _call(self, x: Tensor, t: Tensor) -> Tensor:
        """One model call, counted; the output must have ``x``'s shape and is returned in ``x``'s dtype (a float64
        model on a float32 state would otherwise turn the samples into float64 one step at a time)."""
        out = self.model(x, t)
        self.nfe += 1
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"{type(self).__name__}: model output has shape {got}, expected x's shape {tuple(x.shape)}"
            )
        return out if out.dtype == x.dtype else out.to(x.dtype)

    def _coefs(self, x: Tensor, t: float | Tensor, coefs: Coefs | None) -> tuple[Tensor | float, Tensor | float]:
        """``alpha, sigma`` at ``t``: Python floats (float64 arithmetic) for one shared time, else per sample.
        A solver passes the run's ``coefs`` of that time (:meth:`SDE.coefs`) so they are not computed again."""
        if not isinstance(t, Tensor) or t.ndim == 0:
            c = self.sde.coefs(float(t)) if coefs is None else coefs
            return c.alpha, c.sigma
        a = append_dims(self.sde.alpha(t).to(x.dtype), x.ndim)
        s = append_dims(self.sde.marginal_std(t).to(x.dtype), x.ndim)
        return a, s

    def _eval(
        self, x: Tensor, t: float | Tensor, coefs: Coefs | None = None
    ) -> tuple[Tensor, Tensor | float, Tensor | float]:
        tt = self._times(x, t)
        a, s = self._coefs(x, t, coefs)
        return self._call(x, tt), a, s

    # --- conversions a subclass defines ----------------------------------------------------------
    def to_eps(self, out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def to_x0(self, out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    # --- public views -------------------------------------------------------------------------------
    def eps(self, x: Tensor, t: float | Tensor, coefs: Coefs | None = None) -> Tensor:
        """The noise prediction ``eps(x, t)`` (one model call)."""
        out, a, s = self._eval(x, t, coefs)
        return self.to_eps(out, x, a, s)

    def x0(self, x: Tensor, t: float | Tensor, coefs: Coefs | None = None) -> Tensor:
        """The data prediction ``x0(x, t) = E[x_0 | x_t = x]`` (one model call)."""
        out, a, s = self._eval(x, t, coefs)
        return self.to_x0(out, x, a, s)

    def score(self, x: Tensor, t: float | Tensor, coefs: Coefs | None = None) -> Tensor:
        """``grad_x log p_t(x) = -eps / sigma`` (one model call)."""
        out, a, s = self._eval(x, t, coefs)
        return -self.to_eps(out, x, a, s) / s

    __call__ = score

    def eps_and_x0(self, x: Tensor, t: float | Tensor, coefs: Coefs | None = None) -> tuple[Tensor, Tensor]:
        """Both predictions from a single model call."""
        out, a, s = self._eval(x, t, coefs)
        return self.to_eps(out, x, a, s), self.to_x0(out, x, a, s)

    def velocity(self, x: Tensor, t: float | Tensor, coefs: Coefs | None = None) -> Tensor:
        """The rectified-flow velocity ``eps - x0`` (one model call): what a flow-matching network predicts, and
        ``dx/dt`` of the probability-flow ODE on :class:`~scoresde.sde.FlowSDE` with ``shift = 1``."""
        eps, x0 = self.eps_and_x0(x, t, coefs)
        return eps - x0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sde!r})"


class EpsilonScore(Score):
    """The model predicts the noise ``eps`` (Ho et al. 2020): ``score = -eps / sigma``."""

    def to_eps(self, out, x, alpha, sigma):
        return out

    def to_x0(self, out, x, alpha, sigma):
        return (x - sigma * out) / alpha


class DataScore(Score):
    """The model predicts the clean data ``x0``: ``eps = (x - alpha x0) / sigma``."""

    def to_eps(self, out, x, alpha, sigma):
        return (x - alpha * out) / sigma

    def to_x0(self, out, x, alpha, sigma):
        return out


class VScore(Score):
    """The model predicts ``v = alpha eps - sigma x0`` (Salimans & Ho 2022, eq. 9 generalised).

    With ``x = alpha x0 + sigma eps``: ``eps = (alpha v + sigma x) / (alpha^2 + sigma^2)`` and
    ``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)``; the denominator is 1 for VP SDEs.
    """

    def to_eps(self, out, x, alpha, sigma):
        return (alpha * out + sigma * x) / (alpha**2 + sigma**2)

    def to_x0(self, out, x, alpha, sigma):
        return (alpha * x - sigma * out) / (alpha**2 + sigma**2)


class FlowVelocityScore(Score):
    """The model predicts the rectified-flow velocity ``u = eps - x0`` (Liu et al. 2023; Lipman et al. 2023;
    Esser et al. 2024), the target of the conditional flow-matching loss on :class:`~scoresde.sde.FlowSDE`.

    Not the diffusion v-prediction of :class:`VScore` (``alpha eps - sigma x0``). With ``x = alpha x0 + sigma eps``:
    ``x0 = (x - sigma u) / (alpha + sigma)`` and ``eps = (x + alpha u) / (alpha + sigma)``; the denominator is 1
    on the flow path (any shift), so ``x0 = x - sigma u``, and both stay finite at its pure-noise end ``alpha = 0``.
    """

    def to_eps(self, out, x, alpha, sigma):
        return (x + alpha * out) / (alpha + sigma)

    def to_x0(self, out, x, alpha, sigma):
        return (x - sigma * out) / (alpha + sigma)


class DenoiserScore(Score):
    """An EDM / k-diffusion denoiser ``D(x_hat, sigma_hat) -> x0`` in sigma-space (Karras et al. 2022, eq. 3).

    Such a model sees the scaled state ``x_hat = x / alpha`` and its noise level ``sigma_hat = sigma / alpha``
    (a ``(batch,)`` tensor) instead of ``(x, t)``; this wrapper does the change of variables.
    """

    def _eval(self, x, t, coefs=None):
        tt = self._times(x, t)
        a, s = self._coefs(x, t, coefs)
        if isinstance(a, float):
            sigma_hat = torch.full_like(tt, s / a)
        else:
            sigma_hat = (self.sde.marginal_std(tt) / self.sde.alpha(tt)).to(x.dtype)
        return self._call(x / a, sigma_hat), a, s

    def to_eps(self, out, x, alpha, sigma):
        return (x - alpha * out) / sigma

    def to_x0(self, out, x, alpha, sigma):
        return out


def discrete_time_model(model: Callable[[Tensor, Tensor], Tensor], n: int = 1000) -> Model:
    """Adapt a model trained on discrete timesteps ``0..n-1`` to continuous ``t``.

    Returns ``model(x, t * n - 1)``: timestep ``i`` sits at ``t = (i + 1) / n`` (see
    :meth:`scoresde.sde.SDE.timestep_to_t`); between knots the model gets a fractional index, as in
    DPM-Solver's treatment of discrete-time models. Use it with :class:`~scoresde.sde.DiscreteVPSDE`.
    """

    def continuous(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t * n - 1)

    return continuous
