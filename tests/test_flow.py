"""The rectified-flow path (``sd.FlowSDE``) and the velocity parameterisation (``sd.FlowVelocityScore``): closed-form
marginals against simulation of the forward SDE, the coefficient identities, the log-SNR round trip, the
conversions, and every deterministic sampler's convergence order on the exact Gaussian flow map."""

import math

import pytest
import torch
from test_orders import GAUSS, fitted_order

import scoresde as sd

F64 = torch.float64
SHIFTS = [1.0, 3.0, 0.5]


@pytest.mark.parametrize("shift", SHIFTS)
def test_path_is_the_shifted_rectified_flow(shift):
    sde = sd.FlowSDE(shift=shift)
    t = torch.linspace(0, sde.T, 101, dtype=F64)
    s = shift * t / (1 + (shift - 1) * t)  # SD3's shift (Esser et al. 2024), diffusers' FlowMatchEuler
    torch.testing.assert_close(sde.marginal_std(t), s, rtol=1e-15, atol=0)
    torch.testing.assert_close(sde.alpha(t), 1 - s, rtol=1e-13, atol=1e-16)
    torch.testing.assert_close(sde.alpha(t) + sde.marginal_std(t), torch.ones_like(t), rtol=0, atol=2.3e-16)
    torch.testing.assert_close(sde.log_alpha(t).exp(), sde.alpha(t), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.unshifted(sde.shifted(t)), t, rtol=1e-15, atol=1e-17)


