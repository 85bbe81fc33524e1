"""Time grids for sampling: ``steps + 1`` strictly decreasing float64 times from ``T`` to ``t_min``.

- ``"uniform"``: equal steps in ``t`` (Song et al. 2021).
- ``"quadratic"``: ``t_i = t_min + (T - t_min) (1 - i/steps)^2``, denser near the data (Song, Meng & Ermon
  2021, DDIM appendix D.2, "quadratic" selection of timesteps).
- ``"logsnr"``: equal steps in ``lambda = log(alpha^2 / sigma^2)`` (Lu et al. 2022, DPM-Solver sec. 3.4).
- ``"karras"``: Karras et al. 2022 (EDM), eq. 5, in the noise level ``sigma_hat = sigma / alpha = e^{-lambda/2}``:
  ``sigma_hat_i = (sigma_hat_max^{1/rho} + i/N (sigma_hat_min^{1/rho} - sigma_hat_max^{1/rho}))^rho``, ``rho = 7``
  by default, mapped to ``t`` through ``sde.t_from_log_snr``.
- ``"optimized"``: needs the score, so it is :func:`optimized_grid`, which ``sample()`` calls
  for ``grid="optimized"``; ``time_grid`` rejects the name with a pointer there.

A grid can also be given explicitly as a 1-D tensor or sequence; :func:`check_grid` validates it.

**The optimized grid** (:func:`optimized_grid`). A step ``t -> s`` of an order-``p`` exponential integrator in
data prediction (see :mod:`scoresde.solvers.exponential`) leaves the local error
``alpha_s h^{p+1} C_p x0^{(p)}(lambda) + O(h^{p+2})`` in ``x_s`` (``h`` the step in ``lambda = log(alpha/sigma)``,
``x0^{(p)}`` the ``p``-th ``lambda``-derivative of the data prediction along the path). The linear part of the
flow carries it to ``t_min`` scaled by ``sigma_min / sigma_s``, so it arrives as
``sigma_min C_p e^{lambda} h^{p+1} |x0^{(p)}|``. With the error density ``c(lambda) = e^{lambda} E|x0^{(p)}|``
(the expectation over paths), the total ``sum_i c(lambda_i) h_i^{p+1} = int c h^p d lambda`` for a fixed number
of steps ``N = int d lambda / h`` is smallest when ``c h^{p+1}`` is constant (a Lagrange condition), i.e. with
grid points equidistributed in the density ``rho(lambda) = c(lambda)^{1/(p+1)}`` (the classical optimal-mesh
argument; Align Your Steps, Sabour et al. 2024, and DPM-Solver-v3, Zheng et al. 2023, fit schedules to a pilot
batch too, with other criteria). ``c`` is measured on a pilot batch: ``n_pilot`` prior draws from a fixed seed (its
own, not a sampling seed), integrated with the ``dpm++2m`` solver itself over ``pilot_steps`` equal steps in ``lambda``;
``x0^{(p)}`` is the ``p``-th finite difference of the recorded data predictions (RMS over the batch). The density
gets a floor of ``mix`` times its mean, so that no step grows without bound where the estimate vanishes. Cost:
``pilot_steps + 1`` model calls on ``n_pilot`` samples for every fit. Nothing is cached: :func:`fit_grid` returns a
:class:`FittedGrid` (the grid, its options and its cost, ``fit_nfe``) that the caller keeps and passes to
``sample(grid=fitted)``; ``sample(grid="optimized")`` fits anew on every call and reports the pilot's calls in
``Samples.fit_nfe``, apart from the sample's own ``nfe``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .checks import check_int
from .sde import SDE

__all__ = [
    "time_grid",
    "check_grid",
    "optimized_grid",
    "fit_grid",
    "FittedGrid",
    "GRIDS",
    "resolve_grid",
    "solver_steps",
    "MAX_STEPS",
]

MAX_STEPS = 100_000  # a named grid of more steps is a typo: 10^8 allocated gigabytes before any check

GRIDS = ("uniform", "quadratic", "logsnr", "karras")


def unit_steps(steps: int) -> Tensor:
    """``i / steps`` for ``i = 0 .. steps`` in float64, each correctly rounded, so a grid is the same to the last
    bit on every CPU: ``torch.linspace``'s vectorised kernel rounds some points differently with AVX2 and with
    AVX-512 (the fifth of 10 points differed by one unit in the last place)."""
    return torch.arange(steps + 1, dtype=torch.float64) / steps


def time_grid(
    sde: SDE,
    steps: int,
    kind: str = "uniform",
    t_min: float | None = None,
    T: float | None = None,
    rho: float = 7.0,
) -> Tensor:
    """A decreasing grid of ``steps + 1`` times from ``T`` (default ``sde.T``) to ``t_min`` (default ``sde.t_min``).

    ``rho`` is the Karras grid's exponent (used only by ``kind="karras"``).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    t_min = sde.t_min if t_min is None else float(t_min)
    T = sde.T if T is None else float(T)
    if not (0 < t_min < T <= sde.T):
        raise ValueError(f"need 0 < t_min < T <= sde.T = {sde.T:g}, got t_min={t_min:g}, T={T:g}")
    u = unit_steps(steps)
    if kind == "uniform":
        grid = T + (t_min - T) * u
    elif kind == "quadratic":
        grid = t_min + (T - t_min) * (1 - u) ** 2
    elif kind == "logsnr":
        lam0, lam1 = sde.log_snr(T), sde.log_snr(t_min)
        grid = sde.t_from_log_snr(lam0 + (lam1 - lam0) * u)
    elif kind == "karras":
        if not (math.isfinite(rho) and rho > 0):
            raise ValueError(f"karras grid: rho must be a finite number > 0, got {rho!r}")
        # sigma_hat = e^{-lambda / 2}; interpolate sigma_hat^{1/rho} = e^{-lambda / (2 rho)} linearly.
        lo, hi = -sde.log_snr(T) / (2 * rho), -sde.log_snr(t_min) / (2 * rho)  # log sigma_hat^{1/rho}
        root = lo.exp() + (hi.exp() - lo.exp()) * u
        grid = sde.t_from_log_snr(-2 * rho * root.log())
    elif kind == "optimized":
        raise ValueError(
            "the optimized grid needs the score: call scoresde.grids.optimized_grid(score, steps, ...) "
            "or sample(..., grid='optimized')"
        )
    else:
        raise ValueError(f"unknown grid {kind!r}; known grids: {', '.join(GRIDS)} (and 'optimized' in sample())")
    grid[0], grid[-1] = T, t_min  # exact end points, whatever the rounding of the inverse map
    return check_grid(sde, grid)


