"""Solvers, one module per family; importing this package registers them all."""

from . import adaptive_sde, discrete, dpm, edm, ode, pc, reverse_sde, unipc  # noqa: F401  (registration side effects)
from .base import (
    Context,
    EngineSolver,
    Evaluator,
    GridSolver,
    MultistepState,
    NonFiniteError,
    Solver,
    SolverResult,
    State,
    StepInfo,
    integrate,
)
from .registry import available_methods, get_solver, method_info, register

__all__ = [
    "Context",
    "EngineSolver",
    "Evaluator",
    "GridSolver",
    "MultistepState",
    "NonFiniteError",
    "Solver",
    "SolverResult",
    "State",
    "StepInfo",
    "integrate",
    "available_methods",
    "get_solver",
    "method_info",
    "register",
]
