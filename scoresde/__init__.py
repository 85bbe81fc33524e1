"""scoresde: score-based diffusion models as SDEs and ODEs, in PyTorch.

Import as ``import scoresde as sd``; module file names are implementation details.
"""

import importlib
from typing import TYPE_CHECKING

from . import metrics, problems
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

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and editors
    from . import data, loss, models, train
    from .checkpoint import CheckpointError
    from .train import AutoGuided, ConditionalModel, TrainConfig, TrainResult, load_score

from ._version import __version__ as __version__

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

# Training, checkpoints (safetensors), networks and data sets load on first use (PEP 562), so that
# `import scoresde` for sampling does not import them: name -> the module that defines it.
_LAZY = {
    "data": ".data",
    "loss": ".loss",
    "models": ".models",
    "train": ".train",
    "TrainConfig": ".train",
    "TrainResult": ".train",
    "load_score": ".train",
    "ConditionalModel": ".train",
    "AutoGuided": ".train",
    "CheckpointError": ".checkpoint",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name], __name__)
    value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
