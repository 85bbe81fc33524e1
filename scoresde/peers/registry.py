"""The peers by name: their tables (diffusers' schedulers, k-diffusion's samplers, the flow peers), loading the
libraries once with the reason when one cannot serve, and the time maps between their noise levels and ours."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import warnings
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from ..sde import SDE, VPSDE, append_dims

_BETA_START, _BETA_END, _TRAIN_STEPS = 1e-4, 0.02, 1000
PEER_T = 1.01  # covers diffusers' last timestep (t = 1.0034 on the continuous linear schedule)


@dataclass(frozen=True)
class _Diffusers:
    cls: str  # the scheduler class
    config: dict  # beyond the shared schedule
    per_step: int  # model calls per step (Heun: all steps but the last)
    sigma_space: bool  # the state is x_hat = x / alpha and the model input is scaled


_DPMPP_2M = {
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "lower_order_final": True,
    "thresholding": False,
    "final_sigmas_type": "sigma_min",
}
_UNIPC = {"thresholding": False, "final_sigmas_type": "sigma_min"}
_KARRAS = {"use_karras_sigmas": True}
_DIFFUSERS = {
    "diffusers-ddpm": _Diffusers("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_small"}, 1, False),
    "diffusers-ddim": _Diffusers("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, 1, False),
    "diffusers-dpmpp_2m": _Diffusers("DPMSolverMultistepScheduler", _DPMPP_2M, 1, False),
    "diffusers-unipc": _Diffusers("UniPCMultistepScheduler", _UNIPC, 1, False),
    # The peers at their best, not only at their defaults: Karras sigmas (use_karras_sigmas=True). Measured (mode
    # SWD / floor, n = 10,000): at 20 NFE 1.48 / 1.29 (gmm16) and 2.03 / 1.48 (ring) against the default spacing's
    # 3.04 / 4.04 and 2.83 / 3.42 for DPM-Solver++ (2M) / UniPC; worse at 5-10 NFE, so both spacings run.
    "diffusers-dpmpp_2m-karras": _Diffusers("DPMSolverMultistepScheduler", {**_DPMPP_2M, **_KARRAS}, 1, False),
    "diffusers-unipc-karras": _Diffusers("UniPCMultistepScheduler", {**_UNIPC, **_KARRAS}, 1, False),
    "diffusers-euler": _Diffusers("EulerDiscreteScheduler", {"final_sigmas_type": "sigma_min"}, 1, True),
    "diffusers-heun": _Diffusers("HeunDiscreteScheduler", {"clip_sample": False}, 2, True),
}

FLOW_PEER_T = 1.0  # the flow peers start from pure noise


@dataclass(frozen=True)
class _FlowPeer:
    library: str  # "diffusers" (a scheduler class) or "torchdiffeq" (a fixed-grid method)
    cls: str
    config: dict
    per_step: int  # model calls per step (Heun: all steps but the last; midpoint: 2)
    sigma_from_timestep: bool = True  # FlowMatch schedulers: the timestep is sigma * 1000 (others: int(sigma * 1000))


def _flow_sigmas(shift: float, scheduler: str) -> _FlowPeer:
    config = dict(use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction")
    if scheduler == "DPMSolverMultistepScheduler":
        config.update(algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True)
    return _FlowPeer("diffusers", scheduler, config, 1, sigma_from_timestep=False)


_FLOW = {
    "flow-diffusers-euler": _FlowPeer("diffusers", "FlowMatchEulerDiscreteScheduler", {"shift": 1.0}, 1),
    "flow-diffusers-euler-shift3": _FlowPeer("diffusers", "FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, 1),
    "flow-diffusers-heun": _FlowPeer("diffusers", "FlowMatchHeunDiscreteScheduler", {"shift": 1.0}, 2),
    "flow-diffusers-dpmpp_2m": _flow_sigmas(1.0, "DPMSolverMultistepScheduler"),
    "flow-diffusers-dpmpp_2m-shift3": _flow_sigmas(3.0, "DPMSolverMultistepScheduler"),
    "flow-diffusers-unipc": _flow_sigmas(1.0, "UniPCMultistepScheduler"),
    "flow-diffusers-unipc-shift3": _flow_sigmas(3.0, "UniPCMultistepScheduler"),
    "flow-torchdiffeq-euler": _FlowPeer("torchdiffeq", "euler", {}, 1),
    "flow-torchdiffeq-midpoint": _FlowPeer("torchdiffeq", "midpoint", {}, 2),
}


def peer_path(name: str) -> str:
    """The path a peer samples: ``"flow"`` for the ``flow-*`` peers (on ``FlowSDE(T=1)``), else ``"vp"``."""
    return "flow" if name in _FLOW else "vp"


# name -> (k-diffusion function, model calls per step on a grid that does not end at sigma = 0; None: takes n)
_KDIFF = {
    "kdiff-euler": ("sample_euler", 1),
    "kdiff-heun": ("sample_heun", 2),
    "kdiff-dpmpp_2m": ("sample_dpmpp_2m", 1),
    "kdiff-lms": ("sample_lms", 1),
    "kdiff-dpm_fast": ("sample_dpm_fast", None),
}


@dataclass
class PeerResult:
    """What :func:`peer_sample` returns."""

    x: Tensor  # samples, shape (n, d), at continuous time t_end
    nfe: int  # counted model calls
    t_end: float  # the time whose exact law the output targets (0.0: clean data)
    status: str  # "ok" or "diverged: <reason>"


class _Diverged(FloatingPointError):
    """Raised inside a peer run by our model wrapper or state check; turned into a ``status``."""


# --- the libraries, imported lazily ----------------------------------------------------------------------
class PeerUnavailableWarning(UserWarning):
    """A peer library did not import; the message names it and the exception (see :func:`unavailable`)."""


_UNAVAILABLE: dict[str, str] = {}  # library -> why it cannot serve as a peer (filled on the first import attempt)


def _why(exc: BaseException) -> str:
    what = "not installed" if isinstance(exc, ImportError) else "failed to import"
    return f"{what} ({type(exc).__name__}: {exc})"


def _unavailable_because(library: str, reason: str) -> None:
    """Record why ``library`` is unavailable and warn (the importers are cached: once per process)."""
    _UNAVAILABLE[library] = reason
    warnings.warn(f"peer library {library} is unavailable: {reason}", PeerUnavailableWarning, stacklevel=3)


@cache
def _diffusers():
    """The ``diffusers`` module, or ``None`` (recorded, with a warning) when it does not import."""
    try:
        return importlib.import_module("diffusers")
    except Exception as e:  # ImportError: not installed; anything else (a mismatched torch extension...): broken
        _unavailable_because("diffusers", _why(e))
        return None


@cache
def _kdiffusion():
    """``k_diffusion.sampling``, or ``None`` (recorded, with a warning) if k-diffusion is not installed or its
    samplers do not import."""
    try:
        return importlib.import_module("k_diffusion.sampling")
    except Exception as e:  # torchvision / scikit-image missing or broken: load sampling.py alone
        first = e
    try:
        spec = importlib.util.find_spec("k_diffusion")
    except Exception as e:
        _unavailable_because("k-diffusion", f"{_why(first)}; looking for the package: {type(e).__name__}: {e}")
        return None
    if spec is None or not spec.submodule_search_locations:
        _unavailable_because("k-diffusion", _why(first))
        return None
    # Installed, but k_diffusion.sampling does not import (its package __init__ needs the training stack).
    first = f"k_diffusion.sampling raised {type(first).__name__}: {first}"
    pkg_name = "_scoresde_kdiffusion"
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType(f"{pkg_name}.utils")
    utils.append_dims = lambda x, target_dims: append_dims(x, target_dims)  # the only helper sampling.py uses
    pkg.utils = utils
    sub = importlib.util.spec_from_file_location(f"{pkg_name}.sampling", f"{pkg.__path__[0]}/sampling.py")
    if sub is None:
        _unavailable_because("k-diffusion", f"failed to import ({first}, and there is no sampling.py to load alone)")
        return None
    module = importlib.util.module_from_spec(sub)
    sys.modules[pkg_name], sys.modules[utils.__name__], sys.modules[sub.name] = pkg, utils, module
    try:
        sub.loader.exec_module(module)
    except Exception as e:  # a version whose sampling.py needs more than we provide
        for name in (sub.name, utils.__name__, pkg_name):
            sys.modules.pop(name, None)
        _unavailable_because("k-diffusion", f"{_why(e)} loading sampling.py alone; before that, {first}")
        return None
    return module


def available_peers() -> list[str]:
    """Peer sampler names whose library imports, sorted (a library that does not is in :func:`unavailable`)."""
    names = list(_DIFFUSERS) if _diffusers() is not None else []
    names += list(_KDIFF) if _kdiffusion() is not None else []
    names += [k for k, v in _FLOW.items() if v.library == "torchdiffeq" or _diffusers() is not None]
    return sorted(names)


def unavailable() -> dict[str, str]:
    """Peer libraries that do not import (``"diffusers"``, ``"k-diffusion"``), each with the reason: ``"not
    installed (<ImportError type>: <message>)"`` or ``"failed to import (<exception type>: <message>)"``.

    Tries the imports first (as :func:`available_peers` does), so it can be called on its own; empty when every
    peer library imports.
    """
    _diffusers()
    _kdiffusion()
    return dict(_UNAVAILABLE)


# --- the time mapping -------------------------------------------------------------------------------------
def diffusers_alpha_bar() -> Tensor:
    """diffusers' ``alphas_cumprod`` for its linear schedule (1e-4 to 0.02, 1000 steps), in float64."""
    return VPSDE().discrete_alpha_bar(_TRAIN_STEPS)


def timestep_times(sde: SDE, alpha_bar: Tensor) -> Tensor:
    """Continuous times with the given (discrete) ``alpha_bar`` values under ``sde``, float64."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return sde.t_from_log_snr(alpha_bar.log() - torch.log1p(-alpha_bar))


def sigma_to_t(sde: SDE, sigma: float) -> float:
    """Continuous time of a sigma-space noise level ``sigma = sigma(t) / alpha(t)`` (``log_snr = -2 log sigma``)."""
    return float(sde.t_from_log_snr(-2 * math.log(sigma)))


def sigma_hat(sde: SDE, t: float) -> float:
    """The sigma-space noise level ``sigma(t) / alpha(t)`` at time ``t`` (inverse of :func:`sigma_to_t`)."""
    return float(sde.marginal_std(t) / sde.alpha(t))


# --- sampling -----------------------------------------------------------------------------------------------
