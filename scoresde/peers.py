"""Peers side by side: the same exact score driven through diffusers' and k-diffusion's samplers.

Install with ``pip install scoresde[peers]`` (diffusers) and ``pip install --no-deps k-diffusion`` (see below).
The mapping between our continuous VP time and each peer's own variables is written once, here:

- **diffusers** builds ``alphas_cumprod`` from its betas (Ho's ``linspace(1e-4, 0.02, 1000)``, which is
  ``VPSDE().discrete_betas(1000)``). For timestep ``i`` we compute that ``alpha_bar_i`` in float64 and evaluate
  the exact score at the continuous time with the same ``alpha_bar``,
  ``t_i = t_from_log_snr(log(alpha_bar_i / (1 - alpha_bar_i)))`` (:func:`timestep_times`): each scheduler gets
  the exact ``eps`` of its own discrete process. The chain's last timestep has ``alpha_bar = 4.04e-5``, reached
  at ``t = 1.0034`` on the continuous linear schedule, so the score must be built on ``VPSDE(T=PEER_T)`` (the
  same schedule, extended).
- diffusers' sigma-space schedulers (Euler, Heun) keep ``x_hat = x / alpha`` and hand the model
  ``scale_model_input(x_hat) = x_hat / sqrt(1 + sigma^2)``, which is our VP state; their noise level maps to
  ``t`` through ``log_snr = -2 log sigma`` (:func:`sigma_to_t`), and the final ``x_hat`` is mapped back with
  ``x = alpha(t_end) x_hat``, as their pipelines do it (``init_noise_sigma`` scales the initial noise).
- **k-diffusion** works in sigma space too: the denoiser gets ``x_hat`` and ``sigma_hat = sigma / alpha`` and
  returns the exact ``x0`` at the ``t`` with that noise level. Its samplers run on its own Karras grid
  (``get_sigmas_karras``, rho = 7) from ``sigma_hat(1)`` to ``sigma_hat(t_min)`` without the trailing 0, so they
  end at ``t_min`` like ours; ``sample_dpm_fast`` takes ``(sigma_min, sigma_max, n)`` itself.

Configuration, as a user with unnormalised data should set it: ``clip_sample=False`` and no thresholding (the
default clipping of the x0 prediction to [-1, 1] ruins data outside it); where the option exists the chain ends
at its smallest noise level ``alpha_bar_0`` (``set_alpha_to_one=False``, ``final_sigmas_type="sigma_min"``)
instead of jumping to clean data, so it targets ``p_t`` at ``t(alpha_bar_0) = 9.2e-4`` (our ``t_min`` is 1e-3).
Time steps: ``timestep_spacing="trailing"``, the spacing diffusers recommends for few steps (Lin et al. 2024,
table 2): it starts at the noisiest timestep, its step is ``1000 / steps`` (the step DDIM's ``prev_timestep``
assumes, which ``"linspace"`` breaks) and it never repeats a timestep. DDPM and Heun have no option to stop at
``alpha_bar_0``: their last step returns the clean-data prediction from timestep ``1000 / steps - 1`` (sigma
0.34 at 10 steps, 0.14 at 25). Measured
on gmm16 (n = 4000, mode-conditional SWD at 10 / 20 / 50 NFE), "linspace" and "leading" do not help DDPM
(0.064 / 0.046 / 0.028 vs 0.061 / 0.045 / 0.028 trailing) and make Heun much worse at few steps (0.45 / 0.094 /
0.021 vs 0.079 / 0.058 / 0.028): at 5 steps its last second-order step spans sigma 0.96 to 0.01 (timestep 250
to 0), where trailing ends with a first-order jump to clean data from sigma 0.72.
``t_end`` in the result says where each run ends (0 for DDPM and Heun).

k-diffusion's package ``__init__`` imports its training code (torchvision, scikit-image, wandb...), which does
not install beside a CPU-only torch; ``k_diffusion.sampling`` itself needs torch, scipy, torchdiffeq, torchsde,
tqdm and one helper from ``k_diffusion.utils`` (``append_dims``). When the package does not import, we load
``sampling.py`` from the installed distribution under a private package name whose ``utils`` holds our
:func:`~scoresde.sde.append_dims`; ``import k_diffusion`` is left untouched.

A peer library that does not import is not silently dropped: :func:`unavailable` maps each such library to
the reason (``"not installed (ModuleNotFoundError: ...)"`` for an ``ImportError``, ``"failed to import
(RuntimeError: ...)"`` for any other exception, e.g. a broken install), and the first attempt warns once per
library with a :class:`PeerUnavailableWarning` naming it and the exception.

Flow-matching peers (``flow-*``) run on the rectified-flow path ``FlowSDE(T=1)`` (shift 1: the noise level is the
time), driven by the exact velocity ``eps - x0`` of the score (:meth:`~scoresde.param.Score.velocity`): diffusers'
``FlowMatchEulerDiscreteScheduler`` and ``FlowMatchHeunDiscreteScheduler`` (their ``shift``), its
``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler`` with ``use_flow_sigmas``, ``flow_shift`` and
``prediction_type="flow_prediction"`` (Sana, Wan), and torchdiffeq's fixed-step Euler and midpoint on
``dx/dt = u(x, t)`` over a uniform grid from 1 to 0. Each starts from pure noise at noise level 1 and ends at 0
(``t_end = 0``), as their pipelines do; a shift changes where a scheduler puts its steps, not the path.

NFE is counted by the score's own counter (``score.nfe``), never taken from a peer's documentation; the step
count is chosen from each sampler's cost per step so that the counted NFE stays within the budget. Every random
draw comes from a ``torch.Generator`` seeded with ``seed``. A run whose model output or state becomes NaN/inf
is reported in ``status`` ("diverged: ..."), not raised.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from .param import Score
from .sde import SDE, VPSDE, FlowSDE, append_dims

__all__ = [
    "PEER_T",
    "PeerResult",
    "PeerUnavailableWarning",
    "available_peers",
    "unavailable",
    "peer_sample",
    "diffusers_alpha_bar",
    "timestep_times",
    "sigma_to_t",
    "sigma_hat",
    "peer_path",
    "FLOW_PEER_T",
]

_BETA_START, _BETA_END, _TRAIN_STEPS = 1e-4, 0.02, 1000
PEER_T = 1.01  # covers diffusers' last timestep (t = 1.0034 on the continuous linear schedule)


@dataclass(frozen=True)
class _Diffusers:
    cls: str  # the scheduler class
    config: dict  # beyond the shared schedule
    per_step: int  # model calls per step (Heun: all steps but the last)
    sigma_space: bool  # the state is x_hat = x / alpha and the model input is scaled


_DIFFUSERS = {
    "diffusers-ddpm": _Diffusers("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_small"}, 1, False),
    "diffusers-ddim": _Diffusers("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, 1, False),
    "diffusers-dpmpp_2m": _Diffusers(
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "dpmsolver++",
            "solver_order": 2,
            "lower_order_final": True,
            "thresholding": False,
            "final_sigmas_type": "sigma_min",
        },
        1,
        False,
    ),
    "diffusers-unipc": _Diffusers(
        "UniPCMultistepScheduler", {"thresholding": False, "final_sigmas_type": "sigma_min"}, 1, False
    ),
    # The peers at their best, not only at their defaults: Karras sigmas (use_karras_sigmas=True). Measured (mode
    # SWD / floor, n = 10,000): at 20 NFE 1.48 / 1.29 (gmm16) and 2.03 / 1.48 (ring) against the default spacing's
    # 3.04 / 4.04 and 2.83 / 3.42 for DPM-Solver++ (2M) / UniPC; worse at 5-10 NFE, so both spacings run.
    "diffusers-dpmpp_2m-karras": _Diffusers(
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "dpmsolver++",
            "solver_order": 2,
            "lower_order_final": True,
            "thresholding": False,
            "final_sigmas_type": "sigma_min",
            "use_karras_sigmas": True,
        },
        1,
        False,
    ),
    "diffusers-unipc-karras": _Diffusers(
        "UniPCMultistepScheduler",
        {"thresholding": False, "final_sigmas_type": "sigma_min", "use_karras_sigmas": True},
        1,
        False,
    ),
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
def peer_sample(name: str, score: Score, sde: SDE, shape: tuple[int, ...], nfe: int, seed: int) -> PeerResult:
    """Draw ``shape`` samples with peer sampler ``name`` within about ``nfe`` model calls (counted, not assumed).

    ``score`` must be built on ``sde``, a linear ``VPSDE`` (``VPSDE(T=PEER_T)`` for the diffusers peers, whose
    chain reaches past ``t = 1``), or ``FlowSDE(T=1)`` for the ``flow-*`` peers. Returns the samples at ``t_end``
    (float32), the counted NFE and a status.
    """
    peers = available_peers()
    if name not in peers:
        raise ValueError(f"unknown or uninstalled peer {name!r}; available peers: {', '.join(peers) or 'none'}")
    if name in _FLOW:
        if not (isinstance(sde, FlowSDE) and sde.shift == 1.0 and sde.T == FLOW_PEER_T):
            raise ValueError(f"the flow peers are driven on FlowSDE(T={FLOW_PEER_T}) (shift 1), got {sde!r}")
    elif not (isinstance(sde, VPSDE) and sde.schedule == "linear" and (sde.beta_min, sde.beta_max) == (0.1, 20.0)):
        raise ValueError(
            f"peers are driven on the linear VP schedule of Ho et al.; pass VPSDE(T={PEER_T}), got {sde!r}"
        )
    if repr(score.sde) != repr(sde):
        raise ValueError(f"the score was built for {score.sde!r} but sampling was asked for {sde!r}")
    if int(nfe) < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    shape = tuple(int(s) for s in shape)
    if name in _FLOW:
        return _flow_sample(name, score, shape, int(nfe), seed)
    run = _kdiff_sample if name in _KDIFF else _diffusers_sample
    return run(name, score, sde, shape, int(nfe), seed)


@contextmanager
def _seeded_global_rng(seed: int):
    """Run a peer with the global CPU RNG seeded from ``seed`` and restore the caller's state afterwards.

    Our draws use explicit generators; this covers any draw a peer makes from the global RNG (k-diffusion's
    Euler and Heun call ``torch.randn_like`` on every step even without churn), so it neither depends on nor
    advances the caller's RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def _checked(value: Tensor, what: str, nfe: int, t: float) -> Tensor:
    if not torch.isfinite(value).all():
        raise _Diverged(f"{what} non-finite at t = {t:.6g} after {nfe} model calls")
    return value


