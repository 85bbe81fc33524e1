"""The solver protocol and the one stepping loop every fixed-grid solver runs on.

A fixed-grid solver is two small functions and its declared attributes (diffrax's ``init``/``step``)::

    init(ctx, x) -> state                      # how to start, from the prior draw x at grid[0]
    step(ctx, k, x, state) -> (x, state)       # step k: grid[k] -> grid[k + 1], from the state it returned last

:func:`integrate` owns everything else: the float64 grid and its coefficient table (:class:`Context`, built
once per run), the step index, the finiteness check that names method, step and time, trajectory saving,
the noise stream of each (step, draw), NFE counting (through the :class:`Evaluator`) and the user's
``callback(info)`` after each step (k-diffusion's convention), which may return a replacement state.

Solvers built on an engine (torchdiffeq, torchsde) or with their own step-size control override
:meth:`Solver.solve` and return the same :class:`SolverResult`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..param import Score
from ..sde import SDE, Coefs

__all__ = [
    "Solver",
    "Evaluator",
    "Context",
    "State",
    "StepInfo",
    "NonFiniteError",
    "SolverResult",
    "integrate",
    "REPEAT_STRIDE",
]

# Noise stream of draw j of step k on pass r (RePaint repeats a step): 1 + k D + j + r REPEAT_STRIDE, D the
# solver's declared draws per step. Stream 0 is the prior. Streams are hashed, so any integer is as good as any.
REPEAT_STRIDE = 1 << 40


class NonFiniteError(FloatingPointError):
    """The score (or the state) became NaN or infinite during sampling; the message names the step and time."""


CHECKS = ("step", "call", "end")


class Evaluator:
    """The only door from a solver to the score: one model call per method call, counted and checked.

    ``step`` is set by the stepping loop (0-based) so that a non-finite value is reported with its step and time.
    ``inputs(x, c)``, if given, maps every state before the model sees it (inpainting puts the known entries on
    their path at the evaluation's time, so that stages inside a step see them too).

    ``check`` says how often values are tested for NaN/inf; each test is one host synchronisation (the device
    waits for the host to read a flag), so on a GPU it is a cost per test, not per element:

    - ``"step"`` (default): the stepping loop tests the state once after each step (at most one synchronisation per
      step); model outputs and a step's inner stages are not tested one by one. Solvers that run on an engine
      (torchdiffeq, torchsde) or choose their own steps have no step boundary of ours and test every model call.
    - ``"call"``: every model output, every inner stage and the state after every step (the most precise report:
      the first model call that went wrong).
    - ``"end"``: only the samples at the end (:func:`~scoresde.sample` tests them); no synchronisation in the loop.
    """

    def __init__(
        self,
        score: Score,
        method: str,
        n_steps: int | None,
        inputs: Callable[[Tensor, Coefs], Tensor] | None = None,
        check: str = "step",
    ):
        if check not in CHECKS:
            raise ValueError(f"check must be one of {', '.join(map(repr, CHECKS))}, got {check!r}")
        self.score, self.method, self.n_steps, self.inputs = score, method, n_steps, inputs
        self.check_mode = check
        # whether model outputs and inner stages are tested; the stepping loop narrows it for "step"
        self.check_calls = check != "end"
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

    def check(self, value: Tensor, t: float, what: str = "the score", *, always: bool = False) -> Tensor:
        """``value`` itself; raises :class:`NonFiniteError` if it holds NaN/inf and is tested (``check_calls``, or
        ``always``)."""
        if not (always or self.check_calls):
            return value
        # One reduction instead of an elementwise mask: NaN and inf propagate into the sum; a sum that
        # overflows from finite values is told apart by the exact check.
        if not torch.isfinite(value.sum()) and not torch.isfinite(value).all():
            raise NonFiniteError(f"{self.method}: {what} returned non-finite values (NaN/inf) at {self.where(t)}")
        return value

    def eps(self, x: Tensor, c: Coefs) -> Tensor:
        x = x if self.inputs is None else self.inputs(x, c)
        return self.check(self.score.eps(x, c.t, c), c.t)

    def x0(self, x: Tensor, c: Coefs) -> Tensor:
        x = x if self.inputs is None else self.inputs(x, c)
        return self.check(self.score.x0(x, c.t, c), c.t)

    def eps_and_x0(self, x: Tensor, c: Coefs) -> tuple[Tensor, Tensor]:
        x = x if self.inputs is None else self.inputs(x, c)
        eps, x0 = self.score.eps_and_x0(x, c.t, c)
        return self.check(eps, c.t), self.check(x0, c.t)


@dataclass(frozen=True)
class Context:
    """What a run hands its solver: the grid, its coefficient table, the evaluator and the noise.

    Attributes:
        grid: the times, float64 CPU tensor, decreasing from ``T`` to ``t_min``; ``times`` as Python floats.
        coefs: :class:`~scoresde.sde.Coefs` at every grid time, computed once for the run.
        ev: the :class:`Evaluator`; ``noise``: the per-sample noise source.
        draws_per_step: ``D``, the noise draws a step may make (step ``k``'s draw ``j`` is stream ``1 + k D + j``).
        repeat: the pass of a repeated step (RePaint); its draws are fresh.
    """

    grid: Tensor
    times: tuple[float, ...]
    coefs: tuple[Coefs, ...]
    ev: Evaluator
    noise: Any
    draws_per_step: int = 0
    repeat: int = 0
    _known: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, ev: Evaluator, grid: Tensor, noise, draws_per_step: int = 0) -> Context:
        grid = grid.to(torch.float64).cpu()
        table = ev.sde.coef_table(grid)
        known = {c.t: c for c in table}
        return cls(grid, tuple(c.t for c in table), tuple(table), ev, noise, draws_per_step, _known=known)

    @property
    def sde(self) -> SDE:
        return self.ev.sde

    @property
    def n_steps(self) -> int:
        return len(self.times) - 1

    def at(self, t: float) -> Coefs:
        """The coefficients at ``t``: from the table at a grid time, else computed once per run and kept."""
        c = self._known.get(t)
        if c is None:
            c = self._known[t] = self.sde.coefs(t)
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
    """A fixed-grid solver's state between steps, returned by ``init`` and ``step`` (never mutated).

    ``denoised``: the data prediction of the step just taken, at its start time, where the solver has one;
    ``history``: ``(lambda, x0)`` of past model calls, most recent last (multistep methods);
    ``pending``: work a step leaves to the next (UniPC's corrector, which needs the next model call).
    """

    denoised: Tensor | None = None
    history: tuple = ()
    pending: Any = None


@dataclass
class StepInfo:
    """What ``callback(info)`` receives after step ``k`` of ``n_steps`` (from ``t`` to ``s``).

    ``x`` is the new state at ``s``; ``denoised`` the solver's data prediction at ``t`` (``None`` if it has
    none); ``state`` the solver's :class:`State`. ``repeat`` counts the passes of a repeated step (RePaint), of
    ``repeats``. The callback may return a tensor of ``x``'s shape to replace the state (on a pass that is not
    the last, the state at ``t`` to take the step again from).
    """

    k: int
    n_steps: int
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


def _replacement(out, x: Tensor, ev: Evaluator, t: float) -> Tensor:
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
    """Run a fixed-grid solver over ``ctx.grid`` from ``x`` (the state at ``grid[0]``).

    After each step the state is tested for NaN/inf (a non-finite value names the method, step and time; how often
    is the evaluator's ``check``: once per step by default, one host synchronisation), then ``callback(info)`` may
    replace it (the replacement is tested instead). With ``repeats = R > 1`` every step is taken ``R`` times: after
    a pass that is not the last, the callback must return the state at the step's start to take it again from,
    with the solver's state from before the step and fresh noise (RePaint's resampling).
    """
    ev, ts, n = ctx.ev, ctx.times, ctx.n_steps
    mode = ev.check_mode
    calls, ev.check_calls = ev.check_calls, mode == "call"  # in "step" mode the state after the step stands for all
    try:
        state = solver.init(ctx, x)
        traj = [x] if return_trajectory else None
        for k in range(n):
            ev.step = k
            for r in range(repeats):
                c = ctx if r == 0 else replace(ctx, repeat=r)
                x_new, new_state = solver.step(c, k, x, state)
                if mode == "call":
                    x_new = ev.check(x_new, ts[k + 1], what="the solver state")
                out = None
                if callback is not None:
                    info = StepInfo(k, n, ts[k], ts[k + 1], x_new, new_state.denoised, new_state, r, repeats)
                    out = callback(info)
                    if out is not None:
                        x_new = _replacement(out, x_new, ev, ts[k + 1])
                    elif r + 1 < repeats:
                        raise ValueError(
                            f"{ev.method}: a repeated step needs the callback to return the state to redo it"
                        )
                if mode == "step" and out is None:
                    ev.check(x_new, ts[k + 1], what="the solver state", always=True)
                if r + 1 < repeats:
                    x = x_new
                else:
                    x, state = x_new, new_state
            if traj is not None:
                traj.append(x)
    finally:
        ev.check_calls = calls
    return SolverResult(x, ctx.grid, torch.stack(traj) if traj is not None else None)


class Solver:
    """Base class. A solver declares, as class attributes:

    - ``name``: the registry name, e.g. ``"ode-rk4"``;
    - ``kind``: ``"ode"`` (probability-flow ODE) or ``"sde"`` (reverse-time SDE);
    - ``order``: the global order of convergence (strong order for SDE solvers, weak order in ``weak_order``);
    - ``nfe_per_step``: model calls per step (``None`` for adaptive solvers, whose cost is only counted);
    - ``draws_per_step``: noise draws a step may make (0 for deterministic methods);
    - ``default_grid``: the grid ``sample(grid=None)`` uses.

    Options (``eta``, ``rtol``...) are keyword arguments of ``__init__``. A fixed-grid solver implements
    :meth:`init` and :meth:`step`; :meth:`solve` runs them through :func:`integrate`.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    order: ClassVar[float]
    nfe_per_step: ClassVar[int | None]
    adaptive: ClassVar[bool] = False
    draws_per_step: int = 0
    default_grid: ClassVar[str] = "uniform"

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

    def init(self, ctx: Context, x: Tensor) -> State:
        return State()

    def step(self, ctx: Context, k: int, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError(f"{self.name} has no fixed-grid step")

    def solve(
        self, ctx: Context, x: Tensor, *, callback: Callback | None = None, return_trajectory: bool = False
    ) -> SolverResult:
        return integrate(self, ctx, x, callback=callback, return_trajectory=return_trajectory)


def ddim_noise_std(ct: Coefs, cs: Coefs, eta: float) -> float:
    """DDIM's ``sigma_eta`` for a step ``t -> s`` (Song, Meng & Ermon 2021, eq. 16, for any alpha, sigma).

    ``sigma_eta^2 = eta^2 sigma_s^2 (1 - (alpha_t sigma_s)^2 / (alpha_s sigma_t)^2)``: ``eta = 1`` is the
    DDPM posterior variance, ``eta = 0`` the deterministic sampler.
    """
    r = (ct.alpha * cs.sigma) / (cs.alpha * ct.sigma)
    return eta * cs.sigma * math.sqrt(max(0.0, 1 - r * r))
