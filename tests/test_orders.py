"""Empirical convergence orders against closed-form solutions (float64).

For Gaussian data ``N(m, C)`` the probability-flow ODE of a linear-drift SDE has a closed-form flow map:
along each eigenvector of ``C`` (eigenvalue ``l``) the centred state is scaled by the ratio of marginal
standard deviations, ``x_t - alpha_t m = U diag(sqrt((alpha_t^2 l + sigma_t^2) / (alpha_T^2 l + sigma_T^2))) U^T
(x_T - alpha_T m)``. The fitted slope of log(max error) against log(steps) must match the declared order.
"""

import math

import numpy as np
import pytest
import torch

import scoresde as sd

SDES = {"vp": sd.VPSDE(), "vp-cosine": sd.VPSDE(schedule="cosine"), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}
GAUSS = sd.GaussianMixture(torch.tensor([[1.0, -0.5]]), torch.tensor([[[0.5, 0.1], [0.1, 0.2]]]))


def exact_flow(sde, x, t0, t1):
    lam, U = torch.linalg.eigh(GAUSS.covs[0])
    m = GAUSS.means[0]
    a0, s0 = float(sde.alpha(t0)), float(sde.marginal_std(t0))
    a1, s1 = float(sde.alpha(t1)), float(sde.marginal_std(t1))
    r = torch.sqrt((a1**2 * lam + s1**2) / (a0**2 * lam + s0**2))
    return a1 * m + ((x - a0 * m) @ U * r) @ U.T


def fitted_order(sde, method, steps, grid="uniform", t_min=1e-3):
    score = GAUSS.score(sde)
    xT = GAUSS.marginal(sde, sde.T).sample(64, generator=torch.Generator().manual_seed(0))
    exact = exact_flow(sde, xT, sde.T, t_min)
    errs = []
    for n in steps:
        out = sd.sample(score, sde, method=method, steps=n, x_init=xT, grid=grid, t_min=t_min)
        errs.append(float((out.x - exact).abs().max()))
    return -np.polyfit(np.log(steps), np.log(errs), 1)[0], errs


# The slopes measured on these step ranges lie within 0.15 of the declared order (0.94-1.08 for order 1,
# 2.08-2.11 for midpoint, 3.91-4.02 for rk4 on VP); 0.2 leaves room for the pre-asymptotic range only.
@pytest.mark.parametrize("grid", ["uniform", "quadratic", "logsnr"])
@pytest.mark.parametrize(
    "method,steps",
    [
        ("ode-euler", [20, 40, 80, 160]),
        ("ddim", [20, 40, 80, 160]),
        ("ode-midpoint", [20, 40, 80, 160]),
        ("ode-rk4", [10, 20, 40, 80]),
    ],
)
def test_pf_ode_order_vp(method, steps, grid):
    declared = sd.method_info(method)["order"]
    slope, errs = fitted_order(SDES["vp"], method, steps, grid)
    assert errs[-1] < errs[0]
    assert abs(slope - declared) < 0.2, f"{method} on {grid} grid: slope {slope:.3f}, errors {errs}"


@pytest.mark.parametrize("sde_name", ["vp-cosine", "subvp", "ve"])
@pytest.mark.parametrize("method,steps", [("ddim", [40, 80, 160, 320]), ("ode-rk4", [20, 40, 80, 160])])
def test_pf_ode_order_other_sdes(sde_name, method, steps):
    sde = SDES[sde_name]
    # VE: the log-SNR grid keeps the steps proportionate to the exponential noise schedule.
    grid = "logsnr" if sde_name == "ve" else "quadratic"
    declared = sd.method_info(method)["order"]
    slope, errs = fitted_order(sde, method, steps, grid, t_min=sde.t_min)
    assert abs(slope - declared) < 0.25, f"{method} on {sde_name}: slope {slope:.3f}, errors {errs}"


