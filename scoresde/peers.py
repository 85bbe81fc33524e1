"""Peers side by side: the same exact score driven through diffusers' schedulers (``pip install scoresde[peers]``).

The mapping between our continuous VP time and a peer's discrete timesteps is written once here:

- diffusers builds ``alphas_cumprod`` from its betas (Ho's ``linspace(1e-4, 0.02, 1000)``, which is
  ``VPSDE().discrete_betas(1000)``). For timestep ``i`` we compute that ``alpha_bar_i`` in float64 and
  evaluate the exact score at the continuous time with the same ``alpha_bar``,
  ``t_i = t_from_log_snr(log(alpha_bar_i / (1 - alpha_bar_i)))``: each scheduler gets the exact score of
  its own discrete process.
- Sigma-space schedulers (Euler, Heun) scale the state by ``1 / sqrt(1 + sigma^2)`` before the model
  (``scale_model_input``), which is our VP state; their noise level maps to ``t`` through
  ``log_snr = -2 log sigma``.

Each scheduler is configured as a user with unnormalised data should: ``clip_sample=False`` and no
thresholding (the default clipping to [-1, 1] ruins data outside it), ``timestep_spacing="trailing"``
(starts at the noisiest timestep and never repeats one at few steps; Lin et al. 2024), and, where the
option exists, ending at the smallest noise level of the chain instead of jumping to clean data, so its
output targets the same ``p_t`` (``t`` of ``alpha_bar_0``, ~``t_min``) as ours; ``t_end`` in the result
says where each one ends (0 for DDPM and Heun, which end with a clean-data prediction).

k-diffusion's samplers (Euler, Heun, DPM++ 2M, LMS, DPM-fast) work in sigma space: the denoiser gets
``x_hat = x / alpha`` and ``sigma_hat = sigma / alpha`` and returns the exact ``x0`` at the ``t`` with that
noise level (``log_snr = -2 log sigma_hat``). They run on k-diffusion's Karras grid (rho = 7) from
``sigma_hat(T)`` to ``sigma_hat(t_min)`` without the trailing 0, so they too end at ``t_min``. Its package
``__init__`` imports training code (torchvision, scikit-image...) that does not install beside the pinned CPU
torch, while ``k_diffusion.sampling`` needs only torch, scipy, torchdiffeq, torchsde, tqdm and one helper
(``utils.append_dims``): when the full package does not import, we load ``sampling.py`` from the installed
package under a private name with our own ``append_dims``, leaving ``import k_diffusion`` untouched.

NFE is counted by the score's own counter, never taken from the peer. A run that produces NaN/inf is
reported in ``status``, not raised.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types
from dataclasses import dataclass
from functools import cache

import torch

from .param import Score
from .sde import SDE, VPSDE

__all__ = ["PEER_T", "PeerResult", "available_peers", "peer_sample", "timestep_times", "sigma_to_t"]

_BETA_START, _BETA_END, _TRAIN_STEPS = 1e-4, 0.02, 1000
PEER_T = 1.01  # covers the chain's last timestep (t = 1.0034 on the continuous linear schedule)

# name -> (diffusers class name, extra config, NFE per step, whether it has final_sigmas_type)
_DIFFUSERS = {
    "diffusers-ddpm": ("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_small"}, 1),
    "diffusers-ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, 1),
    "diffusers-dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "final_sigmas_type": "sigma_min"},
        1,
    ),
    "diffusers-unipc": ("UniPCMultistepScheduler", {"final_sigmas_type": "sigma_min"}, 1),
    "diffusers-euler": ("EulerDiscreteScheduler", {"final_sigmas_type": "sigma_min"}, 1),
    "diffusers-heun": ("HeunDiscreteScheduler", {"clip_sample": False}, 2),
}


@dataclass
class PeerResult:
    x: torch.Tensor  # samples at continuous time t_end
    nfe: int  # counted model calls
    t_end: float  # the time whose exact law the output targets (0.0: clean data)
    status: str  # "ok" or "diverged: ..."


def _diffusers():
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers


# name -> (k-diffusion function, NFE per step on a grid without a final sigma of 0)
_KDIFF = {
    "kdiff-euler": ("sample_euler", 1),
    "kdiff-heun": ("sample_heun", 2),
    "kdiff-dpmpp_2m": ("sample_dpmpp_2m", 1),
    "kdiff-lms": ("sample_lms", 1),
    "kdiff-dpm_fast": ("sample_dpm_fast", None),  # takes the NFE itself
}


@cache
def _kdiffusion():
    """``k_diffusion.sampling``, or ``None`` if k-diffusion is not installed."""
    try:
        return importlib.import_module("k_diffusion.sampling")
    except ImportError:
        pass
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg_name = "_scoresde_kdiffusion"
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType(f"{pkg_name}.utils")
    utils.append_dims = lambda x, target_dims: x[(...,) + (None,) * (target_dims - x.ndim)]
    pkg.utils = utils
    sys.modules[pkg_name], sys.modules[utils.__name__] = pkg, utils
    sub = importlib.util.spec_from_file_location(f"{pkg_name}.sampling", f"{pkg.__path__[0]}/sampling.py")
    module = importlib.util.module_from_spec(sub)
    sys.modules[sub.name] = module
    try:
        sub.loader.exec_module(module)
    except ImportError:
        return None
    return module


def available_peers() -> list[str]:
    """Peer sampler names whose library is installed."""
    names = list(_DIFFUSERS) if _diffusers() is not None else []
    names += list(_KDIFF) if _kdiffusion() is not None else []
    return sorted(names)


def _alpha_bar_chain() -> torch.Tensor:
    """diffusers' ``alphas_cumprod`` for the linear schedule, in float64."""
    return VPSDE().discrete_alpha_bar(_TRAIN_STEPS)


