"""EDM / k-diffusion denoisers ``D(x_hat, sigma_hat)`` as :class:`sd.DenoiserScore`, and our ``edm-heun`` against
k-diffusion's ``sample_heun`` (loaded as :mod:`scoresde.peers` loads it, without torchvision).

Two closed-form denoisers, float64:

- Gaussian data ``N(mu, s0^2 I)``: ``D(x; sigma) = mu + s0^2 / (s0^2 + sigma^2) (x - mu)``, whose score on the VE SDE
  is ``-(x - mu) / (s0^2 + sigma(t)^2)`` and on the VP SDE ``-(x - alpha mu) / (alpha^2 s0^2 + sigma^2)``;
- data ``+-1`` per coordinate with equal weight: ``D(x; sigma) = tanh(x / sigma^2)``, nonlinear, for the samplers.
"""

import math

import pytest
import torch

import scoresde as sd
from scoresde import peers

MU, S0 = 0.7, 0.5


def gaussian_denoiser(x_hat, sigma):
    c = S0**2 / (S0**2 + sigma**2)
    return MU + sd.sde.append_dims(c, x_hat.ndim) * (x_hat - MU)


def binary_denoiser(x_hat, sigma):
    return torch.tanh(x_hat / sd.sde.append_dims(sigma, x_hat.ndim) ** 2)


@pytest.mark.parametrize("sde", [sd.VESDE(0.01, 50.0), sd.VPSDE()], ids=["ve", "vp"])
def test_denoiser_score_is_the_closed_form_score(sde):
    score = sd.DenoiserScore(gaussian_denoiser, sde)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    for t in (1e-3, 0.1, 0.5, 1.0):
        a, s = float(sde.alpha(t)), float(sde.marginal_std(t))
        exact = -(x - a * MU) / (a**2 * S0**2 + s**2)
        # eps = (x - alpha D) / sigma cancels: about log10(s0^2 / sigma_hat^2) digits are lost (measured at most
        # 3e-11 at sigma_hat = 1.3e-3 on VE, 3e-16 at sigma_hat >= 0.7, relative to the largest entry; 20 seeds)
        bound = 1e-14 * (1 + S0**2 / (s / a) ** 2)
        per_sample = torch.full((5,), t, dtype=torch.float64)  # the per-sample time path as well
        for got in (score(x, t), score(x, per_sample)):
            assert float((got - exact).abs().max() / exact.abs().max()) < bound, t
        assert torch.allclose(
            score.x0(x, t), gaussian_denoiser(x / a, torch.full((5,), s / a, dtype=torch.float64)), rtol=1e-13, atol=0
        )
    assert score.nfe == 12


def _kd():
    kd = peers._kdiffusion()
    if kd is None:
        pytest.skip(f"k-diffusion's sampling does not load: {peers.unavailable().get('k-diffusion', 'not installed')}")
    return kd


@pytest.mark.parametrize("sde", [sd.VESDE(0.01, 50.0), sd.VPSDE()], ids=["ve", "vp"])
def test_edm_heun_reproduces_k_diffusion_sample_heun(sde):
    """Same sigma grid (k-diffusion's Karras sigmas, rho = 7), mapped to our times by ``log_snr = -2 log sigma``.

    The last-step conventions differ: our ``edm-heun`` by default takes an Euler last step to ``t_min`` (NFE
    ``2 steps - 1``); k-diffusion takes Heun steps except into ``sigma = 0``, where it takes Euler, which lands on
    ``D(x; sigma_last)``. So (a) k-diffusion's sigmas without the trailing 0 (Heun to ``sigma_min``) is ours with
    ``last_euler=False`` on the same grid; (b) with the trailing 0 it is ours with ``last_euler=False`` on the grid
    up to the last nonzero sigma and ``denoise=True`` (the Euler step to sigma 0 is the Tweedie step). On the VP
    SDE k-diffusion works in ``x_hat = x / alpha``: our start is ``alpha(t_0) x_hat`` and our end is divided by
    ``alpha(t_end)``. Measured (float64): agreement to 4e-15 relative; asserted 1e-12.
    """
    kd = _kd()
    sigma_min, sigma_max = 0.02, 40.0
    sigmas = kd.get_sigmas_karras(8, sigma_min, sigma_max, rho=7.0).double()  # 8 sigmas and a trailing 0
    x_hat = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * sigma_max
    score = sd.DenoiserScore(binary_denoiser, sde)

    def times(s):
        return sde.t_from_log_snr(-2 * torch.log(s))

    for tail, denoise in ((sigmas[:-1], False), (sigmas, True)):
        torch.manual_seed(0)  # sample_heun draws (unused, churn 0) noise each step
        ref = kd.sample_heun(binary_denoiser, x_hat.clone(), tail, disable=True)
        grid = times(sigmas[:-1])
        a0 = float(sde.alpha(grid[0]))
        out = sd.sample(score, method="edm-heun", grid=grid, x_init=a0 * x_hat, last_euler=False, denoise=denoise)
        end = 1.0 if denoise else float(sde.alpha(grid[-1]))
        got = out.x / end
        err = float((got - ref).abs().max() / ref.abs().max())
        assert err < 1e-12, (denoise, err)
        assert out.nfe == 2 * 7 + int(denoise)
    default = sd.sample(score, method="edm-heun", grid=grid, x_init=a0 * x_hat)  # Euler last step to t_min
    assert default.nfe == 2 * 7 - 1
    assert float((default.x / float(sde.alpha(grid[-1])) - ref).abs().max()) > 1e-6  # conventions told apart
    assert math.isfinite(err)
