"""The solver protocol and the one stepping loop every grid solver runs on.

Two declared kinds of solver (torchdiffeq's two bases):

- a :class:`GridSolver` is two small functions over a fixed grid and its declared attributes (diffrax's
  ``init``/``step``)::

      init(ctx, x) -> state                      # how to start, from the prior draw x at grid[0]
      step(ctx, k, x, state) -> (x, state)       # step k: grid[k] -> grid[k + 1], from the state it returned last

  with a frozen state of its family's own type (:class:`State` and its subclasses). :func:`integrate` owns
  everything else: the float64 grid and its coefficient table (:class:`Context`, built once per run), the step
  index, the finiteness check (an error is caught and given ``"step k of n"``), trajectory saving, the noise stream
  of each (step, draw), NFE counting (through the :class:`Evaluator`) and the user's ``callback(info)`` after each
  step (k-diffusion's convention), which may return a replacement state.
- an :class:`EngineSolver` implements :meth:`Solver.solve` itself (torchdiffeq, torchsde, or its own step-size
  control) and returns the same :class:`SolverResult`.

A configured solver reports its ``order`` and ``nfe_per_step`` from its options (a property where an option
changes them); :meth:`Solver.check` says whether it applies to a score, shape and grid.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..sde import SDE, Coefs
from .evaluator import CHECKS, Evaluator, NonFiniteError

__all__ = [
    "Solver",
    "GridSolver",
    "EngineSolver",
    "Evaluator",
    "Context",
    "State",
    "MultistepState",
    "StepInfo",
    "NonFiniteError",
    "SolverResult",
    "integrate",
    "REPEAT_STRIDE",
    "CHECKS",
]

# Noise stream of draw j of step k on pass r (RePaint repeats a step): 1 + k D + j + r REPEAT_STRIDE, D the
# solver's declared draws per step. Stream 0 is the prior. Streams are hashed, so any integer is as good as any.
REPEAT_STRIDE = 1 << 40


@dataclass(frozen=True)
class Context:
    """What a run hands its solver: the grid, its coefficient table, the evaluator and the noise.

    Attributes:
        grid: the times, float64 CPU tensor, decreasing from ``T`` to ``t_min``; ``times`` as Python floats.
        coefs: :class:`~scoresde.sde.Coefs` at every grid time, computed once for the run.
        ev: the :class:`Evaluator`; ``noise``: the per-sample noise source.
        draws_per_step: ``D``, the noise draws a step may make (step ``k``'s draw ``j`` is stream ``1 + k D + j``).
        repeat: the pass of a repeated step (RePaint); its draws are fresh.
        memo: the run's coefficients by time (the grid's, and those :meth:`at` computed off the grid). It is the
            one mutable part, and it is per run: :meth:`build` makes a new one, and only the views of this run
            (``replace(ctx, ...)``) share it; a value in it depends only on the SDE and ``t``.
    """

    grid: Tensor
    times: tuple[float, ...]
    coefs: tuple[Coefs, ...]
    ev: Evaluator
    noise: Any
    draws_per_step: int = 0
    repeat: int = 0
    memo: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, ev: Evaluator, grid: Tensor, noise, draws_per_step: int = 0) -> Context:
        grid = grid.to(torch.float64).cpu()
        table = ev.sde.coef_table(grid)
        memo = {c.t: c for c in table}
        return cls(grid, tuple(c.t for c in table), tuple(table), ev, noise, draws_per_step, memo=memo)

    @property
    def sde(self) -> SDE:
        return self.ev.sde

    @property
    def n_steps(self) -> int:
        return len(self.times) - 1

    def at(self, t: float) -> Coefs:
        """The coefficients at ``t``: from the table at a grid time, else computed once per run and kept."""
        c = self.memo.get(t)
        if c is None:
            c = self.memo[t] = self.sde.coefs(t)
        return c

    def randn(self, k: int, j: int, like: Tensor) -> Tensor:
        """Draw ``j`` of step ``k``: standard normals of ``like``'s shape, dtype and device, per sample."""
        return self.noise.randn(like.shape, stream=self.stream(k, j), dtype=like.dtype, device=like.device)

    def stream(self, k: int, j: int) -> int:
        """The noise stream of draw ``j`` of step ``k`` (on this pass): ``1 + k D + j + repeat REPEAT_STRIDE``."""
        if not 0 <= j < self.draws_per_step:
            raise RuntimeError(f"{self.ev.method}: declared {self.draws_per_step} draws per step, asked for draw {j}")
        return 1 + k * self.draws_per_step + j + self.repeat * REPEAT_STRIDE


