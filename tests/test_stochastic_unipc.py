"""UniPC with stochastic steps (``eta > 0``, SA-Solver's form): the ODE at ``eta = 0`` bit for bit, DDPM's posterior
at one step, a weak error below DPM-Solver++ (2M) SDE's, and the contraction of an error made early (a network's),
which the probability-flow ODE keeps. 1-D Gaussian data, so every target is in closed form."""

import math

import pytest
import torch

import scoresde as sd

VP = sd.VPSDE()
GAUSS = sd.GaussianMixture(torch.tensor([[0.5]]), torch.tensor([0.05]))
N = 200_000  # Monte Carlo standard error of a relative variance: sqrt(2 / N) = 3.2e-3
SE = math.sqrt(2 / N)


def _start(n=N):
    return GAUSS.marginal(VP, VP.T).sample(n, generator=torch.Generator().manual_seed(2))


def _variance_error(score, steps, n=N, **kw) -> float:
    """Relative error of the sample variance at t_min, started from the exact p_T."""
    target = float(VP.alpha(VP.t_min) ** 2 * 0.05 + VP.marginal_std(VP.t_min) ** 2)
    out = sd.sample(score, VP, method=kw.pop("method", "unipc"), steps=steps, x_init=_start(n), seed=3, **kw)
    return abs(float(out.x.var()) / target - 1)


def test_eta_zero_is_the_ode_bit_for_bit():
    gmm = sd.get_problem("gmm16")
    score = gmm.score(VP)
    for grid in (None, "logsnr"):
        kw = {} if grid is None else {"grid": grid}
        a = sd.sample(score, VP, (32, 16), method="unipc", steps=9, seed=1, **kw)
        b = sd.sample(score, VP, (32, 16), method="unipc", steps=9, seed=1, eta=0.0, **kw)
        assert torch.equal(a.x, b.x) and a.nfe == b.nfe == 9


def test_one_step_at_eta_one_is_ddpms_posterior():
    """One step (first order, no corrector) at ``eta = 1``: ``x_s = (sigma_s/sigma_t) e^{-h} x + alpha_s (1 - e^{-2h})
    x0 + sigma_s sqrt(1 - e^{-2h}) z``, DDIM with ``eta = 1``, with the same draw of the same stream."""
    score, xT = GAUSS.score(VP), _start(64)
    ref = sd.sample(score, VP, method="ddim", steps=1, x_init=xT, seed=5, eta=1.0).x
    out = sd.sample(score, VP, method="unipc", steps=1, x_init=xT, seed=5, eta=1.0, grid="uniform").x
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_default_grid_is_logsnr_with_noise():
    assert sd.solvers.get_solver("unipc")().default_grid == "quadratic"
    assert sd.solvers.get_solver("unipc")(eta=0.5).default_grid == "logsnr"
    score, xT = GAUSS.score(VP), _start(16)
    a = sd.sample(score, VP, method="unipc", steps=6, x_init=xT, seed=5, eta=0.5)
    b = sd.sample(score, VP, method="unipc", steps=6, x_init=xT, seed=5, eta=0.5, grid="logsnr")
    assert torch.equal(a.x, b.x)


def test_weak_error_below_dpmpp_2m_sde():
    """Measured relative variance errors at 20 / 40 / 80 steps (log-SNR grid): ``unipc`` with ``eta = 1`` 0.071,
    0.014, 0.0076; ``dpm++2m-sde`` 0.17, 0.041, 0.015 (both integrate the reverse SDE; UniPC's drift part is
    third order). Below half at 20 and 40 steps, and within 4 Monte Carlo standard errors at 80."""
    ours = [_variance_error(GAUSS.score(VP), k, eta=1.0) for k in (20, 40, 80)]
    sde2m = [_variance_error(GAUSS.score(VP), k, method="dpm++2m-sde") for k in (20, 40)]
    assert ours[0] < sde2m[0] / 2 and ours[1] < sde2m[1] / 2, (ours, sde2m)
    assert ours[2] < 4 * SE, ours


def test_noise_contracts_an_early_error_the_ode_keeps():
    """A "network" wrong above t = 0.3 (the score of variance 0.3 instead of 0.05) and exact below. The ODE carries
    the state's error at t = 0.3 down to t_min; with ``eta`` the linear part is damped by ``e^{-eta h}`` per step, so
    the error left is ``e^{-2 eta (lambda(t_min) - lambda(0.3))} ~ 1e-4`` of it at ``eta = 1`` (``lambda`` rises by
    4.8 there) plus the discretisation's. Measured at 100 steps, 50,000 samples (standard error 6.3e-3): ODE 0.147,
    ``eta = 0.3`` 0.068, ``eta = 1`` 0.0073."""
    right, wrong = GAUSS.eps_model(VP), sd.GaussianMixture(torch.tensor([[0.5]]), torch.tensor([0.3])).eps_model(VP)

    def model(x, t):
        return torch.where((t > 0.3)[:, None], wrong(x, t), right(x, t))

    score = sd.EpsilonScore(model, VP)
    errs = [_variance_error(score, 100, n=50_000, eta=eta) for eta in (0.0, 0.3, 1.0)]
    assert errs[0] > 0.1, errs  # the ODE keeps the early error
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < errs[0] / 10, errs


def test_reproducible_batch_independent_and_checked():
    score = sd.get_problem("gmm16").score(VP)
    kw = dict(method="unipc", steps=8, eta=1.0)
    a = sd.sample(score, VP, (24, 16), seed=11, **kw).x
    b = sd.sample(score, VP, (8, 16), seed=11, sample_offset=16, **kw).x
    torch.testing.assert_close(a[16:], b, rtol=1e-12, atol=1e-12)
    assert not torch.equal(a, sd.sample(score, VP, (24, 16), seed=12, **kw).x)
    for bad in (-0.1, float("nan"), "1"):
        with pytest.raises(ValueError, match="eta"):
            sd.sample(score, VP, (4, 16), method="unipc", steps=3, seed=0, eta=bad)


def test_noise_only_below_eta_sigma_max():
    """``eta_sigma_max``: the steps starting above that ``sigma / alpha`` are the ODE's (below every level: the ODE on
    the same grid, bit for bit; infinite: every step stochastic), and the ones below draw as before."""
    score = sd.get_problem("gmm16").score(VP)
    kw = dict(method="unipc", steps=8, seed=4)

    def run(**more):
        return sd.sample(score, VP, (16, 16), **kw, **more).x

    assert torch.equal(run(eta=1.0, eta_sigma_max=1e-9), run(grid="logsnr"))
    assert torch.equal(run(eta=1.0, eta_sigma_max=math.inf), run(eta=1.0))
    part = run(eta=1.0, eta_sigma_max=0.3)
    assert not torch.equal(part, run(eta=1.0)) and not torch.equal(part, run(grid="logsnr"))
    with pytest.raises(ValueError, match="eta_sigma_max"):
        run(eta=1.0, eta_sigma_max=0.0)
