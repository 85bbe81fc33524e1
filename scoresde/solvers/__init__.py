"""Solvers, one module per family; importing this package registers them all."""

from . import discrete, edm, fast, ode, pc, sde  # noqa: F401  (registration side effects)
from .base import Evaluator, NonFiniteError, Solver, SolverResult
from .registry import available_methods, get_solver, method_info, register

__all__ = [
    "Evaluator",
    "NonFiniteError",
    "Solver",
    "SolverResult",
    "available_methods",
    "get_solver",
    "method_info",
    "register",
]
