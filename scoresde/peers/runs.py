"""Running a peer: :func:`peer_sample` checks the request and drives diffusers' scheduler loop, k-diffusion's
sampler or the flow peers on our score, with every model call counted and a non-finite value reported."""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
from torch import Tensor

from ..param import Score
from ..sde import SDE, VPSDE, FlowSDE
from .registry import (
    _BETA_END,
    _BETA_START,
    _DIFFUSERS,
    _FLOW,
    _KDIFF,
    _TRAIN_STEPS,
    FLOW_PEER_T,
    PEER_T,
    PeerResult,
    _diffusers,
    _Diverged,
    _kdiffusion,
    available_peers,
    diffusers_alpha_bar,
    sigma_hat,
    sigma_to_t,
    timestep_times,
)

__all__ = ["peer_sample"]


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
