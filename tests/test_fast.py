"""Exponential integrators (scoresde/solvers/exponential.py, dpm.py, unipc.py): phi functions, fitted orders on
the closed-form Gaussian flow map, exact reductions to DDIM, NFE accounting, reproducibility and the float32
no-NaN sweep."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from test_orders import SDES, _variance_errors, fitted_order

import scoresde as sd
from scoresde.solvers.exponential import phi

ODE_METHODS = ["dpm++2m", "dpm++3m", "dpm2s", "dpm3s", "unipc"]
ALL_METHODS = ODE_METHODS + ["dpm++2m-sde"]
GMM16 = sd.get_problem("gmm16")


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("h", [1e-6, 1e-3, 0.3, 0.999, 1.0, 2.5, 12.0])
def test_phi_is_the_weighted_integral(k, h):
    """g_k(h) = h^-k int_0^h e^{-(h-u)} u^k / k! du, to double precision on both sides of the series/recursion cut."""
    ref = quad(lambda u: math.exp(-(h - u)) * u**k / math.factorial(k), 0, h, epsabs=0, epsrel=1e-13)[0] / h**k
    assert phi(k, h) == pytest.approx(ref, rel=1e-11, abs=0)


def test_phi_closed_forms():
    h = 0.7
    assert phi(0, h) == pytest.approx(-math.expm1(-h), rel=1e-14)
    assert phi(1, h) == pytest.approx((h + math.expm1(-h)) / h, rel=1e-13)
    assert phi(2, h) == pytest.approx((h * h / 2 - h - math.expm1(-h)) / h**2, rel=1e-12)


# Fitted slopes of log(max error) against log(steps), float64, Gaussian data, t_min = 1e-3 (measured):
#   VP, log-SNR grid: dpm++2m 2.03, dpm2s 1.98, dpm3s 2.90 (40-320 steps; 2.36 on 10-80, pre-asymptotic),
#   unipc 3.00; VP, Karras grid: dpm++3m 3.05 (40-320 steps). On the log-SNR grid dpm++3m converges faster
#   than its order (4.1 on 40-320 steps: the third-order error constant of the equal-step method is small for
#   this problem), so its order is fitted on the Karras grid, where steps are unequal.
ORDER_CASES = [
    ("dpm++2m", [20, 40, 80, 160], "logsnr"),
    ("dpm++3m", [40, 80, 160, 320], "karras"),
    ("dpm2s", [10, 20, 40, 80], "logsnr"),
    ("dpm3s", [40, 80, 160, 320], "logsnr"),
    ("unipc", [20, 40, 80, 160], "logsnr"),
]


@pytest.mark.parametrize("method,steps,grid", ORDER_CASES)
def test_pf_ode_order_vp(method, steps, grid):
    declared = sd.method_info(method)["order"]
    slope, errs = fitted_order(SDES["vp"], method, steps, grid)
    assert errs[-1] < errs[0]
    assert abs(slope - declared) < 0.2, f"{method} on {grid}: slope {slope:.3f}, errors {errs}"


# Measured on the log-SNR grid, VE (t_min = 1e-5): dpm++2m 2.02, dpm2s 1.97, dpm3s 2.86, unipc 2.89 (cosine VP:
# 2.03, 1.99, 2.89, 2.94). dpm++3m converges faster than declared on equal log-SNR steps (VE 4.5, cosine 4.2).
@pytest.mark.parametrize("method,steps,grid", [c for c in ORDER_CASES if c[0] != "dpm++3m"])
def test_pf_ode_order_ve(method, steps, grid):
    sde = SDES["ve"]
    declared = sd.method_info(method)["order"]
    slope, errs = fitted_order(sde, method, steps, grid, t_min=sde.t_min)
    assert abs(slope - declared) < 0.2, f"{method} on VE: slope {slope:.3f}, errors {errs}"


def test_dpmpp3m_at_least_third_order_ve():
    sde = SDES["ve"]
    slope, errs = fitted_order(sde, "dpm++3m", [40, 80, 160, 320], "logsnr", t_min=sde.t_min)
    assert slope > 2.8, (slope, errs)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order,declared", [(1, 2), (2, 3)])
def test_unipc_options_raise_the_order_by_one(order, declared, variant):
    """UniC lifts UniP-p to order p + 1 for both B(h) (Zhao et al. 2023, Thm. 3.1)."""
    score = sd.GaussianMixture(torch.tensor([[1.0, -0.5]]), torch.tensor([[[0.5, 0.1], [0.1, 0.2]]])).score(SDES["vp"])
    import test_orders

    xT = test_orders.GAUSS.marginal(SDES["vp"], 1.0).sample(64, generator=torch.Generator().manual_seed(0))
    exact = test_orders.exact_flow(SDES["vp"], xT, 1.0, 1e-3)
    steps = [20, 40, 80, 160]
    errs = []
    for n in steps:
        out = sd.sample(score, method="unipc", steps=n, x_init=xT, grid="logsnr", order=order, variant=variant)
        errs.append(float((out.x - exact).abs().max()))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - declared) < 0.2, (slope, errs)


def _ring_start(n=32, seed=0):
    sde = SDES["vp"]
    ring = sd.get_problem("ring")
    return ring.score(sde), ring.marginal(sde, sde.T).sample(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["dpm++2m", "dpm++3m", "unipc"])
def test_first_step_is_ddim(method):
    """With one step every multistep method is DPM-Solver-1 = DDIM (eta = 0) (Lu et al. 2022b, eq. 9)."""
    score, xT = _ring_start()
    ref = sd.sample(score, method="ddim", steps=1, x_init=xT).x
    out = sd.sample(score, method=method, steps=1, x_init=xT, grid="uniform").x
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_sde_first_step_is_ddim_eta_one():
    """The first-order step of DPM-Solver++ (2M) SDE is DDIM with eta = 1, the same draw from the same stream."""
    score, xT = _ring_start()
    for steps in (1, 2):  # two steps with lower-order final: both first order
        ref = sd.sample(score, method="ddim", steps=steps, x_init=xT, seed=5, eta=1.0).x
        out = sd.sample(score, method="dpm++2m-sde", steps=steps, x_init=xT, seed=5, grid="uniform").x
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_nfe_is_counted_and_matches_the_declared_cost(method, counting):
    model, calls = counting(sd.get_problem("ring").eps_model(SDES["vp"]))
    score = sd.EpsilonScore(model, SDES["vp"])
    for steps in (1, 2, 7):
        calls.clear()
        out = sd.sample(score, shape=(8, 2), method=method, steps=steps, seed=0)
        assert out.nfe == len(calls) == steps * sd.method_info(method)["nfe_per_step"]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_trailing_shapes_and_trajectory(method):
    """Images: a (batch, 2, 2, 4) state gives what the flattened 16-D problem gives, sample for sample."""
    sde = SDES["vp"]
    eps16 = GMM16.eps_model(sde)
    score_img = sd.EpsilonScore(lambda x, t: eps16(x.flatten(1), t).reshape(x.shape), sde)
    img = sd.sample(score_img, shape=(6, 2, 2, 4), method=method, steps=6, seed=3, return_trajectory=True)
    flat = sd.sample(GMM16.score(sde), shape=(6, 16), method=method, steps=6, seed=3)
    torch.testing.assert_close(img.x.flatten(1), flat.x, rtol=1e-5, atol=1e-5)
    assert img.trajectory.shape == (7, 6, 2, 2, 4)
    torch.testing.assert_close(img.trajectory[-1], img.x)
    assert img.times.shape == (7,)


def test_sde_solver_reproducible_and_batch_independent():
    score = GMM16.score(SDES["vp"])
    a = sd.sample(score, shape=(48, 16), method="dpm++2m-sde", steps=10, seed=11).x
    b = sd.sample(score, shape=(48, 16), method="dpm++2m-sde", steps=10, seed=11).x
    c = sd.sample(score, shape=(16, 16), method="dpm++2m-sde", steps=10, seed=11, sample_offset=32).x
    d = sd.sample(score, shape=(48, 16), method="dpm++2m-sde", steps=10, seed=12).x
    assert torch.equal(a, b)
    torch.testing.assert_close(a[32:], c, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(a, d)


def test_options_are_checked():
    score, xT = _ring_start(4)
    with pytest.raises(ValueError, match=r"order must be an int in \[1, 3\]"):
        sd.sample(score, method="unipc", steps=3, x_init=xT, order=4)
    with pytest.raises(ValueError, match="variant"):
        sd.sample(score, method="unipc", steps=3, x_init=xT, variant="bh3")
    with pytest.raises(ValueError, match="lower_order_final"):
        sd.sample(score, method="dpm++2m", steps=3, x_init=xT, lower_order_final="yes")
    with pytest.raises(TypeError, match="unexpected option"):
        sd.sample(score, method="dpm3s", steps=3, x_init=xT, lower_order_final=True)


def _noisy_eps_score(sde):
    """A learned-model stand-in: the exact eps plus a fixed smooth perturbation of relative size ~5%."""
    eps = GMM16.eps_model(sde)
    w = torch.randn(16, 16, generator=torch.Generator().manual_seed(4)) / 4

    def model(x, t):
        return eps(x, t) + 0.05 * torch.sin(x @ w.to(x.dtype) + 3 * t[:, None])

    return sd.EpsilonScore(model, sde)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("noisy", [False, True])
def test_no_nan_in_float32_at_any_budget(method, noisy):
    """Few steps (where Heun-type samplers blow up) and many (where multistep loses precision), float32."""
    sde = SDES["vp"]
    score = _noisy_eps_score(sde) if noisy else GMM16.score(sde)
    for steps in [3, 4, 5, 10, 100]:  # 1000 steps: test_many_steps_keep_float32_precision
        out = sd.sample(score, shape=(64, 16), method=method, steps=steps, seed=0, dtype=torch.float32)
        assert out.x.dtype == torch.float32 and torch.isfinite(out.x).all(), (method, steps)
        # Samples stay in the data's range (means at radius 3, stds <= 0.3): no silent blow-up either.
        # (exact samples have norms below 5; the perturbed model at 3 steps measured up to 6.3.)
        assert float(out.x.norm(dim=1).max()) < 12.0, (method, steps)


@pytest.mark.parametrize("method", ["dpm++3m", "unipc"])
def test_many_steps_keep_float32_precision(method):
    """At 1000 steps the float32 run stays within float32 rounding accumulation of the float64 run."""
    score = GMM16.score(SDES["vp"])
    x64 = sd.sample(score, shape=(64, 16), method=method, steps=1000, seed=1, dtype=torch.float64).x
    x32 = sd.sample(score, shape=(64, 16), method=method, steps=1000, seed=1, dtype=torch.float32).x
    # Measured max deviation: see the assertion message; 1000 steps x ~1e-7 relative rounding, times |x| ~ 3.
    err = float((x32.double() - x64).abs().max())
    assert torch.isfinite(x32).all()
    assert err < 2e-3, err


@pytest.mark.slow
def test_sde_solver_weak_error_of_the_variance():
    """Weak error of the variance at t_min (1-D Gaussian, 200k paths from the exact p_T, quadratic grid).

    Measured relative errors at 10/20/40/80 steps: dpm++2m-sde 0.28, 0.43, 0.092, 0.023 (pre-asymptotic up to 20
    steps: its first-order step is DDPM's, whose constant is large, see test_orders), sde-euler 0.40, 0.16,
    0.079, 0.040. From 20 steps on the error falls by more than the factor 2 of a first-order method per
    halving, and at 80 steps it is below Euler-Maruyama's; the MC standard error is 3.2e-3.
    """
    steps = [20, 40, 80]
    errs = _variance_errors("dpm++2m-sde", steps)
    euler = _variance_errors("sde-euler", steps)
    assert errs[0] / errs[1] > 2 and errs[1] / errs[2] > 2, errs
    assert errs[-1] < euler[-1], (errs, euler)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.FlowSDE()], ids=repr)
@pytest.mark.parametrize("method", ["dpm++2m", "dpm++3m", "unipc"])
def test_a_step_much_longer_than_the_last_is_taken_at_first_order(sde, method):
    """On a uniform grid in t the last log-SNR step is 5-6 times the one before; at 20 and 40 steps (past the
    lower-order-final rule's 15) full order there multiplied the error of the exact flow map by 5-30 (measured,
    max error at 20 steps: VP dpm++2m 0.063 against 0.54, flow unipc 0.012 against 0.11). The default takes such
    a step (ratio > 1 + sqrt(2)) at first order; on equal log-SNR steps nothing changes (the golden records)."""
    from test_orders import GAUSS, exact_flow

    xT = GAUSS.marginal(sde, sde.T).sample(64, generator=torch.Generator().manual_seed(0))
    exact = exact_flow(sde, xT, sde.T, sde.t_min)
    for steps in (20, 40):
        errs = [
            float(
                (
                    sd.sample(GAUSS.score(sde), sde, method=method, steps=steps, grid="uniform", x_init=xT, **kw).x
                    - exact
                )
                .abs()
                .max()
            )
            for kw in ({}, {"lower_order_final": False})
        ]
        assert errs[0] < errs[1] / 4, (steps, errs)
