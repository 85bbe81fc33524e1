"""The forward processes by name: the one table behind ``--sde`` (``scoresde likelihood``, ``fields``, ``train``,
``bench``) and a training config's ``{"name": ...}``.

Names and keyword presets only, so that a parser lists them without importing torch; :func:`make_sde` imports
:mod:`scoresde.sde` when it builds one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sde import SDE

# name -> (the class in scoresde.sde, preset keyword arguments), in the order the command line lists them
SDES: dict[str, tuple[str, dict]] = {
    "vp": ("VPSDE", {}),
    "vp-cosine": ("VPSDE", {"schedule": "cosine"}),
    "subvp": ("SubVPSDE", {}),
    "ve": ("VESDE", {}),
    "flow": ("FlowSDE", {}),
}
# The names without a preset: what a training config's {"name": ..., **kwargs} (and `train --sde`) accepts; a
# config spells its keywords itself ({"name": "vp", "schedule": "cosine"}).
CONFIG_NAMES: tuple[str, ...] = tuple(name for name, (_, preset) in SDES.items() if not preset)


def sde_class(name: str) -> type[SDE]:
    """The class behind ``name`` (``KeyError`` for an unknown one)."""
    from . import sde

    return getattr(sde, SDES[name][0])


def make_sde(name: str, **kwargs) -> SDE:
    """The SDE called ``name``, with its preset and ``kwargs`` (which win): ``make_sde("vp-cosine")`` is
    ``VPSDE(schedule="cosine")``, ``make_sde("flow", shift=3.0)`` is ``FlowSDE(shift=3.0)``."""
    return sde_class(name)(**{**SDES[name][1], **kwargs})