def timestep_times(sde: SDE, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Continuous times with the given (discrete) ``alpha_bar`` values under ``sde``."""
    alpha_bar = alpha_bar.double()
    return sde.t_from_log_snr(alpha_bar.log() - torch.log1p(-alpha_bar))


def sigma_to_t(sde: SDE, sigma: float) -> float:
    """Continuous time of a sigma-space noise level ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``."""
    return float(sde.t_from_log_snr(-2 * math.log(sigma)))


def peer_sample(name: str, score: Score, sde: SDE, shape: tuple[int, ...], nfe: int, seed: int) -> PeerResult:
    """Draw ``shape`` samples with peer sampler ``name`` within ``nfe`` model calls (counted)."""
    if name not in available_peers():
        raise ValueError(
            f"unknown or uninstalled peer {name!r}; available peers: {', '.join(available_peers()) or 'none'}"
        )
    if not (isinstance(sde, VPSDE) and sde.schedule == "linear" and (sde.beta_min, sde.beta_max) == (0.1, 20.0)):
        raise ValueError(f"peers are driven on the linear VP schedule; pass VPSDE(T={PEER_T})")
    if name in _KDIFF:
        return _kdiff_sample(name, score, sde, shape, nfe, seed)
    cls_name, config, per_step = _DIFFUSERS[name]
    scheduler = getattr(_diffusers(), cls_name)(
        num_train_timesteps=_TRAIN_STEPS,
        beta_start=_BETA_START,
        beta_end=_BETA_END,
        beta_schedule="linear",
        timestep_spacing="trailing",
        **config,
    )
    steps = max(1, (nfe + 1) // 2) if per_step == 2 else max(1, nfe)  # Heun: 2 calls per step but the last
    scheduler.set_timesteps(steps)
    abar = _alpha_bar_chain()
    t_of_step = timestep_times(sde, abar)
    if float(t_of_step[-1]) > sde.T:
        raise ValueError(
            f"diffusers' last timestep has alpha_bar {float(abar[-1]):.3g}, reached at "
            f"t = {float(t_of_step[-1]):.5f} > T = {sde.T:g}: build the score on VPSDE(T={PEER_T}) "
            "(the same schedule, extended)"
        )
    sigma_space = hasattr(scheduler, "sigmas") and cls_name in ("EulerDiscreteScheduler", "HeunDiscreteScheduler")

    g = torch.Generator().manual_seed(seed)
    step_kw = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}
    x = torch.randn(shape, generator=g, dtype=torch.float32) * float(scheduler.init_noise_sigma)
    nfe0 = score.nfe
    try:
        with torch.no_grad():
            for timestep in scheduler.timesteps:
                model_in = scheduler.scale_model_input(x, timestep)
                if sigma_space:
                    t = sigma_to_t(sde, float(scheduler.sigmas[scheduler.step_index]))
                else:
                    t = float(t_of_step[int(timestep)])
                eps = score.eps(model_in, t)
                x = scheduler.step(eps, timestep, x, **step_kw).prev_sample
                if not torch.isfinite(x).all():
                    raise FloatingPointError(f"non-finite state after timestep {int(timestep)}")
    except FloatingPointError as e:
        return PeerResult(x, score.nfe - nfe0, 0.0, f"diverged: {e}")
    t_end = _end_time(name, scheduler, sde, abar)
    if sigma_space and t_end > 0:  # back from sigma space to our VP state
        x = x * float(sde.alpha(t_end))
    return PeerResult(x, score.nfe - nfe0, t_end, "ok")


def _end_time(name: str, scheduler, sde: SDE, abar: torch.Tensor) -> float:
    """The time of the law the final state targets."""
    if name in ("diffusers-ddim", "diffusers-dpmpp_2m", "diffusers-unipc", "diffusers-euler"):
        return float(timestep_times(sde, abar[:1])[0])  # alpha_bar_0: set_alpha_to_one=False / sigma_min
    return 0.0  # DDPM's last step and Heun's final sigma 0 return a clean-data prediction


def _kdiff_sample(name: str, score: Score, sde: SDE, shape, nfe: int, seed: int) -> PeerResult:
    kd = _kdiffusion()
    fn_name, per_step = _KDIFF[name]
    t_min, t_max = sde.t_min, 1.0

    def sigma_hat(t: float) -> float:
        return float(sde.marginal_std(t) / sde.alpha(t))

    def denoiser(x_hat, sigma):
        t = sigma_to_t(sde, float(sigma[0]))
        return score.x0(x_hat * float(sde.alpha(t)), t)

    s_min, s_max = sigma_hat(t_min), sigma_hat(t_max)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32) * s_max
    nfe0 = score.nfe
    try:
        with torch.no_grad():
            if per_step is None:
                x = kd.sample_dpm_fast(denoiser, x, s_min, s_max, max(1, nfe), disable=True)
            else:
                steps = max(1, nfe // per_step)
                sigmas = kd.get_sigmas_karras(steps + 1, s_min, s_max, rho=7.0)[:-1]  # end at s_min, not 0
                x = getattr(kd, fn_name)(denoiser, x, sigmas, disable=True)
        if not torch.isfinite(x).all():
            raise FloatingPointError("non-finite samples")
    except (FloatingPointError, ValueError, RuntimeError) as e:
        return PeerResult(x, score.nfe - nfe0, 0.0, f"diverged: {e}")
    return PeerResult(x * float(sde.alpha(t_min)), score.nfe - nfe0, t_min, "ok")
