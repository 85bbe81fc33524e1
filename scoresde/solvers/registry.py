"""Solver registry: method name -> solver class. Each class declares what it is (its kind of solver, ``kind``,
order and cost); :func:`method_info` reports them for the default options."""

from __future__ import annotations

import inspect

from .base import EngineSolver, GridSolver

__all__ = ["register", "get_solver", "available_methods", "method_info"]

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: register ``cls`` under ``cls.name``, which must be new, or held by an earlier definition of the
    same class (same module and qualified name: a notebook cell or a module run again), which it replaces.

    A solver written outside the package registers the same way (``@scoresde.solvers.register``); the command line
    imports such a file with ``--plugin`` (docs/guides/writing-a-solver.md)."""
    name = cls.name
    old = _REGISTRY.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"solver name {name!r} registered twice ({_REGISTRY[name].__qualname__}, {cls.__qualname__})")
    if not issubclass(cls, GridSolver | EngineSolver) or inspect.isabstract(cls):
        raise TypeError(f"solver {name!r} must be a GridSolver (with step) or an EngineSolver (with solve)")
    for attr in ("kind", "order", "nfe_per_step"):
        if not hasattr(cls, attr):
            raise TypeError(f"solver {name!r} must declare {attr!r}")
    if cls.kind not in ("ode", "sde"):
        raise ValueError(f"solver {name!r}: kind must be 'ode' or 'sde', got {cls.kind!r}")
    _REGISTRY[name] = cls
    return cls


def get_solver(name: str) -> type:
    """The solver class registered as ``name``; a ``ValueError`` lists the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available methods: {', '.join(available_methods())}") from None


def available_methods(kind: str | None = None) -> list[str]:
    """Registered method names (optionally only ``kind`` = "ode" or "sde"), sorted."""
    return sorted(n for n, c in _REGISTRY.items() if kind is None or c.kind == kind)


def method_info(name: str) -> dict:
    """What the method declares with its default options: ``kind``, ``order`` (strong order for SDE methods),
    ``weak_order`` (if declared), ``nfe_per_step`` (``None`` if adaptive), ``adaptive``, ``engine`` (whether it
    drives an engine of its own rather than the stepping loop) and its one-line description. A solver configured
    with other options reports its own ``order`` and ``nfe_per_step``."""
    cls = get_solver(name)
    solver = cls.make()
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "name": name,
        "kind": cls.kind,
        "order": solver.order,
        "weak_order": getattr(solver, "weak_order", None),
        "nfe_per_step": solver.nfe_per_step,
        "adaptive": cls.adaptive,
        "engine": cls.engine,
        "description": doc[0] if doc else "",
    }
