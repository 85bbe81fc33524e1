"""The data sets by name, without importing torch: :mod:`scoresde.data` reads them from here, and the command line
checks ``--data`` against them before it imports anything heavy. The SDE names are :mod:`scoresde.sde_names`."""

from __future__ import annotations

__all__ = ["TOY_SETS", "MIXTURE_SETS", "DATASETS", "SHIPPED_MODELS"]

TOY_SETS: tuple[str, ...] = ("moons", "swissroll", "checkerboard", "rings")
# Gaussian mixtures to train on, by data-set name: the bench's exact problem each draws from (scoresde.problems), so a
# network trained on one is scored against the exact law with an exact floor (``scoresde bench --problems learned:DIR``)
MIXTURE_SETS: dict[str, str] = {"mixture16": "gmm-family:d=16,k=4,seed=100"}
DATASETS: tuple[str, ...] = (*TOY_SETS, *MIXTURE_SETS, "digits", "mnist")
# the trained models in scoresde/weights (scoresde.train.shipped), by the name that loads them
SHIPPED_MODELS: tuple[str, ...] = ("mnist",)
