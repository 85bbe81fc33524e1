"""Figures: benchmark plots, score and drift fields, trajectories, the forward process, densities.

matplotlib is imported inside each function (the Agg backend, or a notebook's inline one), so importing this
package, like ``import scoresde``, does not load it. Functions named ``plot_*`` return a matplotlib Figure (save
it with :func:`save_figure`); ``save_*`` and :func:`animate_fields` write files atomically.
"""

from ._mpl import save_figure
from .bench import nfe_quality_figure, nfe_ticks, plot_nfe_quality, save_image_grid, save_points
from .density import plot_image_rows, plot_log_density
from .fields import (
    FIELD_KINDS,
    animate_fields,
    data_extent,
    field_error,
    field_grid,
    plot_field_error,
    plot_fields,
    plot_trajectories,
    record_trajectory,
    sharpness,
    vector_field,
)
from .forward import plot_forward, plot_noising, plot_schedules, plot_variance_recursion, simulate_forward

__all__ = [
    "plot_nfe_quality",
    "nfe_quality_figure",
    "nfe_ticks",
    "save_image_grid",
    "save_points",
    "save_figure",
    "FIELD_KINDS",
    "field_grid",
    "vector_field",
    "field_error",
    "plot_fields",
    "plot_field_error",
    "record_trajectory",
    "plot_trajectories",
    "animate_fields",
    "data_extent",
    "sharpness",
    "simulate_forward",
    "plot_forward",
    "plot_noising",
    "plot_schedules",
    "plot_variance_recursion",
    "plot_log_density",
    "plot_image_rows",
]
