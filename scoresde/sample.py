"""``sample()``: the one entry point; it builds the grid, the noise and the evaluator, and dispatches by name."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import check_int, check_one_source
from .grids import MAX_STEPS, resolve_grid, solver_steps
from .noise import NoiseSource
from .param import Score
from .run import noise_source, prepare_run, solver_for
from .sde import SDE
from .solvers import available_methods
from .solvers.base import CHECKS, Callback

__all__ = ["Samples", "sample", "available_methods"]
# noise_source, solver_for live in .run (the run builder), resolve_grid, MAX_STEPS in .grids; importable here too
_SHARED = (MAX_STEPS, noise_source, resolve_grid, solver_for)


@dataclass
class Samples:
    """The result of :func:`sample`.

    Attributes:
        x: the samples, of the requested shape.
        nfe: model calls made, counted (per batch).
        times: the times the solver reported, float64, decreasing from ``T`` to ``t_min``.
        trajectory: ``(len(times), *shape)`` states at ``times`` if requested, else ``None``.
        method: the method name.
        fit_nfe: model calls spent fitting the grid for this call (``grid="optimized"``: the pilot, per pilot
            batch), not part of ``nfe``; 0 otherwise (a :class:`~scoresde.grids.FittedGrid` passed in was paid
            for when it was fitted).
        check_nfe: model calls spent checking that the solver applies to the score, not part of ``nfe``: a
            fitted solver's fingerprint probe (one call on its
            :attr:`~scoresde.fitted.FittedSolver.PROBE_ROWS` fixed rows); 0 otherwise.
    """

    x: Tensor
    nfe: int
    times: Tensor
    trajectory: Tensor | None = None
    method: str = ""
    fit_nfe: int = 0
    check_nfe: int = 0

    @property
    def calls(self) -> int:
        """Every call of the model this run made (``nfe + fit_nfe + check_nfe``): what a counting wrapper sees."""
        return self.nfe + self.fit_nfe + self.check_nfe


def _check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of ints (batch, ...), got {shape!r}") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (batch, ...) with at least one data dimension, all >= 1, got {shape}")
    return shape


def _check_score(score, sde) -> None:
    if not isinstance(score, Score):
        raise TypeError(f"score must be a scoresde Score (e.g. EpsilonScore(model, sde)), got {type(score).__name__}")
    if sde is not None and repr(sde) != repr(score.sde):  # the same process; the solvers reach it through the score
        raise ValueError(f"the score was built for {score.sde!r} but sampling was asked for {sde!r}")


def _layout(shape, x_init: Tensor | None, dtype, device) -> tuple[tuple[int, ...], torch.dtype, object]:
    """The samples' shape, dtype and device: from ``shape`` or ``x_init`` (which must agree), the default dtype."""
    if x_init is not None:
        if shape is not None and tuple(shape) != tuple(x_init.shape):
            raise ValueError(f"shape {tuple(shape)} does not match x_init's shape {tuple(x_init.shape)}")
        shape = _check_shape(x_init.shape)
        dtype, device = dtype or x_init.dtype, device or x_init.device
    elif shape is None:
        raise ValueError("give shape=(batch, ...) or x_init")
    return _check_shape(shape), dtype or torch.get_default_dtype(), device


def _start(x_init: Tensor, dtype, device) -> Tensor:
    x = x_init.to(dtype=dtype, device=device)
    if not torch.isfinite(x).all():
        raise ValueError("x_init contains non-finite values")
    return x


