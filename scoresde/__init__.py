"""scoresde: score-based diffusion models as SDEs and ODEs, in PyTorch.

Import as ``import scoresde as sd``; module file names are implementation details.
"""

from . import data, loss, metrics, models, problems, train
from .checkpoint import CheckpointError
from .conditioning import inpaint
from .grids import GRIDS, optimized_grid, time_grid
from .likelihood import Likelihood, log_likelihood
from .noise import NoiseSource
from .param import DataScore, DenoiserScore, EpsilonScore, Score, VScore, discrete_time_model
from .problems import GaussianMixture, get_problem
from .sample import Samples, available_methods, sample
from .sde import SDE, VESDE, VPSDE, DiscreteVPSDE, SubVPSDE
from .solvers import NonFiniteError, method_info
from .train import ConditionalModel, TrainConfig, TrainResult, load_score

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "DiscreteVPSDE",
    "discrete_time_model",
    "Score",
    "EpsilonScore",
    "DataScore",
    "VScore",
    "DenoiserScore",
    "GaussianMixture",
    "get_problem",
    "sample",
    "log_likelihood",
    "Likelihood",
    "inpaint",
    "Samples",
    "available_methods",
    "method_info",
    "time_grid",
    "optimized_grid",
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
    "CheckpointError",
]
