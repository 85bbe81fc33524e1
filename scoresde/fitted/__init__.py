"""Fitted few-step solvers: a time grid and per-step multistep coefficients fitted once to a teacher, kept as a value.

- :mod:`.solver`: the solver (:class:`FittedSolver`, its typed state), what it applies to (:meth:`FittedSolver.check`,
  :func:`fingerprint`) and its file format (:meth:`FittedSolver.save`, :func:`load_fitted`);
- :mod:`.fit`: the fit (:func:`fit_solver`): the teacher, the candidate grids, the least squares;
- :mod:`.search`: the grid search after the named candidates (:func:`search_grid`).

Every name is importable from here (``scoresde.fitted.fit_solver``, ``scoresde.fitted.MAX_STEPS``...) as when this
was one module.
"""

from .fit import (
    GRID_CANDIDATES,
    MAX_STEPS,
    MIN_BATCH,
    QUANTILE,
    REVISION,
    ROBUST,
    candidate_grid,
    fit_solver,
)
from .search import SEARCH, SEARCH_BATCH, SEARCH_MAX_STEPS, calls_per_sample, search_grid
from .solver import FORMAT, FitError, FittedCorrector, FittedSolver, FittedState, fingerprint, load_fitted

__all__ = [
    "FittedSolver",
    "FittedState",
    "FittedCorrector",
    "fit_solver",
    "load_fitted",
    "fingerprint",
    "FitError",
    "candidate_grid",
    "calls_per_sample",
    "FORMAT",
    "MAX_STEPS",
    "MIN_BATCH",
    "GRID_CANDIDATES",
    "QUANTILE",
    "ROBUST",
    "REVISION",
    "SEARCH",
    "SEARCH_BATCH",
    "SEARCH_MAX_STEPS",
    "search_grid",
]