def _diffusers_sample(name: str, score: Score, sde: SDE, shape, nfe: int, seed: int) -> PeerResult:
    spec = _DIFFUSERS[name]
    scheduler = getattr(_diffusers(), spec.cls)(
        num_train_timesteps=_TRAIN_STEPS,
        beta_start=_BETA_START,
        beta_end=_BETA_END,
        beta_schedule="linear",
        timestep_spacing="trailing",
        **spec.config,
    )
    steps = (nfe + 1) // 2 if spec.per_step == 2 else nfe  # Heun: 2 calls per step, 1 on the last
    scheduler.set_timesteps(steps)
    times = timestep_times(sde, diffusers_alpha_bar())
    if float(times[-1]) > sde.T:
        raise ValueError(
            f"diffusers' last timestep sits at t = {float(times[-1]):.5f} > T = {sde.T:g}: build the score on "
            f"VPSDE(T={PEER_T}) (the same schedule, extended)"
        )
    g = torch.Generator().manual_seed(seed)
    step_kw = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}
    x = torch.randn(shape, generator=g, dtype=torch.float32) * float(scheduler.init_noise_sigma)
    nfe0 = score.nfe
    try:
        with _seeded_global_rng(seed), torch.no_grad():
            for timestep in scheduler.timesteps:
                model_in = scheduler.scale_model_input(x, timestep)  # sets step_index on its first call
                if spec.sigma_space:
                    t = sigma_to_t(sde, float(scheduler.sigmas[scheduler.step_index]))
                else:
                    t = float(times[int(timestep)])
                eps = _checked(score.eps(model_in, t), "model output", score.nfe - nfe0, t)
                x = _checked(scheduler.step(eps, timestep, x, **step_kw).prev_sample, "state", score.nfe - nfe0, t)
    except _Diverged as e:
        return PeerResult(x, score.nfe - nfe0, 0.0, f"diverged: {e}")
    if spec.sigma_space:
        final_sigma = float(scheduler.sigmas[-1])
        t_end = 0.0 if final_sigma == 0 else sigma_to_t(sde, final_sigma)
        if t_end > 0:
            x = x * float(sde.alpha(t_end))  # back from sigma space to our VP state
    elif name == "diffusers-ddpm":
        t_end = 0.0  # its last step returns the clean-data prediction
    else:
        t_end = float(times[0])  # DDIM (set_alpha_to_one=False), DPM++ and UniPC (sigma_min): alpha_bar_0
    return PeerResult(x, score.nfe - nfe0, t_end, "ok")