def check_grid(sde: SDE, grid: Tensor | Sequence[float]) -> Tensor:
    """Validate an explicit grid: 1-D, at least two points, strictly decreasing, inside ``(0, sde.T]``."""
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"a time grid must be 1-D with at least 2 points, got shape {tuple(grid.shape)}")
    if not torch.isfinite(grid).all():
        raise ValueError("time grid contains non-finite values")
    if not (grid[1:] < grid[:-1]).all():
        i = int(torch.nonzero(grid[1:] >= grid[:-1])[0])
        raise ValueError(
            f"time grid must be strictly decreasing (from T to t_min); entries {i} and {i + 1} are "
            f"{grid[i].item():.10g} and {grid[i + 1].item():.10g}"
        )
    if grid[-1] <= 0 or grid[0] > sde.T:
        raise ValueError(f"time grid must lie in (0, T = {sde.T:g}], got [{grid[-1].item():g}, {grid[0].item():g}]")
    return grid


@dataclass(frozen=True)
class FittedGrid:
    """A time grid fitted to a score by :func:`fit_grid`: a value the caller keeps, not a cache.

    Attributes:
        grid: the times, float64, strictly decreasing from ``T`` to ``t_min``.
        order: the solver order it was fitted for.
        fit_nfe: model calls the fit made (per pilot batch of ``n_pilot`` samples): ``pilot_steps + 1``.
        options: everything else that determines it (``dims``, ``n_pilot``, ``pilot_steps``, ``mix``, ``seed``,
            the SDE).
    """

    grid: Tensor
    order: int
    fit_nfe: int
    options: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.grid.numel() - 1


