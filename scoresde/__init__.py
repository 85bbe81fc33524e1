"""scoresde: score-based diffusion models as SDEs and ODEs, in PyTorch.

Import as ``import scoresde as sd``; module file names are implementation details.

``import scoresde`` imports no torch: every public name loads its module on first use (PEP 562), so the command
line's ``--help`` and argument errors start in a fraction of a second. ``sd.X`` and ``from scoresde import X`` give
the defining module's object, whatever was imported before.
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and editors
    from . import data, loss, metrics, models, problems, train
    from .checkpoint import CheckpointError
    from .conditioning import inpaint
    from .distributed import sample_distributed
    from .export import export_pretrained, load_pretrained
    from .fitted import FitError, FittedSolver, fit_solver, load_fitted
    from .grids import GRIDS, FittedGrid, fit_grid, optimized_grid, time_grid
    from .interop import diffusers_sde, from_diffusers
    from .likelihood import Likelihood, log_likelihood
    from .noise import NoiseSource
    from .param import DataScore, DenoiserScore, EpsilonScore, FlowVelocityScore, Score, VScore, discrete_time_model
    from .problems import GaussianMixture, get_problem
    from .sample import Samples, available_methods, sample
    from .sde import SDE, VESDE, VPSDE, DiscreteVPSDE, FlowSDE, SubVPSDE
    from .shards import load_shards, sample_shards
    from .solvers import NonFiniteError, StepInfo, method_info
    from .train import AutoGuided, ConditionalModel, TrainConfig, TrainResult, load_score

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "FlowSDE",
    "DiscreteVPSDE",
    "discrete_time_model",
    "from_diffusers",
    "diffusers_sde",
    "Score",
    "EpsilonScore",
    "DataScore",
    "VScore",
    "FlowVelocityScore",
    "DenoiserScore",
    "GaussianMixture",
    "get_problem",
    "sample",
    "sample_distributed",
    "sample_shards",
    "load_shards",
    "export_pretrained",
    "load_pretrained",
    "log_likelihood",
    "Likelihood",
    "inpaint",
    "Samples",
    "available_methods",
    "method_info",
    "time_grid",
    "optimized_grid",
    "fit_grid",
    "FittedGrid",
    "StepInfo",
    "fit_solver",
    "load_fitted",
    "FittedSolver",
    "FitError",
    "GRIDS",
    "NoiseSource",
    "NonFiniteError",
    "data",
    "metrics",
    "models",
    "problems",
    "loss",
    "train",
    "TrainConfig",
    "TrainResult",
    "load_score",
    "ConditionalModel",
    "AutoGuided",
    "CheckpointError",
]

# Public name -> the module that defines it, imported on first use (the TYPE_CHECKING block above, as a table).
_NAMES = {
    name: module
    for module, names in {
        ".sde": ("SDE", "VPSDE", "SubVPSDE", "VESDE", "FlowSDE", "DiscreteVPSDE"),
        ".param": ("Score", "EpsilonScore", "DataScore", "VScore", "FlowVelocityScore", "DenoiserScore"),
        ".interop": ("from_diffusers", "diffusers_sde"),
        ".problems": ("GaussianMixture", "get_problem"),
        ".sample": ("sample", "Samples", "available_methods"),
        ".distributed": ("sample_distributed",),
        ".shards": ("sample_shards", "load_shards"),
        ".export": ("export_pretrained", "load_pretrained"),
        ".likelihood": ("log_likelihood", "Likelihood"),
        ".conditioning": ("inpaint",),
        ".grids": ("time_grid", "optimized_grid", "fit_grid", "FittedGrid", "GRIDS"),
        ".solvers": ("method_info", "StepInfo", "NonFiniteError"),
        ".fitted": ("fit_solver", "load_fitted", "FittedSolver", "FitError"),
        ".noise": ("NoiseSource",),
        ".train": ("TrainConfig", "TrainResult", "load_score", "ConditionalModel", "AutoGuided"),
        ".checkpoint": ("CheckpointError",),
    }.items()
    for name in names
}
_NAMES["discrete_time_model"] = ".param"

# Names that are submodules: the public ones, then those an eager `import scoresde` used to leave bound as
# attributes (`sd.sde`, `sd.solvers`, ...), which keep working.
_MODULES = ("data", "metrics", "models", "problems", "loss", "train")
_MODULES += ("checks", "conditioning", "distributed", "export", "fitted", "grids", "interop", "likelihood", "noise")
_MODULES += ("param", "process_group", "sde", "shards", "solvers", "util")

# A public function named like the submodule that defines it (`sample` in `scoresde/sample.py`): the import system
# binds the submodule as the package's attribute when it first loads it, whoever imports it; the function wins.
_SHADOWED = frozenset(name for name, module in _NAMES.items() if module == f".{name}")


class _Package(types.ModuleType):
    """The package's module type: binding a submodule in :data:`_SHADOWED` binds its function of that name instead."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)  # the submodule has run to its end before the import system binds it
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_MODULES})
