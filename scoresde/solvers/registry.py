"""Solver registry: method name -> solver class. Each class declares what it is (order, kind, cost)."""

from __future__ import annotations

__all__ = ["register", "get_solver", "available_methods", "method_info"]

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: register ``cls`` under ``cls.name`` (which must be new)."""
    name = cls.name
    if name in _REGISTRY:
        raise ValueError(f"solver name {name!r} registered twice ({_REGISTRY[name].__qualname__}, {cls.__qualname__})")
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
    """What the method declares: ``kind``, ``order`` (strong order for SDE methods), ``weak_order`` (if
    declared), ``nfe_per_step`` (``None`` if adaptive), ``adaptive`` and its one-line description."""
    cls = get_solver(name)
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "name": name,
        "kind": cls.kind,
        "order": cls.order,
        "weak_order": getattr(cls, "weak_order", None),
        "nfe_per_step": cls.nfe_per_step,
        "adaptive": cls.adaptive,
        "description": doc[0] if doc else "",
    }
