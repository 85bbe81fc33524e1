"""What every solver shares: the declared attributes, and the evaluator that counts and checks score calls."""

from __future__ import annotations

import inspect
import math
from typing import ClassVar

import torch
from torch import Tensor

from ..noise import NoiseSource
from ..param import Score
from ..sde import SDE

__all__ = ["Solver", "Evaluator", "NonFiniteError", "SolverResult"]


class NonFiniteError(FloatingPointError):
    """The score (or the state) became NaN or infinite during sampling; the message names the step and time."""


class Evaluator:
    """The only door from a solver to the score: one model call per method call, counted and checked.

    ``step`` is set by the solver (0-based) so a non-finite value can be reported with its step and time.
    """

    def __init__(self, score: Score, method: str, n_steps: int | None):
        self.score, self.method, self.n_steps = score, method, n_steps
        self.step: int | None = None
        self._nfe0 = score.nfe

    @property
    def sde(self) -> SDE:
        return self.score.sde

    @property
    def nfe(self) -> int:
        """Model calls made through this evaluator so far (read from the score's own counter)."""
        return self.score.nfe - self._nfe0

    def where(self, t: float) -> str:
        step = (
            ""
            if self.step is None
            else f"step {self.step + 1}" + (f" of {self.n_steps}" if self.n_steps else "") + ", "
        )
        return f"{step}t = {t:.6g}, model evaluation {self.nfe}"

    def check(self, value: Tensor, t: float, what: str = "the score") -> Tensor:
        # One reduction instead of an elementwise mask: NaN and inf propagate into the sum; a sum that
        # overflows from finite values is told apart by the exact check.
        if not torch.isfinite(value.sum()) and not torch.isfinite(value).all():
            raise NonFiniteError(f"{self.method}: {what} returned non-finite values (NaN/inf) at {self.where(t)}")
        return value

    def eps(self, x: Tensor, t: float) -> Tensor:
        return self.check(self.score.eps(x, t), t)

    def x0(self, x: Tensor, t: float) -> Tensor:
        return self.check(self.score.x0(x, t), t)

    def eps_and_x0(self, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        eps, x0 = self.score.eps_and_x0(x, t)
        return self.check(eps, t), self.check(x0, t)


class SolverResult:
    """What :meth:`Solver.solve` returns: final state, the times it reports, optional trajectory."""

    def __init__(self, x: Tensor, times: Tensor, trajectory: Tensor | None = None):
        self.x, self.times, self.trajectory = x, times, trajectory


class Solver:
    """Base class. A solver declares, as class attributes:

    - ``name``: the registry name, e.g. ``"ode-rk4"``;
    - ``kind``: ``"ode"`` (probability-flow ODE) or ``"sde"`` (reverse-time SDE);
    - ``order``: the global order of convergence (strong order for SDE solvers, weak order in ``weak_order``);
    - ``nfe_per_step``: model calls per step (``None`` for adaptive solvers, whose cost is only counted).

    Options (``eta``, ``rtol``...) are keyword arguments of ``__init__``; ``solve`` integrates from
    ``grid[0]`` down to ``grid[-1]`` (a float64 CPU tensor) using ``ev`` for every score evaluation and
    ``noise`` for every random draw.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    order: ClassVar[float]
    nfe_per_step: ClassVar[int | None]
    adaptive: ClassVar[bool] = False

    def __init__(self):
        pass

    @classmethod
    def make(cls, **options) -> Solver:
        """Construct with ``options``, naming the accepted ones if an option is unknown."""
        params = inspect.signature(cls.__init__).parameters
        unknown = [k for k in options if k not in params or k == "self"]
        if unknown:
            accepted = [p for p in params if p != "self"]
            raise TypeError(
                f"method {cls.name!r} got unexpected option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted) if accepted else 'none'}"
            )
        return cls(**options)

    @property
    def stochastic(self) -> bool:
        """Whether this configured solver draws noise after the prior."""
        return self.kind == "sde"

    def solve(
        self, ev: Evaluator, x: Tensor, grid: Tensor, noise: NoiseSource, return_trajectory: bool
    ) -> SolverResult:
        raise NotImplementedError


def coefs(sde: SDE, t: float) -> tuple[float, float]:
    """``(alpha(t), sigma(t))`` as Python floats, computed in float64."""
    return sde.scalar_coefs(t)[:2]


def check_finite_state(ev: Evaluator, x: Tensor, t: float) -> Tensor:
    """Raise if the solver's state diverged (the score may still have been finite)."""
    return ev.check(x, t, what="the solver state")


def ddim_noise_std(sde: SDE, t: float, s: float, eta: float) -> float:
    """DDIM's ``sigma_eta`` for a step ``t -> s`` (Song, Meng & Ermon 2021, eq. 16, for any alpha, sigma).

    ``sigma_eta^2 = eta^2 sigma_s^2 (1 - (alpha_t sigma_s)^2 / (alpha_s sigma_t)^2)``: ``eta = 1`` is the
    DDPM posterior variance, ``eta = 0`` the deterministic sampler.
    """
    a_t, s_t = coefs(sde, t)
    a_s, s_s = coefs(sde, s)
    r = (a_t * s_s) / (a_s * s_t)
    return eta * s_s * math.sqrt(max(0.0, 1 - r * r))
