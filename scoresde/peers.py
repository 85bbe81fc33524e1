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

NFE is counted by the score's own counter, never taken from the scheduler. A run that produces NaN/inf is
reported in ``status``, not raised. k-diffusion is not offered: its ``sampling`` module imports
torchvision at import time, which does not install beside the CPU build of torch we pin.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

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


def available_peers() -> list[str]:
    """Peer sampler names whose library is installed."""
    return sorted(_DIFFUSERS) if _diffusers() is not None else []


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
        raise ValueError(f"diffusers' schedulers are driven on the linear VP schedule; pass VPSDE(T={PEER_T})")
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
