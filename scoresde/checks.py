"""Argument checks shared by every module: one wording for "must be a number > 0", "an int >= 1", "one of ...".

Each check raises ``ValueError`` with the message ``"<where>: <name> must be <what>, got <value>"`` (no
``"<where>: "`` when ``where`` is empty) and returns the value. Booleans are never numbers here, although
Python counts ``True`` as the int 1. Bounds follow pydantic's names: ``gt`` (>), ``ge`` (>=), ``lt`` (<),
``le`` (<=); two bounds print as an interval, ``[0, 1)``. ``hint`` is added in parentheses after the
requirement, e.g. ``"0: no clipping"``.

This module imports nothing from the package, so the sampling core and the training code can both use it.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = [
    "is_int",
    "is_number",
    "check_number",
    "check_int",
    "check_choice",
    "check_bool",
    "check_one_source",
]


def is_int(v: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any, finite: bool = True) -> bool:
    """An ``int`` or ``float`` that is not a ``bool`` (and, with ``finite``, neither inf nor nan)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and (not finite or math.isfinite(v))


def _fail(where: str, name: str, want: str, hint: str, v: Any) -> None:
    label = f"{where}: {name}" if where else name
    hint = f" ({hint})" if hint else ""
    raise ValueError(f"{label} must be {want}{hint}, got {v!r}")


def _bounds(gt, ge, lt, le) -> str:
    """The requirement's text: ``"> 0"``, ``"in [0, 1)"``, or ``""`` without bounds."""
    if gt is not None and ge is not None or lt is not None and le is not None:
        raise TypeError("give at most one lower bound (gt or ge) and one upper bound (lt or le)")
    low, low_open = (gt, True) if gt is not None else (ge, False)
    high, high_open = (lt, True) if lt is not None else (le, False)
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def _inside(v, gt, ge, lt, le) -> bool:
    return (gt is None or v > gt) and (ge is None or v >= ge) and (lt is None or v < lt) and (le is None or v <= le)


def check_number(
    where: str,
    name: str,
    v: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    finite: bool = True,
    hint: str = "",
) -> float:
    """``v`` as a float if it is a number within the bounds (and finite, unless ``finite=False``).

    ``check_number("pc", "snr", 0.0, gt=0)`` raises ``"pc: snr must be a number > 0, got 0.0"``; a nan or
    infinite value is told it must be "a finite number".
    """
    bounds = _bounds(gt, ge, lt, le)
    if not (is_number(v, finite) and _inside(v, gt, ge, lt, le)):
        kind = "a finite number" if finite and is_number(v, finite=False) and not math.isfinite(v) else "a number"
        _fail(where, name, f"{kind} {bounds}".rstrip(), hint, v)
    return float(v)


def check_int(where: str, name: str, v: Any, *, ge: int | None = None, le: int | None = None, hint: str = "") -> int:
    """``v`` if it is an ``int`` (not a ``bool``) in ``[ge, le]``: ``"<name> must be an int >= 1, got 0"``."""
    if not (is_int(v) and _inside(v, None, ge, None, le)):
        _fail(where, name, f"an int {_bounds(None, ge, None, le)}".rstrip(), hint, v)
    return v


def check_choice(where: str, name: str, v: Any, choices: Collection, *, hint: str = "") -> Any:
    """``v`` if it is one of ``choices``: ``"<name> must be one of 'a', 'b'; got 'c'"``."""
    if v not in choices:
        label = f"{where}: {name}" if where else name
        hint = f" ({hint})" if hint else ""
        raise ValueError(f"{label} must be one of {', '.join(map(repr, choices))}{hint}; got {v!r}")
    return v


def check_bool(where: str, name: str, v: Any, *, hint: str = "") -> bool:
    """``v`` if it is ``True`` or ``False`` (not 0 or 1)."""
    if not isinstance(v, bool):
        _fail(where, name, "True or False", hint, v)
    return v


def check_one_source(generator: Any, seed: Any) -> None:
    """The randomness of a run comes from a ``generator`` or a ``seed`` (or neither: the global RNG), not both."""
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