def test_adaptive_ode_meets_tolerance():
    sde = SDES["vp"]
    xT = GAUSS.marginal(sde, sde.T).sample(64, generator=torch.Generator().manual_seed(0))
    exact = exact_flow(sde, xT, sde.T, sde.t_min)
    prev_err, prev_nfe = math.inf, 0
    for tol in (1e-3, 1e-5, 1e-7):
        out = sd.sample(GAUSS.score(sde), sde, method="ode-dopri5", x_init=xT, rtol=tol, atol=tol)
        err = float((out.x - exact).abs().max())
        # Global error of a tolerance-controlled solve is of the order of the tolerance (here within 10x).
        assert err < 10 * tol
        assert err < prev_err and out.nfe > prev_nfe
        prev_err, prev_nfe = err, out.nfe


def test_ddim_eta0_matches_dopri5_pathwise():
    """DDIM (eta = 0) with many steps follows the torchdiffeq solution of the PF-ODE from the same start."""
    sde = SDES["vp"]
    gmm = sd.get_problem("ring")
    score = gmm.score(sde)
    xT = gmm.marginal(sde, sde.T).sample(256, generator=torch.Generator().manual_seed(1))
    ref = sd.sample(score, sde, method="ode-dopri5", x_init=xT, rtol=1e-8, atol=1e-8).x
    errs = [
        float((sd.sample(score, sde, method="ddim", steps=n, x_init=xT).x - ref).abs().max()) for n in (250, 500, 1000)
    ]
    # First order: halving the step halves the error (ratio 2 +- 0.3), and at 1000 steps the path is close.
    assert all(1.7 < errs[i] / errs[i + 1] < 2.3 for i in range(2)), errs
    assert errs[-1] < 1e-2, errs


def _variance_errors(method, steps, n=200_000):
    """Relative error of the sample variance at t_min for 1-D Gaussian data, started from the exact p_T.

    The reverse SDE carries p_T to p_t exactly, so what remains is the weak error of the scheme. The target
    variance is alpha^2 c + sigma^2; with N = 200k samples the Monte Carlo standard error of the relative
    variance is sqrt(2/N) = 3.2e-3.
    """
    sde = SDES["vp"]
    gauss = sd.GaussianMixture(torch.tensor([[0.5]]), torch.tensor([0.05]))
    xT = gauss.marginal(sde, sde.T).sample(n, generator=torch.Generator().manual_seed(2))
    target = float(sde.alpha(sde.t_min) ** 2 * 0.05 + sde.marginal_std(sde.t_min) ** 2)
    errs = []
    for k in steps:
        out = sd.sample(gauss.score(sde), sde, method=method, steps=k, x_init=xT, seed=3, grid="quadratic")
        errs.append(abs(float(out.x.var()) / target - 1))
    return errs


@pytest.mark.parametrize("method", ["sde-euler", "ddpm"])
def test_reverse_sde_weak_order_one(method):
    # Measured: sde-euler 0.16, 0.076, 0.036, 0.015; ddpm 0.34, 0.20, 0.11, 0.056 (ddpm ignores the
    # posterior spread of x0 given x_t, a first-order error with a large constant; Bao et al. 2022).
    # All errors are > 5x the Monte Carlo standard error, so the fitted slope measures the scheme.
    steps = [20, 40, 80, 160]
    errs = _variance_errors(method, steps)
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - 1) < 0.25, (slope, errs)


@pytest.mark.parametrize("method", ["sde-srk", "sde-heun", "sde-midpoint"])
def test_higher_order_sde_methods_beat_euler(method):
    # At 20 steps Euler-Maruyama's variance error is 0.16; these methods measured 0.02-0.03.
    steps = [10, 20, 40]
    errs, euler = _variance_errors(method, steps), _variance_errors("sde-euler", steps)
    assert errs[0] > errs[1] > errs[2] or errs[2] < 4 * math.sqrt(2 / 200_000), errs
    assert all(e < eu / 3 for e, eu in zip(errs[1:], euler[1:], strict=True)), (errs, euler)
