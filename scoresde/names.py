"""Names the command line checks before it imports torch: the data sets of :data:`scoresde.data.DATASETS`
(``tests/test_cli_defaults.py`` holds the two equal). The SDE names are :mod:`scoresde.sde_names`."""

from __future__ import annotations

__all__ = ["DATASETS"]

DATASETS: tuple[str, ...] = ("moons", "swissroll", "checkerboard", "rings", "digits", "mnist")