@dataclass(frozen=True)
class State:
    """A grid solver's state between steps, returned by ``init`` and ``step`` (never mutated).

    ``denoised``: the data prediction of the step just taken, at its start time, where the solver has one. A family
    that carries more from step to step declares a subclass (:class:`MultistepState`, UniPC's and the fitted
    solver's states) as its ``state_type``.
    """

    denoised: Tensor | None = None


@dataclass(frozen=True)
class MultistepState(State):
    """The state of a multistep method: ``history`` holds ``(lambda, x0)`` of past model calls, most recent last."""

    history: tuple[tuple[float, Tensor], ...] = ()


@dataclass
class StepInfo:
    """What ``callback(info)`` receives after step ``k`` of ``n_steps`` (from ``t`` to ``s``).

    ``x`` is the new state at ``s``; ``denoised`` the solver's data prediction at ``t`` (``None`` if it has
    none); ``state`` the solver's :class:`State`. ``repeat`` counts the passes of a repeated step (RePaint), of
    ``repeats``. The callback may return a tensor of ``x``'s shape to replace the state (on a pass that is not
    the last, the state at ``t`` to take the step again from). An adaptive method reports its accepted steps,
    with ``n_steps = None`` (not known in advance).
    """

    k: int
    n_steps: int | None
    t: float
    s: float
    x: Tensor
    denoised: Tensor | None
    state: State | None = None
    repeat: int = 0
    repeats: int = 1


Callback = Callable[[StepInfo], "Tensor | None"]


class SolverResult:
    """What :meth:`Solver.solve` returns: final state, the times it reports, optional trajectory."""

    def __init__(self, x: Tensor, times: Tensor, trajectory: Tensor | None = None):
        self.x, self.times, self.trajectory = x, times, trajectory


def replacement(out, x: Tensor, ev: Evaluator, t: float) -> Tensor:
    """A callback's returned state, checked: of ``x``'s shape, cast to its dtype and device, finite (unless the
    run checks only at the end)."""
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{ev.method}: callback must return None or a tensor of shape {tuple(x.shape)}, got {got}")
    y = out.to(dtype=x.dtype, device=x.device)
    if ev.check_mode == "end":
        return y
    try:
        return ev.check(y, t, what="the callback", always=True)
    except NonFiniteError:
        ev.check(x, t, what="the solver state", always=True)  # name the solver if the state it handed over was bad
        raise


def integrate(
    solver: Solver,
    ctx: Context,
    x: Tensor,
    *,
    callback: Callback | None = None,
    repeats: int = 1,
    return_trajectory: bool = False,
) -> SolverResult:
    """Run a grid solver over ``ctx.grid`` from ``x`` (the state at ``grid[0]``).

    After each step the state is tested for NaN/inf (how often is the evaluator's ``check``: once per step by
    default, one host synchronisation); a :class:`NonFiniteError` raised by the step or the test is given the step
    (``"step k of n"``) and re-raised. Then ``callback(info)`` may replace the state (the replacement is tested
    instead). With ``repeats = R > 1`` every step is taken ``R`` times: after a pass that is not the last, the
    callback must return the state at the step's start to take it again from, with the solver's state from before
    the step and fresh noise (RePaint's resampling). Nothing is written into ``ctx`` or its evaluator: in ``"step"``
    mode the steps run on a view of the evaluator that does not test model calls one by one.
    """
    mode, ts, n = ctx.ev.check_mode, ctx.times, ctx.n_steps
    ev = ctx.ev.view(check_calls=mode == "call")  # in "step" mode the state after the step stands for all
    ctx = replace(ctx, ev=ev) if ev is not ctx.ev else ctx
    state = solver.init(ctx, x)
    traj = [x] if return_trajectory else None
    for k in range(n):
        for r in range(repeats):
            c = ctx if r == 0 else replace(ctx, repeat=r)
            try:
                x_new, new_state = solver.step(c, k, x, state)
                if mode == "call":
                    x_new = ev.check(x_new, ts[k + 1], what="the solver state")
            except NonFiniteError as e:
                e.locate(k, n)
                raise
            out = None
            if callback is not None:
                info = StepInfo(k, n, ts[k], ts[k + 1], x_new, new_state.denoised, new_state, r, repeats)
                out = callback(info)
                if out is None and r + 1 < repeats:
                    raise ValueError(f"{ev.method}: a repeated step needs the callback to return the state to redo it")
            try:
                if out is not None:
                    x_new = replacement(out, x_new, ev, ts[k + 1])
                elif mode == "step":
                    ev.check(x_new, ts[k + 1], what="the solver state", always=True)
            except NonFiniteError as e:
                e.locate(k, n)
                raise
            if r + 1 < repeats:
                x = x_new
            else:
                x, state = x_new, new_state
        if traj is not None:
            traj.append(x)
    return SolverResult(x, ctx.grid, torch.stack(traj) if traj is not None else None)