def _kdiff_sample(name: str, score: Score, sde: SDE, shape, nfe: int, seed: int) -> PeerResult:
    kd = _kdiffusion()
    fn_name, per_step = _KDIFF[name]
    s_min, s_max = sigma_hat(sde, sde.t_min), sigma_hat(sde, 1.0)
    nfe0 = score.nfe

    def denoiser(x_hat: Tensor, sigma: Tensor) -> Tensor:
        s = float(sigma[0])
        if not bool((sigma == sigma[0]).all()):
            raise ValueError("k-diffusion passed per-sample noise levels; the adapter expects one per call")
        t = sigma_to_t(sde, s)
        return _checked(score.x0(x_hat * float(sde.alpha(t)), t), "model output", score.nfe - nfe0, t)

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32) * s_max
    try:
        with _seeded_global_rng(seed), torch.no_grad():  # Euler and Heun draw (unused) churn noise every step
            if per_step is None:
                x = kd.sample_dpm_fast(denoiser, x, s_min, s_max, nfe, disable=True)
                final_sigma = s_min
            else:
                steps = max(1, nfe // per_step)
                sigmas = kd.get_sigmas_karras(steps + 1, s_min, s_max, rho=7.0)[:-1]  # end at s_min, not at 0
                x = getattr(kd, fn_name)(denoiser, x, sigmas, disable=True)
                final_sigma = float(sigmas[-1])
            t_end = sigma_to_t(sde, final_sigma)
            _checked(x, "state", score.nfe - nfe0, t_end)
    except _Diverged as e:
        return PeerResult(x, score.nfe - nfe0, 0.0, f"diverged: {e}")
    return PeerResult(x * float(sde.alpha(t_end)), score.nfe - nfe0, t_end, "ok")


def _flow_sample(name: str, score: Score, shape, nfe: int, seed: int) -> PeerResult:
    spec = _FLOW[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32)  # pure noise at noise level 1
    nfe0 = score.nfe

    def velocity(y: Tensor, sigma: float) -> Tensor:  # on the shift-1 path the noise level is the time
        return _checked(score.velocity(y, sigma), "model output", score.nfe - nfe0, sigma)

    try:
        with _seeded_global_rng(seed), torch.no_grad():
            if spec.library == "torchdiffeq":
                import torchdiffeq

                ts = torch.linspace(1.0, 0.0, max(1, nfe // spec.per_step) + 1)
                x = torchdiffeq.odeint(lambda t, y: velocity(y, float(t)), x, ts, method=spec.cls)[-1]
            else:
                scheduler = getattr(_diffusers(), spec.cls)(num_train_timesteps=_TRAIN_STEPS, **spec.config)
                scheduler.set_timesteps((nfe + 1) // 2 if spec.per_step == 2 else nfe)
                for i, timestep in enumerate(scheduler.timesteps):
                    sigma = float(timestep) / _TRAIN_STEPS if spec.sigma_from_timestep else float(scheduler.sigmas[i])
                    u = velocity(x, sigma)
                    x = _checked(scheduler.step(u, timestep, x).prev_sample, "state", score.nfe - nfe0, sigma)
            _checked(x, "state", score.nfe - nfe0, 0.0)
    except _Diverged as e:
        return PeerResult(x, score.nfe - nfe0, 0.0, f"diverged: {e}")
    return PeerResult(x.float(), score.nfe - nfe0, 0.0, "ok")