def equidistributed_grid(
    sde: SDE, lam_t: Tensor, ms: list[Tensor], order: int, steps: int, mix: float, T: float, t_min: float
) -> Tensor:
    """The grid of ``steps`` steps equidistributing ``(e^lambda |x0^{(order)}|)^{1/(order+1)}`` (see the module
    docstring), from data predictions ``ms`` (each ``(n, dim)``, float64) recorded at equally spaced ``lam_t``
    (``lambda = log(alpha / sigma)``, increasing) between ``T`` and ``t_min``. Used by :func:`fit_grid` and by
    :func:`scoresde.fit_solver`."""
    dl = lam_t[1:] - lam_t[:-1]  # equal up to rounding: the pilot grid is uniform in lambda
    diff = torch.stack(ms)  # (pilot_steps + 1, n_pilot, dim)
    for _ in range(order):
        diff = diff[1:] - diff[:-1]
    deriv = diff.pow(2).sum(-1).mean(-1).sqrt() / float(dl.mean()) ** order  # RMS |x0^{(p)}| per stencil
    centre = 0.5 * (lam_t[:-order] + lam_t[order:])
    density = (centre.exp() * deriv).clamp_min(0).pow(1.0 / (order + 1))
    density = density + mix * density.mean()
    # Piecewise-constant density on [lambda_0, lambda_K]: extend the stencil values to the end points.
    edges = torch.cat([lam_t[:1], 0.5 * (centre[1:] + centre[:-1]), lam_t[-1:]])
    mass = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(density * (edges[1:] - edges[:-1]), 0)])
    levels = torch.linspace(0, float(mass[-1]), steps + 1, dtype=torch.float64)
    idx = torch.searchsorted(mass, levels, right=True).clamp(1, len(mass) - 1) - 1
    frac = (levels - mass[idx]) / (mass[idx + 1] - mass[idx])
    lam_grid = edges[idx] + frac * (edges[idx + 1] - edges[idx])
    grid = sde.t_from_log_snr(2 * lam_grid)
    grid[0], grid[-1] = T, t_min
    return grid


def optimized_grid(score, steps: int, dims: tuple[int, ...], order: int = 2, **kw) -> Tensor:
    """The grid of :func:`fit_grid` as a tensor (the pilot runs on every call; keep it, or the :class:`FittedGrid`)."""
    return fit_grid(score, steps, dims, order, **kw).grid


