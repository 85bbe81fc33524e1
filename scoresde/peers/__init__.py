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

Layout: :mod:`.registry` (the tables, loading, availability, time maps), :mod:`.runs` (:func:`peer_sample` and the
three loops); every name is importable from here.
"""

from .registry import (
    _DIFFUSERS,  # noqa: F401 (the tests read the tables and clear the import caches)
    _FLOW,  # noqa: F401 (the tests read the tables and clear the import caches)
    _KDIFF,  # noqa: F401 (the tests read the tables and clear the import caches)
    FLOW_PEER_T,
    PEER_T,
    PeerResult,
    PeerUnavailableWarning,
    _diffusers,  # noqa: F401 (the tests read the tables and clear the import caches)
    _kdiffusion,  # noqa: F401 (the tests read the tables and clear the import caches)
    available_peers,
    diffusers_alpha_bar,
    peer_path,
    sigma_hat,
    sigma_to_t,
    timestep_times,
    unavailable,
)
from .runs import peer_sample

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
