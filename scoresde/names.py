"""The data sets by name, without importing torch: :mod:`scoresde.data` reads them from here, and the command line
checks ``--data`` against them before it imports anything heavy. The SDE names are :mod:`scoresde.sde_names`."""

from __future__ import annotations

__all__ = ["TOY_SETS", "DATASETS", "SHIPPED_MODELS"]

TOY_SETS: tuple[str, ...] = ("moons", "swissroll", "checkerboard", "rings")
DATASETS: tuple[str, ...] = (*TOY_SETS, "digits", "mnist")
# the trained models in scoresde/weights (scoresde.train.shipped), by the name that loads them
SHIPPED_MODELS: tuple[str, ...] = ("mnist",)
