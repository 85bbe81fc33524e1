"""The discrete-time view: DDPM-trained models plug in and reproduce Ho et al.'s sampler exactly."""

import pytest
import torch

import scoresde as sd
from scoresde.noise import NoiseSource

N_STEPS = 1000
BETAS = sd.VPSDE().discrete_betas(N_STEPS)
DSDE = sd.DiscreteVPSDE(BETAS)


def test_ho_betas_and_alpha_bar_at_the_knots():
    assert torch.allclose(BETAS, torch.linspace(1e-4, 0.02, N_STEPS, dtype=torch.float64), rtol=0, atol=1e-15)
    t = DSDE.timestep_to_t(torch.arange(N_STEPS, dtype=torch.float64))
    assert torch.allclose(DSDE.alpha_bar(t), torch.cumprod(1 - BETAS, 0), rtol=1e-12, atol=0)
    assert torch.allclose(DSDE.t_to_timestep(t), torch.arange(N_STEPS, dtype=torch.float64), atol=1e-9)
    # The continuous linear schedule matches the chain to O(1/n) in log alpha_bar: -log prod(1 - beta_j)
    # = sum beta_j + 1/2 sum beta_j^2 + ..., and sum beta_j differs from int_0^t beta by at most one beta_i
    # (a midpoint/endpoint offset of the linspace), so |difference| <= 1/2 sum beta_j^2 (1 + beta) + beta_i.
    diff = (sd.VPSDE().alpha_bar(t).log() - DSDE.alpha_bar(t).log()).abs()
    bound = 0.5 * torch.cumsum(BETAS**2, 0) * (1 + BETAS.max()) + BETAS
    assert (diff <= bound).all(), float((diff / bound).max())


def test_discrete_sde_identities():
    t = torch.linspace(1e-3, 1, 997, dtype=torch.float64)
    assert torch.allclose(DSDE.t_from_log_snr(DSDE.log_snr(t)), t, atol=1e-12)
    # VP: g^2 = beta = -2 d log alpha / dt, and sigma^2 = 1 - alpha_bar; check d log alpha/dt numerically
    h = 1e-7
    mid = (torch.arange(N_STEPS, dtype=torch.float64) + 0.5) / N_STEPS  # away from knots
    fd = (DSDE.log_alpha(mid + h) - DSDE.log_alpha(mid - h)) / (2 * h)
    assert torch.allclose(fd, DSDE.drift_coef(mid), rtol=1e-6)
    assert torch.allclose(DSDE.diffusion(mid) ** 2, -2 * DSDE.drift_coef(mid))
    assert torch.equal(DSDE.discrete_betas(N_STEPS), BETAS)
    with pytest.raises(ValueError, match="1000 steps"):
        DSDE.discrete_betas(500)
    with pytest.raises(ValueError, match="betas"):
        sd.DiscreteVPSDE(torch.tensor([0.1, 1.5]))


def test_ddpm_on_the_discrete_sde_is_ho_et_al_step_for_step():
    """Ho et al. 2020, Algorithm 2 with sigma_t^2 = beta_tilde_t, written independently from their paper."""
    gmm = sd.get_problem("ring")
    cont_eps = gmm.eps_model(DSDE)
    idx_model = lambda x, i: cont_eps(x, (i + 1) / N_STEPS)  # noqa: E731  a "trained" model on timestep indices
    score = sd.EpsilonScore(sd.discrete_time_model(idx_model, N_STEPS), DSDE)
    n, seed = 64, 9
    steps = 50  # a sub-chain: every 20th timestep, still exact knots
    ts = DSDE.timestep_to_t(torch.arange(N_STEPS - 1, -1, -N_STEPS // steps, dtype=torch.float64))
    ts = (
        torch.cat([ts, torch.tensor([DSDE.timestep_to_t(0.0).item()], dtype=torch.float64)])
        if ts[-1] > 1.5 / N_STEPS
        else ts
    )
    out = sd.sample(score, DSDE, (n, 2), method="ddpm", grid=ts, seed=seed, denoise=True, dtype=torch.float64)

    # Reference: the DDPM posterior between timesteps i > j of the chain, from alpha_bar alone.
    abar = torch.cumprod(1 - BETAS, 0)
    idx = DSDE.t_to_timestep(ts).round().long().tolist()
    noise = NoiseSource(seed)
    x = noise.randn((n, 2), stream=0, dtype=torch.float64)
    for k, (i, j) in enumerate(zip(idx[:-1], idx[1:], strict=True)):
        eps = idx_model(x, torch.full((n,), float(i), dtype=torch.float64))
        x0 = (x - (1 - abar[i]).sqrt() * eps) / abar[i].sqrt()
        beta_ij = 1 - abar[i] / abar[j]  # the effective beta of the jump i -> j
        mean = abar[j].sqrt() * beta_ij / (1 - abar[i]) * x0 + (1 - beta_ij).sqrt() * (1 - abar[j]) / (1 - abar[i]) * x
        var = (1 - abar[j]) / (1 - abar[i]) * beta_ij
        x = mean + var.sqrt() * noise.randn((n, 2), stream=k + 1, dtype=torch.float64)
    # Algorithm 2's last step: x_0 = 1/sqrt(alpha_0) (x_1 - beta_0 / sqrt(1 - abar_0) eps), no noise.
    eps = idx_model(x, torch.zeros(n, dtype=torch.float64))
    x = (x - BETAS[0] / (1 - abar[0]).sqrt() * eps) / (1 - BETAS[0]).sqrt()
    assert torch.allclose(out.x, x, rtol=0, atol=1e-10)
    assert out.nfe == len(ts)  # len(ts) - 1 steps and the final denoising call
