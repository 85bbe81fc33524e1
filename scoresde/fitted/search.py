"""The grid search of :func:`scoresde.fit_solver`: after the named candidate grids, the kept grid's inner points move
one at a time in log-SNR while the fitted loss falls.

**Why.** At 5 steps the error of a fitted solver is ruled by where its few model calls are made more than by its
weights: on ring, the fit on the searched grid ends 2.7x closer to an accurate solve than the same budget's fit on
the best named grid (mean squared distance 0.0021 against 0.0058 on fresh noise, ``tests/test_fitted.py``). The
named candidates (power laws in ``t``, log-SNR, the error-equidistributing grids) are one-parameter families; the
search adapts each point to the problem. Learning the times of the calls is what AMED-Solver (Zhou et al. 2024, a
learned intermediate time per step) and the fitted schedules of DPM-Solver-v3 and Align Your Steps (Zheng et al.
2023; Sabour et al. 2024) do with other criteria; this one is a derivative-free coordinate search on the fit's own
loss (the 0.75 quantile of the squared distance to the teacher's end state), each evaluation refitting the weights
on the moved grid (a teacher-forced run and a student run: ``2 steps`` model calls per fitting sample, all counted
in ``fit_nfe``).

**Measured** (``python benchmarks/fitted_families.py --seeds 0-3``: the choosing members of the six families of
``benchmarks/default_grids.py``, mode-conditional SWD over its two-sample floor, n = 20,000, median of four; the
held-out table is in the solvers guide): at 5 steps and the default budget of 10,000 sample-evaluations the
searched fit gave 1.80x on ``fam16`` (the same budget without the search 2.53x, 40,000 without it 2.47x), 1.39x on
``fam32`` (1.77x), 2.78x on ``mix16`` (3.98x), 1.40x on ``small16`` (1.88x), 2.74x on ``ve16`` (4.56x) and 1.42x on
``flow16`` (2.33x). At 10 steps a first version of the search (16 evaluations, a batch of 16) moved six choosing
members (``fam16``, ``fam32``, ``mix16``, seeds 0 and 1) by -0.21 to +0.03, five of them by 0.03 or less, for
twice the fit's calls: it runs only up to :data:`SEARCH_MAX_STEPS` steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .solver import FittedSolver

__all__ = ["search_grid", "plan", "calls_per_sample", "SEARCH", "SEARCH_BATCH", "SEARCH_STEP", "SEARCH_MAX_STEPS"]

PROBE_ROWS = FittedSolver.PROBE_ROWS
# The grid search (:func:`search_grid`): at most SEARCH evaluations by default, and only while the fitting batch
# stays at SEARCH_BATCH samples or more (a smaller budget searches less, or not at all); its first move is
# SEARCH_STEP in log-SNR, halved after a sweep that finds nothing, down to SEARCH_STEP / 8.
SEARCH = 24
SEARCH_BATCH = 20
SEARCH_STEP = 0.5
SEARCH_MAX_STEPS = 6  # no gain measured at 10 steps (see the module docstring)


def search_grid(sde, evaluate: Callable, grid: Tensor, best: tuple, evals: int) -> tuple[tuple, int]:
    """Move the interior grid points one at a time in log-SNR ``lambda = log(alpha^2 / sigma^2)`` and keep a move
    that lowers the fitted loss (coordinate search, first improvement): each point is tried ``+step`` then
    ``-step`` (kept strictly between its neighbours); after a sweep with no improvement the step halves, down to
    ``SEARCH_STEP / 8``. ``evaluate(grid)`` returns ``(loss, payload)``; at most ``evals`` of them.

    Returns the best ``(loss, grid, payload)`` and the evaluations made."""
    lam = sde.log_snr(grid).to(torch.float64)
    step, made = SEARCH_STEP, 0
    while made < evals and step >= SEARCH_STEP / 8:
        improved = False
        for i in range(1, grid.numel() - 1):
            for sign in (1.0, -1.0):
                trial = lam.clone()
                trial[i] += sign * step
                if made >= evals or not (trial[i - 1] < trial[i] < trial[i + 1]):
                    continue
                g = sde.t_from_log_snr(trial).to(torch.float64)
                g[0], g[-1] = grid[0], grid[-1]
                if not (g[1:] < g[:-1]).all():  # a move too small to change t in float64
                    continue
                loss, payload = evaluate(g)
                made += 1
                if loss < best[0]:
                    best, lam, grid, improved = (loss, g, payload), trial, g, True
                    break
        if not improved:
            step /= 2
    return best, made


def calls_per_sample(steps: int, n_grids: int, n_variants: int, teacher_steps: int) -> int:
    """Model calls per fitting sample before the grid search: the teacher's steps and its final data prediction, and
    per candidate grid a teacher-forced run and a student run per corrector variant."""
    return teacher_steps + 1 + n_grids * (1 + n_variants) * steps


def plan(budget: int, steps: int, base: int, search: int | None) -> tuple[int, int]:
    """The fitting batch and the grid search's evaluations for a budget: ``base`` calls per fitting sample
    without the search (:func:`calls_per_sample`), ``2 steps`` per search evaluation (a teacher-forced run and a
    student run). ``search=None`` searches as much as :data:`SEARCH` while the batch stays at :data:`SEARCH_BATCH`
    or more, up to :data:`SEARCH_MAX_STEPS` steps; a given count is spent whatever the batch."""
    room = budget - PROBE_ROWS  # the fingerprint probe (8 rows, one call) is in the budget too
    if search is None:
        search = 0
        for k in range(SEARCH if steps <= SEARCH_MAX_STEPS else 0, 0, -1):
            if room // (base + 2 * steps * k) >= SEARCH_BATCH:
                search = k
                break
    return room // (base + 2 * steps * search), search
