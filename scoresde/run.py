"""The one run builder: what every sampling run is made of, assembled in one place.

:func:`prepare_run` builds a run from its grid: the :class:`~scoresde.solvers.Evaluator` (the counting, checking
door to the score), the :class:`~scoresde.solvers.Context` (coefficient table, noise, the solver's draws per step)
and the state at ``grid[0]`` (a prior draw from noise stream 0, or a given state). :func:`record_run` runs a grid
solver over a prepared run and keeps the data predictions (and, if asked, the states) along it: what the grid
pilot (:func:`scoresde.fit_grid`) and the fitted solver's teacher and fit (:func:`scoresde.fit_solver`) read.
:func:`~scoresde.sample` and :func:`~scoresde.inpaint` prepare their runs here too; :func:`noise_source` and
:func:`solver_for` (with :func:`scoresde.grids.resolve_grid`) are the argument-level steps they share.

Everything a run writes lives in the objects made here for it; two runs never share any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import check_int, check_one_source
from .noise import NoiseSource
from .param import Score
from .sde import Coefs
from .solvers import Context, Evaluator, Solver, get_solver, integrate

__all__ = ["Run", "Recording", "prepare_run", "record_run", "noise_source", "solver_for"]


@dataclass(frozen=True)
class Run:
    """A prepared run: its context (grid, coefficients, evaluator, noise) and the state ``x`` at ``grid[0]``."""

    ctx: Context
    x: Tensor

    @property
    def ev(self) -> Evaluator:
        return self.ctx.ev


@dataclass
class Recording:
    """What :func:`record_run` kept: the final state ``x``; ``denoised``, the data prediction at the start of every
    step (and at the end time, with ``final``); ``states``, the state at every grid time (or ``None``); ``coefs``,
    the run's coefficient table."""

    x: Tensor
    denoised: list[Tensor]
    states: list[Tensor] | None
    coefs: tuple[Coefs, ...]


def prepare_run(
    score: Score,
    grid: Tensor,
    *,
    solver: Solver | None = None,
    name: str | None = None,
    x: Tensor | None = None,
    shape: tuple[int, ...] | None = None,
    noise=None,
    dtype: torch.dtype | None = None,
    device=None,
    inputs: Callable[[Tensor, Coefs], Tensor] | None = None,
    check: str = "step",
) -> Run:
    """A run of ``solver`` (or of bare model calls, named ``name``) over ``grid`` on ``score``.

    The state at ``grid[0]`` is ``x`` if given, else a prior draw of ``shape`` from ``noise``'s stream 0 (in
    ``dtype`` on ``device``), mapped by ``inputs`` if given (inpainting's known entries). ``inputs`` and ``check``
    go to the evaluator; the context takes the solver's declared draws per step (0 without a solver).
    """
    name = name or solver.name
    adaptive = solver is not None and solver.adaptive
    ev = Evaluator(score, name, None if adaptive else len(grid) - 1, inputs=inputs, check=check)
    ctx = Context.build(ev, grid, noise, solver.draws_per_step if solver is not None else 0)
    if x is None:
        x = score.sde.prior_std() * noise.randn(shape, stream=0, dtype=dtype, device=device)
        if inputs is not None:
            x = inputs(x, ctx.coefs[0])
    return Run(ctx, x)


def record_run(
    solver: Solver, run: Run, *, states: bool = False, final: bool = True, keep: Callable[[Tensor], Tensor] = None
) -> Recording:
    """Run the grid ``solver`` over ``run`` (no gradients), keeping ``keep(denoised)`` of every step and, with
    ``final``, ``keep(x0)`` at the end time (one more model call); with ``states``, the state at every grid time."""
    keep = keep or (lambda m: m)
    ms: list[Tensor] = []
    xs = [run.x] if states else None

    def record(info):
        ms.append(keep(info.denoised))
        if xs is not None:
            xs.append(info.x)

    with torch.no_grad():
        x = integrate(solver, run.ctx, run.x, callback=record).x
        if final:
            ms.append(keep(run.ev.x0(x, run.ctx.coefs[-1])))
    return Recording(x, ms, xs, run.ctx.coefs)


def noise_source(generator: torch.Generator | None, seed: int | None, sample_offset: int) -> NoiseSource:
    """The per-sample noise of a run: from ``seed``, else one draw of ``generator`` (the global RNG if ``None``)."""
    check_one_source(generator, seed)
    if seed is not None:
        return NoiseSource(check_int("", "seed", seed, ge=0), sample_offset)
    return NoiseSource.from_generator(generator, sample_offset)


def solver_for(method, options: dict) -> Solver:
    """A registered method by name (with its options), or a solver object such as a fitted one (no options)."""
    if isinstance(method, Solver):
        if options:
            raise TypeError(f"a solver object takes no options; got {', '.join(options)}")
        return method
    return get_solver(method).make(**options)