def sample(
    score: Score,
    sde: SDE | None = None,
    shape: tuple[int, ...] | None = None,
    method: str = "unipc",
    steps: int | None = None,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    sample_offset: int = 0,
    grid: str | Tensor | None = None,
    t_min: float | None = None,
    T: float | None = None,
    denoise: bool = False,
    x_init: Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_trajectory: bool = False,
    noise: NoiseSource | None = None,
    callback: Callback | None = None,
    check: str = "step",
    **options,
) -> Samples:
    """Draw samples by integrating from the prior at ``T`` down to ``t_min``.

    Args:
        score: a :class:`~scoresde.param.Score` (e.g. ``EpsilonScore(model, sde)`` or ``gmm.score(sde)``).
        sde: the SDE to sample (defaults to ``score.sde``; must describe the same process).
        shape: ``(batch, *dims)``; may be omitted when ``x_init`` is given.
        method: a name from :func:`available_methods`, or a fitted solver; default ``"unipc"`` on its quadratic grid
            (the solvers guide's choice without a fit; ``"ddim"`` before, first order: at 10 NFE its error was 1.8-4.3x
            plain Euler's on the VP families of ``benchmarks/default_grids.py``, choosing members).
        steps: number of solver steps, 50 if not given (adaptive methods use the grid only for
            ``return_trajectory``; a fitted solver runs its own and refuses it).
        generator, seed: the randomness (one of them, or neither for the global RNG). Each sample draws
            from its own counter-based stream (:class:`~scoresde.noise.NoiseSource`), so sample ``i``
            is the same whatever the batch size; ``sample_offset`` is the global index of sample 0
            (for sharding over processes).
        grid: ``"uniform"``, ``"quadratic"``, ``"logsnr"``, ``"karras"``, ``"optimized"``, a
            :class:`~scoresde.grids.FittedGrid` or an explicit decreasing tensor of times; ``None`` (default) takes
            the method's ``default_grid`` (``"uniform"`` unless it declares another). ``"optimized"`` calls
            :func:`~scoresde.grids.fit_grid` with the solver's order on every call (a pilot of its own, whose model
            calls are reported in ``fit_nfe``, not in ``nfe``; fit once and pass the FittedGrid to reuse it).
        t_min, T: end and start times (defaults ``sde.t_min``, ``sde.T``).
        denoise: finish with one Tweedie step ``x <- x0(x, t_min)`` (one more model call).
        x_init: start from this state at ``T`` instead of a prior draw.
        dtype, device: of the samples (default: ``x_init``'s, else the default dtype on the CPU).
        return_trajectory: keep the state at every reported time.
        noise: the noise itself, instead of ``generator``/``seed``: any object with
            ``randn(shape, stream, dtype=, device=)`` like :class:`~scoresde.noise.NoiseSource` (stream 0 is
            the prior; step ``k``'s draw ``j`` is stream ``1 + k D + j`` for a method that draws ``D`` per step).
        callback: ``callback(info)`` after every step of a fixed-grid method, with a
            :class:`~scoresde.solvers.StepInfo` (step ``k``, times ``t -> s``, the new state ``x``, the solver's
            ``denoised`` estimate where it has one); it may return a tensor to replace the state (k-diffusion's
            convention). ``sde-adaptive`` calls it after every accepted step (``info.n_steps`` is ``None``); the
            adaptive ODE methods (torchdiffeq's own steps) refuse it.
        check: how often values are tested for NaN/inf (each test is one host synchronisation on a GPU):
            ``"step"`` (default) tests the state once after every step of a fixed-grid method (engine-driven and
            adaptive methods test every model call); ``"call"`` tests every model output and inner stage too (the
            error names the first bad model call); ``"end"`` tests only the samples, once.
        **options: the method's own options, e.g. ``eta`` for ``"ddim"``, ``rtol``/``atol`` for adaptive ODEs.

    Returns:
        :class:`Samples` with ``x``, counted ``nfe``, ``times`` and optional ``trajectory``.
    """
    _check_score(score, sde)
    check_one_source(generator, seed)  # before the solver's options are checked, as before
    if seed is not None:
        check_int("sample", "seed", seed, ge=0)
    solver = solver_for(method, options)
    if check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(map(repr, CHECKS))}, got {check!r}")

    shape, dtype, device = _layout(shape, x_init, dtype, device)
    check_nfe = solver.check(score, shape, grid, dtype, device)  # a fitted solver: its SDE, shape, grid and score
    if solver.own_grid and (t_min is not None or T is not None):
        raise ValueError(f"a {solver.name} solver runs on its own grid; do not pass t_min or T")
    steps = solver_steps(solver, steps, default=50)
    ts, fit_nfe = resolve_grid(solver, score, steps, grid, t_min, T, shape[1:], dtype, device)
    if noise is None:
        noise = noise_source(generator, seed, sample_offset)
    elif generator is not None or seed is not None or sample_offset:
        raise ValueError("pass noise, or generator/seed/sample_offset, not both")
    x = None if x_init is None else _start(x_init, dtype, device)
    name = method if isinstance(method, str) else solver.name
    run = prepare_run(
        score, ts, solver=solver, name=name, x=x, shape=shape, noise=noise, dtype=dtype, device=device, check=check
    )
    with torch.no_grad():
        res = solver.solve(run.ctx, run.x, callback=callback, return_trajectory=return_trajectory)
        x = run.ev.x0(res.x, run.ctx.coefs[-1]) if denoise else res.x
    if check == "end":
        x = run.ev.check(x, run.ctx.times[-1], what="the sampler", always=True)
    return Samples(x, run.ev.nfe, res.times, res.trajectory, name, fit_nfe=fit_nfe, check_nfe=check_nfe)
