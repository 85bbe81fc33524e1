"""Peer adapters (diffusers, k-diffusion): the time mapping, counted NFE, quality, reproducibility, divergence."""

import math

import pytest
import torch

import scoresde as sd
from scoresde import peers
from scoresde.metrics import mode_conditional_swd

if not peers.available_peers():
    pytest.skip("no peer library installed (pip install -e '.[peers]')", allow_module_level=True)

SDE = sd.VPSDE(T=peers.PEER_T)
RING = sd.get_problem("ring")


def test_timestep_mapping_reproduces_the_discrete_alpha_bar():  # diffusers' discrete timesteps
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    abar = sd.VPSDE().discrete_alpha_bar(1000)
    assert torch.allclose(abar.float(), sched.alphas_cumprod, rtol=1e-5, atol=0)  # same chain (theirs is float32)
    t = peers.timestep_times(SDE, abar)
    assert torch.allclose(SDE.alpha_bar(t), abar, rtol=1e-12, atol=0)
    assert 0 < float(t[0]) < 2e-3 and 1 < float(t[-1]) < peers.PEER_T
    for sigma in (0.01, 1.0, 150.0):  # sigma space: alpha_bar = 1 / (1 + sigma^2)
        tt = peers.sigma_to_t(SDE, sigma)
        assert math.isclose(float(SDE.alpha_bar(tt)), 1 / (1 + sigma**2), rel_tol=1e-12)


def test_unknown_peer_and_short_sde_are_refused():
    with pytest.raises(ValueError, match="available peers"):
        peers.peer_sample("diffusers-magic", RING.score(SDE), SDE, (4, 2), 5, 0)
    with pytest.raises(ValueError, match="T=1.01"):
        peers.peer_sample("diffusers-ddim", RING.score(sd.VPSDE()), sd.VPSDE(), (4, 2), 5, 0)


# Measured mode-conditional SWD at 50 NFE on the ring, n = 2000, against a floor of 0.0335 +- 0.0014:
# diffusers ddim 0.0399, ddpm 0.0435, dpmpp_2m 0.0390, unipc 0.0388, euler 0.0399, heun 0.0475; k-diffusion
# euler 0.0403, heun 0.0378, dpmpp_2m 0.0376, lms 0.0375, dpm_fast 0.0376 (1.12x-1.42x).
# The bound, 2x the floor mean, keeps seed-to-seed room and still fails a scheduler given wrong times.
@pytest.mark.parametrize("name", peers.available_peers())
def test_each_peer_counts_nfe_and_reaches_near_the_floor(name):
    calls = []
    exact = RING.eps_model(SDE)

    def model(x, t):
        calls.append(1)
        return exact(x, t)

    res = peers.peer_sample(name, sd.EpsilonScore(model, SDE), SDE, (2000, 2), 50, seed=0)
    assert res.status == "ok" and torch.isfinite(res.x).all()
    assert res.nfe == len(calls) and 45 <= res.nfe <= 50
    target = RING.marginal(SDE, res.t_end) if res.t_end > 0 else RING
    floor = [
        mode_conditional_swd(
            target.sample(2000, generator=torch.Generator().manual_seed(s)), target, torch.Generator().manual_seed(9)
        )[0]
        for s in range(4)
    ]
    value = mode_conditional_swd(res.x.double(), target, torch.Generator().manual_seed(9))[0]
    assert value < 2 * sum(floor) / len(floor), (value, floor)


def test_same_seed_same_samples():
    a = peers.peer_sample("diffusers-ddpm", RING.score(SDE), SDE, (16, 2), 10, seed=3).x
    b = peers.peer_sample("diffusers-ddpm", RING.score(SDE), SDE, (16, 2), 10, seed=3).x
    c = peers.peer_sample("diffusers-ddpm", RING.score(SDE), SDE, (16, 2), 10, seed=4).x
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", peers.available_peers())
def test_divergence_is_recorded_not_raised(name):
    exact = RING.eps_model(SDE)
    score = sd.EpsilonScore(lambda x, t: exact(x, t) * (math.inf if float(t[0]) < 0.5 else 1.0), SDE)
    res = peers.peer_sample(name, score, SDE, (8, 2), 10, seed=0)
    assert res.status.startswith("diverged") and res.nfe > 0


@pytest.mark.skipif("kdiff-euler" not in peers.available_peers(), reason="k-diffusion not installed")
def test_kdiffusion_sigma_space_mapping():
    """The denoiser k-diffusion sees returns the exact x0 at the t with sigma_hat = sigma / alpha."""
    t = 0.3
    sigma_hat = float(SDE.marginal_std(t) / SDE.alpha(t))
    assert math.isclose(peers.sigma_to_t(SDE, sigma_hat), t, rel_tol=1e-12)
    # Euler in sigma space on the same grid is DDIM (Karras et al. 2022, sec. 4): the two adapters agree
    # with our own DDIM on k-diffusion's grid to float32 rounding.
    kd = peers._kdiffusion()
    s_min, s_max = float(SDE.marginal_std(1e-3) / SDE.alpha(1e-3)), float(SDE.marginal_std(1.0) / SDE.alpha(1.0))
    sigmas = kd.get_sigmas_karras(11, s_min, s_max, rho=7.0)[:-1]
    grid = torch.tensor([peers.sigma_to_t(SDE, float(s)) for s in sigmas], dtype=torch.float64)
    res = peers.peer_sample("kdiff-euler", RING.score(SDE), SDE, (64, 2), 10, seed=0)
    x_init = torch.randn((64, 2), generator=torch.Generator().manual_seed(0)) * s_max * float(SDE.alpha(1.0))
    ours = sd.sample(RING.score(SDE), SDE, method="ddim", grid=grid, x_init=x_init).x
    assert torch.allclose(res.x, ours, atol=1e-4), (res.x - ours).abs().max()