@pytest.mark.parametrize("shift", SHIFTS)
def test_drift_and_diffusion_give_the_marginals(shift):
    """f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (Song et al. 2021, eq. 29), by central
    differences of the closed forms; the error of a difference of step 1e-5 is about 1e-9 relative."""
    sde, h = sd.FlowSDE(shift=shift), 1e-5
    t = torch.linspace(0.01, 0.98, 50, dtype=F64)
    dlog_alpha = (sde.log_alpha(t + h) - sde.log_alpha(t - h)) / (2 * h)
    dvar = (sde.marginal_std(t + h) ** 2 - sde.marginal_std(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(sde.drift_coef(t), dlog_alpha, rtol=1e-7, atol=0)
    g2 = dvar - 2 * sde.drift_coef(t) * sde.marginal_std(t) ** 2
    torch.testing.assert_close(sde.diffusion(t) ** 2, g2, rtol=1e-7, atol=1e-12)


def test_forward_sde_simulation_matches_the_closed_form_marginal():
    """Euler-Maruyama of dx = f x dt + g dW from a fixed x0 to t = 0.9 (500 steps, 40,000 paths): mean and std
    within 5 standard errors plus the scheme's O(dt) bias."""
    sde = sd.FlowSDE(shift=3.0)
    g = torch.Generator().manual_seed(0)
    n, steps, t_end = 40_000, 500, 0.9
    x0 = 1.5
    x = torch.full((n,), x0, dtype=F64)
    dt = t_end / steps
    for k in range(steps):
        t = (k + 0.5) * dt  # midpoint coefficients: the bias stays O(dt)
        x = (
            x
            + float(sde.drift_coef(t)) * x * dt
            + float(sde.diffusion(t)) * math.sqrt(dt) * torch.randn(n, generator=g, dtype=F64)
        )
    mean, std = sde.marginal(torch.tensor([x0], dtype=F64), t_end)
    se = float(std) / math.sqrt(n)
    assert abs(float(x.mean()) - float(mean)) < 5 * se + 1e-3
    assert abs(float(x.std()) - float(std)) < 5 * float(std) / math.sqrt(2 * n) + 1e-3


@pytest.mark.parametrize("shift", SHIFTS)
def test_log_snr_round_trip_and_finite_ends(shift):
    sde = sd.FlowSDE(shift=shift)
    t = torch.linspace(sde.t_min, sde.T, 200, dtype=F64)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-11, atol=1e-13)
    for c in (sde.coefs(sde.T), sde.coefs(sde.t_min)):
        assert all(math.isfinite(v) for v in c)
    assert sde.prior_std() == pytest.approx(math.hypot(float(sde.alpha(sde.T)), float(sde.marginal_std(sde.T))))
    end = sd.FlowSDE(shift=shift, T=1.0).coefs(1.0)  # pure noise: alpha = 0, the log-SNR is -inf, no exception
    assert end.alpha == 0 and end.sigma == 1 and end.lam == -math.inf


def test_bad_parameters_are_refused():
    for kw in (dict(shift=0.0), dict(shift=-1.0), dict(shift=math.inf), dict(T=1.5), dict(T=0.0)):
        with pytest.raises(ValueError, match="FlowSDE"):
            sd.FlowSDE(**kw)
    assert repr(sd.FlowSDE(shift=3.0)) == "FlowSDE(shift=3.0)" and "T=1.0" in repr(sd.FlowSDE(T=1.0))


def test_velocity_conversions_agree_with_the_exact_score():
    """A network predicting u = eps - x0 (here the exact one of a mixture) gives, through FlowVelocityScore, the
    exact eps, x0 and score; and on the unshifted path the probability-flow drift is that velocity."""
    for shift in SHIFTS:
        sde = sd.FlowSDE(shift=shift)
        exact = sd.get_problem("ring").score(sde)
        velocity = sd.FlowVelocityScore(exact.velocity, sde)
        x = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
        for t in (sde.t_min, 0.3, 0.9, sde.T):
            eps, x0 = exact.eps_and_x0(x, t)
            e2, x02 = velocity.eps_and_x0(x, t)
            torch.testing.assert_close(e2, eps, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(x02, x0, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(velocity.score(x, t), exact.score(x, t), rtol=1e-9, atol=1e-9)
            if shift == 1.0:  # dx/dt = f x + g^2 / (2 sigma) eps = eps - x0 on the plain path
                torch.testing.assert_close(sde.coefs(t).pf_drift(x, eps), eps - x0, rtol=1e-9, atol=1e-9)
    assert "VScore" not in repr(velocity)


def test_velocity_model_is_finite_at_pure_noise():
    """At t = 1 (alpha = 0) a velocity model still gives x0 = x - u and eps = x; DDIM from pure noise with the
    exact velocity of a point mass, u = (x - x0) / t, lands on it."""
    sde = sd.FlowSDE(T=1.0)
    target = torch.tensor([[0.7, -1.2]], dtype=F64)
    score = sd.FlowVelocityScore(lambda x, t: (x - target) / t[:, None], sde)
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    eps, x0 = score.eps_and_x0(x, 1.0)
    torch.testing.assert_close(eps, x)
    torch.testing.assert_close(x0, target.expand(5, 2))
    out = sd.sample(score, method="ddim", grid=torch.tensor([1.0, 0.5], dtype=F64), x_init=x, denoise=True)
    torch.testing.assert_close(out.x, target.expand(5, 2), rtol=1e-14, atol=1e-14)


# Measured slopes on the flow path (shift 1, t_min = 1e-3, T = 1 - 2^-10, float64): ddim 0.99 and ode-euler 0.99 on
# the uniform grid; ode-rk4 3.93, dpm++2m 2.02, dpm2s 1.97, dpm3s 2.84, unipc 2.88 on the log-SNR grid, dpm++3m
# 3.06 and edm-heun 2.07 on the Karras grid. Midpoint converges faster than declared at shift 1 on every grid
# (3.0: its second-order error constant vanishes on this Gaussian's flow), so it is fitted at shift 3 (1.98).
FLOW_ORDER_CASES = [
    ("ddim", [20, 40, 80, 160], "uniform"),
    ("ode-euler", [20, 40, 80, 160], "uniform"),
    ("ode-rk4", [10, 20, 40, 80], "logsnr"),
    ("dpm++2m", [20, 40, 80, 160], "logsnr"),
    ("dpm++3m", [40, 80, 160, 320], "karras"),
    ("dpm2s", [10, 20, 40, 80], "logsnr"),
    ("dpm3s", [40, 80, 160, 320], "logsnr"),
    ("unipc", [20, 40, 80, 160], "logsnr"),
    ("edm-heun", [20, 40, 80, 160], "karras"),
]


@pytest.mark.parametrize("method,steps,grid", FLOW_ORDER_CASES)
def test_pf_ode_order_on_the_flow_path(method, steps, grid):
    """The same fitted-slope test as on VP (tests/test_orders.py): no solver knows which path it runs on."""
    declared = sd.method_info(method)["order"]
    slope, errs = fitted_order(sd.FlowSDE(), method, steps, grid)
    assert errs[-1] < errs[0]
    assert abs(slope - declared) < 0.2, f"{method} on {grid}: slope {slope:.3f}, errors {errs}"


@pytest.mark.parametrize("method,grid", [("ode-midpoint", "uniform"), ("dpm++2m", "logsnr"), ("ode-rk4", "logsnr")])
def test_shifted_path_orders(method, grid):
    """Shift 3 (measured): ode-midpoint 1.98 on the uniform grid, dpm++2m 2.02 on the log-SNR grid, ode-rk4 4.21 there
    (pre-asymptotic on 20-160 steps; 0.25 as for the other SDEs in tests/test_orders.py)."""
    slope, errs = fitted_order(sd.FlowSDE(shift=3.0), method, [20, 40, 80, 160], grid)
    assert abs(slope - sd.method_info(method)["order"]) < 0.25, (method, slope, errs)


STIFF = ("sde-midpoint", "sde-srk")


@pytest.mark.parametrize("method", sd.available_methods())
def test_every_method_samples_the_flow_path(method, counting):
    """Every registered sampler on the flow path, 50 calls (or adaptive), its default grid, 4,000 draws of a Gaussian:
    the mean and covariance of the samples against the exact marginal at t_min (standard errors about 0.011; the
    bounds 0.05 and 0.2 leave room for first-order methods' bias at 50 steps, measured up to 0.12 for ddpm), and
    every model call counted. On their default uniform grid the reverse SDE's stiffness near T (g^2 about 2,000)
    breaks torchsde's midpoint (covariance off by 2) and SRK (0.19): they run on the log-SNR grid (0.031, 0.040)."""
    sde = sd.FlowSDE()
    model, calls = counting(GAUSS.eps_model(sde))
    info = sd.method_info(method)
    kw = (
        dict(rtol=1e-2, atol=1e-2)
        if info["adaptive"]
        else dict(steps=max(2, 50 // info["nfe_per_step"]), grid="logsnr" if method in STIFF else None)
    )
    out = sd.sample(sd.EpsilonScore(model, sde), sde, (4000, 2), method=method, seed=0, dtype=F64, **kw)
    assert out.calls == len(calls) == out.nfe
    target = GAUSS.marginal(sde, sde.t_min)
    assert float((out.x.mean(0) - target.means[0]).abs().max()) < 0.05
    assert float((torch.cov(out.x.T) - target.covs[0]).abs().max()) < 0.2


def test_fitted_solver_grid_and_likelihood_on_the_flow_path():
    """A fitted solver and an optimized grid fit and sample on the flow path like on VP, and the PF-ODE likelihood
    is the exact log-density of the marginal at t_min: measured 1.1e-3 nats apart at shift 3 (3.2e-3 at shift 1),
    at tolerance 1e-6 as at 1e-8, the prior's neglect of alpha_T x0 (alpha_T = 3.3e-4 here)."""
    sde = sd.FlowSDE(shift=3.0)
    score = GAUSS.score(sde)
    fitted = sd.fit_solver(score, 5, (2,), budget=20_000)
    out = sd.sample(score, sde, (2000, 2), method=fitted, seed=0, dtype=F64)
    assert out.nfe == 5 and float((out.x.mean(0) - GAUSS.means[0]).abs().max()) < 0.05
    grid = sd.sample(score, sde, (2000, 2), method="unipc", steps=5, grid="optimized", seed=0, dtype=F64)
    assert grid.fit_nfe > 0 and torch.isfinite(grid.x).all()
    x = GAUSS.sample(200, generator=torch.Generator().manual_seed(0)).to(F64)
    res = sd.log_likelihood(score, sde, x, rtol=1e-6, atol=1e-6)
    assert float((res.nats - GAUSS.marginal(sde, sde.t_min).log_prob(x)).abs().max()) < 5e-3


# --- training with flow matching ----------------------------------------------------------------------------------
def test_flow_matching_loss_target_and_its_minimiser():
    """The flow loss regresses eps - x0 (a constant offset of the model adds its square to the loss, with the same
    draws), and its min-SNR weight is the data-prediction error's."""
    from scoresde.loss import denoising_loss, flow_mse, min_snr_weight, target

    x0, eps = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    assert torch.equal(target("flow", x0, eps, 0.3, 0.7), eps - x0)
    sde = sd.FlowSDE()
    g = torch.Generator().manual_seed(0)
    data = GAUSS.sample(4096, generator=g)
    exact = GAUSS.velocity_model(sde)
    best = flow_mse(exact, sde, data, generator=torch.Generator().manual_seed(1))
    up = flow_mse(lambda x, t: exact(x, t) + 0.1, sde, data, generator=torch.Generator().manual_seed(1))
    down = flow_mse(lambda x, t: exact(x, t) - 0.1, sde, data, generator=torch.Generator().manual_seed(1))
    # the same draws: E|a + c|^2 + E|a - c|^2 - 2 E|a|^2 = 2 c^2 exactly, a = u* - (eps - x0)
    assert float(up + down - 2 * best) == pytest.approx(0.02, rel=1e-9)
    assert float(best) < float(up) or float(best) < float(down)
    same = denoising_loss(exact, sde, data, prediction="flow", generator=torch.Generator().manual_seed(1))
    assert torch.equal(best, same)
    # min-SNR weight of the velocity: min(SNR, gamma) (d x0 / d u)^2 with x0 = (x - sigma u) / (alpha + sigma)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    a, s = sde.alpha(t), sde.marginal_std(t)
    want = torch.minimum(a**2 / s**2, torch.tensor(5.0, dtype=F64)) * (s / (a + s)) ** 2
    torch.testing.assert_close(min_snr_weight(sde, t, "flow", 5.0), want)


def test_logit_normal_times():
    """SD3's sampler: logit(t) ~ N(m, s^2), clamped to [t_eps, T]; 20,000 draws, mean and std within 5 SE."""
    from scoresde.loss import sample_t

    sde = sd.FlowSDE()
    t, iw = sample_t(
        20_000, sde, t_sampler="logit-normal", logit_normal=(0.5, 0.8), generator=torch.Generator(), dtype=F64
    )
    assert float(t.min()) >= 1e-5 and float(t.max()) <= sde.T and torch.equal(iw, torch.ones_like(iw))
    z = torch.logit(t)
    assert abs(float(z.mean()) - 0.5) < 5 * 0.8 / math.sqrt(20_000)
    assert abs(float(z.std()) - 0.8) < 5 * 0.8 / math.sqrt(2 * 20_000)


def test_train_with_flow_matching_records_it_and_loads_the_velocity_wrapper(tmp_path, capsys):
    from scoresde.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", "moons", "--sde", "flow", "--prediction", "flow", "--t-sampler", "logit-normal"]
    assert main([*args, "--steps", "3", "--batch-size", "16", "--no-progress", "--out", str(out)]) == 0
    score, sde, cfg, _ = sd.load_score(out)
    assert isinstance(score, sd.FlowVelocityScore) and repr(sde) == repr(sd.FlowSDE())
    assert cfg.sde == {"name": "flow"} and cfg.prediction == "flow" and cfg.t_sampler == "logit-normal"
    assert (cfg.logit_mean, cfg.logit_std) == (0.0, 1.0)
    x = sd.sample(score, sde, (64, 2), method="dpm++2m", steps=5, seed=0).x
    assert x.shape == (64, 2) and torch.isfinite(x).all()
