"""Time grids for sampling: ``steps + 1`` strictly decreasing float64 times from ``T`` to ``t_min``.

- ``"uniform"``: equal steps in ``t`` (Song et al. 2021).
- ``"quadratic"``: ``t_i = t_min + (T - t_min) (1 - i/steps)^2``, denser near the data (Song, Meng & Ermon
  2021, DDIM appendix D.2, "quadratic" selection of timesteps).
- ``"logsnr"``: equal steps in ``lambda = log(alpha^2 / sigma^2)`` (Lu et al. 2022, DPM-Solver sec. 3.4).

A grid can also be given explicitly as a 1-D tensor or sequence; :func:`check_grid` validates it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .sde import SDE

__all__ = ["time_grid", "check_grid", "GRIDS"]

GRIDS = ("uniform", "quadratic", "logsnr")


def time_grid(
    sde: SDE, steps: int, kind: str = "uniform", t_min: float | None = None, T: float | None = None
) -> Tensor:
    """A decreasing grid of ``steps + 1`` times from ``T`` (default ``sde.T``) to ``t_min`` (default ``sde.t_min``)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    t_min = sde.t_min if t_min is None else float(t_min)
    T = sde.T if T is None else float(T)
    if not (0 < t_min < T <= sde.T):
        raise ValueError(f"need 0 < t_min < T <= sde.T = {sde.T:g}, got t_min={t_min:g}, T={T:g}")
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    if kind == "uniform":
        grid = T + (t_min - T) * u
    elif kind == "quadratic":
        grid = t_min + (T - t_min) * (1 - u) ** 2
    elif kind == "logsnr":
        lam0, lam1 = sde.log_snr(T), sde.log_snr(t_min)
        grid = sde.t_from_log_snr(lam0 + (lam1 - lam0) * u)
    else:
        raise ValueError(f"unknown grid {kind!r}; known grids: {', '.join(GRIDS)}")
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