class Solver(abc.ABC):
    """Base class of both kinds (:class:`GridSolver`, :class:`EngineSolver`). A solver declares, as attributes:

    - ``name``: the registry name, e.g. ``"ode-rk4"``;
    - ``kind``: ``"ode"`` (probability-flow ODE) or ``"sde"`` (reverse-time SDE);
    - ``order``: the global order of convergence of the configured solver (strong order for SDE solvers, weak
      order in ``weak_order``); a property where an option changes it (UniPC's ``order``);
    - ``nfe_per_step``: model calls per step of the configured solver (``None`` for adaptive solvers, whose cost
      is only counted); a property where an option changes it (``pc``'s ``n_corrector``);
    - ``draws_per_step``: noise draws a step may make (0 for deterministic methods);
    - ``default_grid``: the grid ``sample(grid=None)`` uses; ``own_grid``: whether it runs only on it;
    - ``engine``: whether it drives an engine of its own through :meth:`solve` (set by the two kinds).

    Options (``eta``, ``rtol``...) are keyword arguments of ``__init__``; :func:`~scoresde.method_info` reports the
    attributes of the default configuration.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    order: float
    nfe_per_step: int | None
    engine: ClassVar[bool]
    adaptive: ClassVar[bool] = False
    own_grid: ClassVar[bool] = False
    state_type: ClassVar[type[State]] = State
    draws_per_step: int = 0
    default_grid: ClassVar[str] = "uniform"

    def __init__(self):  # noqa: B027 - a solver without options; make() reads the signature
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

    def check(self, score, shape: tuple[int, ...] | None = None, grid=None, dtype=None, device=None) -> int:
        """Refuse (``ValueError``) a score, sample shape or grid this solver does not apply to; returns the model
        calls the check made (reported as ``Samples.check_nfe``). Applies everywhere by default: 0 calls."""
        return 0

    def init(self, ctx: Context, x: Tensor) -> State:
        """The state before the first step: the family's empty state."""
        return self.state_type()

    def step(self, ctx: Context, k: int, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError(f"{self.name} has no grid step")

    def solve(
        self, ctx: Context, x: Tensor, *, callback: Callback | None = None, return_trajectory: bool = False
    ) -> SolverResult:
        """Run over ``ctx.grid`` from ``x``: a grid solver through :func:`integrate`; an engine solver its own way."""
        return integrate(self, ctx, x, callback=callback, return_trajectory=return_trajectory)


class GridSolver(Solver):
    """A solver on the stepping loop: it implements :meth:`step` (and :meth:`init` where its state needs one)."""

    engine = False

    @abc.abstractmethod
    def step(self, ctx: Context, k: int, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Step ``k``: ``grid[k] -> grid[k + 1]``; returns the new state and the family's :class:`State`."""


class EngineSolver(Solver):
    """A solver that drives its own engine (torchdiffeq, torchsde, a step-size controller): it implements
    :meth:`solve`. It may also offer a grid :meth:`step` for runs with a callback."""

    engine = True

    @abc.abstractmethod
    def solve(
        self, ctx: Context, x: Tensor, *, callback: Callback | None = None, return_trajectory: bool = False
    ) -> SolverResult:
        """Run over ``ctx`` from ``x``; the step of a non-finite value is derived from its time."""


def ddim_noise_std(ct: Coefs, cs: Coefs, eta: float) -> float:
    """DDIM's ``sigma_eta`` for a step ``t -> s`` (Song, Meng & Ermon 2021, eq. 16, for any alpha, sigma).

    ``sigma_eta^2 = eta^2 sigma_s^2 (1 - (alpha_t sigma_s)^2 / (alpha_s sigma_t)^2)``: ``eta = 1`` is the
    DDPM posterior variance, ``eta = 0`` the deterministic sampler.
    """
    r = (ct.alpha * cs.sigma) / (cs.alpha * ct.sigma)
    return eta * cs.sigma * math.sqrt(max(0.0, 1 - r * r))