def fit_grid(
    score,
    steps: int,
    dims: tuple[int, ...],
    order: int = 2,
    *,
    t_min: float | None = None,
    T: float | None = None,
    n_pilot: int = 256,
    pilot_steps: int = 64,
    mix: float = 0.1,
    seed: int = 20240,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> FittedGrid:
    """A grid of ``steps + 1`` times equidistributing the estimated local error of an order-``order`` solver.

    Args:
        score: the :class:`~scoresde.param.Score` to be sampled (its ``sde`` gives the schedule).
        steps: number of steps of the grid.
        dims: the per-sample shape (the sample shape without the batch dimension).
        order: the solver's order ``p`` (1 to 3); the density is ``(e^lambda E|x0^{(p)}|)^{1/(p+1)}``.
        t_min, T: end points (defaults ``sde.t_min``, ``sde.T``).
        n_pilot, pilot_steps, seed: the pilot batch (``pilot_steps + 1`` model calls on ``n_pilot`` samples).
        mix: floor of the density as a fraction of its mean (``> 0``).
        dtype, device: of the pilot batch (default: the default dtype, CPU).

    Returns:
        a :class:`FittedGrid`; deterministic for fixed arguments.
    """
    from .noise import NoiseSource
    from .run import prepare_run, record_run
    from .solvers import get_solver

    sde = score.sde
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"optimized grid: order must be 1, 2 or 3, got {order!r}")
    if pilot_steps < order + 4 or n_pilot < 1:
        raise ValueError(
            f"optimized grid: need pilot_steps >= order + 4 and n_pilot >= 1, got {pilot_steps}, {n_pilot}"
        )
    if not (math.isfinite(mix) and mix > 0):
        raise ValueError(f"optimized grid: mix must be a finite number > 0, got {mix!r}")
    dims = tuple(int(d) for d in dims)
    pilot = time_grid(sde, pilot_steps, "logsnr", t_min=t_min, T=T)
    T, t_min = float(pilot[0]), float(pilot[-1])
    dtype = dtype or torch.get_default_dtype()
    # the pilot's noise is drawn on the CPU and moved: the fitted grid does not depend on the device's generator
    x = (sde.prior_std() * NoiseSource(seed).randn((n_pilot, *dims), stream=0, dtype=dtype)).to(device)
    run = prepare_run(score, pilot, name="optimized grid (pilot)", x=x)
    # the data prediction at the start of every pilot step and at its end, float64 on the host: the fit's arithmetic
    rec = record_run(
        get_solver("dpm++2m").make(lower_order_final=False), run, keep=lambda m: m.cpu().double().flatten(1)
    )
    lam_t = torch.tensor([c.lam for c in rec.coefs], dtype=torch.float64)
    grid = equidistributed_grid(sde, lam_t, rec.denoised, order, steps, mix, T, t_min)
    options = dict(dims=dims, n_pilot=n_pilot, pilot_steps=pilot_steps, mix=mix, seed=seed, sde=repr(sde))
    return FittedGrid(check_grid(sde, grid), order, run.ev.nfe, options)


def solver_steps(solver, steps: int | None, default: int) -> int | None:
    """``steps`` of a run, ``default`` when not given; a solver with its own grid (a fitted one) refuses an explicit
    number (it was fitted for its own: a ``steps=`` beside it would be ignored)."""
    if solver.own_grid:
        if steps is not None:
            raise ValueError(
                f"a {solver.name} solver runs the {solver.steps} steps it was fitted for; do not pass steps"
            )
        return None
    return default if steps is None else steps


def resolve_grid(solver, score, steps, grid, t_min, T, dims, dtype, device) -> tuple[Tensor, int]:
    """The time grid of a run and the model calls spent fitting it: ``grid=None`` is the solver's ``default_grid``;
    a name goes through :func:`time_grid` (at most :data:`MAX_STEPS` steps; ``"optimized"`` through
    :func:`fit_grid`, fitted to ``score`` now); a :class:`FittedGrid` or a tensor is checked."""
    sde = score.sde
    if grid is None:
        grid = solver.default_grid
    if isinstance(grid, str):
        check_int("", "steps", steps, ge=1, le=MAX_STEPS, hint="pass an explicit grid tensor for a finer grid")
    if isinstance(grid, str) and grid == "optimized":
        order = max(1, min(3, int(solver.order)))
        fitted = fit_grid(score, steps, tuple(dims), order, t_min=t_min, T=T, dtype=dtype, device=device)
        return fitted.grid, fitted.fit_nfe
    if isinstance(grid, str):
        return time_grid(sde, steps, grid, t_min=t_min, T=T), 0
    if t_min is not None or T is not None:
        raise ValueError("t_min and T come from an explicit grid; do not pass them too")
    if isinstance(grid, FittedGrid):
        if grid.options.get("sde", repr(sde)) != repr(sde):
            raise ValueError(f"the grid was fitted for {grid.options['sde']}, not for {sde!r}")
        grid = grid.grid
    return check_grid(sde, grid), 0
