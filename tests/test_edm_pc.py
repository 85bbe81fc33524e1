"""EDM Heun/churn, predictor-corrector Langevin and the adaptive reverse-SDE solver, against closed forms.

Gaussian data keep every marginal Gaussian (``N(alpha m, alpha^2 c + sigma^2)``), and the probability-flow map
is closed form (``tests/test_orders.py``), so orders and weak errors are measured against exact values.
"""

import math

import numpy as np
import pytest
import torch
from test_orders import SDES, fitted_order

import scoresde as sd
from scoresde.noise import NoiseSource
from scoresde.solvers import Evaluator
from scoresde.solvers.pc import langevin_correct

VP = SDES["vp"]
GAUSS1 = sd.GaussianMixture(torch.tensor([[0.5]]), torch.tensor([0.05]))


# --- EDM Heun: order 2 -------------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name,grid", [("vp", "karras"), ("ve", "logsnr"), ("subvp", "quadratic")])
def test_edm_heun_order_two(sde_name, grid):
    # Measured slopes on 10-40 steps: see docs/math.md (within 0.15 of 2).
    sde = SDES[sde_name]
    slope, errs = fitted_order(sde, "edm-heun", [10, 20, 40], grid, t_min=sde.t_min)
    assert sd.method_info("edm-heun")["order"] == 2
    assert errs[-1] < errs[0]
    assert abs(slope - 2) < 0.25, f"edm-heun on {sde_name}/{grid}: slope {slope:.3f}, errors {errs}"


@pytest.mark.parametrize("last_euler,extra", [(True, -1), (False, 0)])
def test_edm_nfe_is_counted(counting, last_euler, extra):
    model, calls = counting(GAUSS1.eps_model(VP))
    score = sd.EpsilonScore(model, VP)
    for steps in (1, 3, 7):
        calls.clear()
        out = sd.sample(score, VP, (4, 1), method="edm-heun", steps=steps, seed=0, last_euler=last_euler)
        assert out.nfe == len(calls) == max(1, 2 * steps + extra)
        assert min(calls) >= VP.t_min - 1e-12  # never below t_min


def _gmm16_quality(method, steps, **kw):
    gmm = sd.get_problem("gmm16")
    out = sd.sample(gmm.score(VP), VP, (2000, 16), method=method, steps=steps, seed=0, dtype=torch.float32, **kw)
    assert torch.isfinite(out.x).all()
    target = gmm.marginal(VP, VP.t_min)
    x = out.x.double()
    return float(x.std() / target.sample(20000, generator=torch.Generator().manual_seed(1)).std() - 1)


def test_edm_heun_does_not_blow_up_at_few_steps():
    # The corrector adds (sigma_hat / sigma_hat' - 1)/2 (x0(x') - x0(x)): on the last step of a 3-step Karras grid
    # the ratio is 117 and the state explodes unless that step is Euler (EDM Alg. 1; module docstring).
    # Measured relative error of the sample std (3 / 4 / 5 steps): 0.04 / 0.22 / 0.18 with the Euler last step,
    # 2.1 / 1.4 / 0.60 with Heun on the last step too (12.9 at 2 steps).
    for steps in (3, 4, 5):
        assert abs(_gmm16_quality("edm-heun", steps)) < 0.3
    assert _gmm16_quality("edm-heun", 3, last_euler=False) > 1.0


# --- churn and PC: weak convergence to the exact marginal ----------------------------------------------
def _variance_errors(method, steps, n=20_000, **kw):
    """Relative errors of the sample variance and mean at t_min for 1-D Gaussian data started from exact p_T.

    Monte Carlo standard error of the relative variance: sqrt(2 / n) = 0.01 for n = 20k.
    """
    xT = GAUSS1.marginal(VP, VP.T).sample(n, generator=torch.Generator().manual_seed(2))
    a, s = float(VP.alpha(VP.t_min)), float(VP.marginal_std(VP.t_min))
    target_var, target_mean = a**2 * 0.05 + s**2, 0.5 * a
    errs, mean_errs = [], []
    for k in steps:
        out = sd.sample(GAUSS1.score(VP), VP, method=method, steps=k, x_init=xT, seed=3, **kw)
        errs.append(abs(float(out.x.var()) / target_var - 1))
        mean_errs.append(abs(float(out.x.mean()) - target_mean) / math.sqrt(target_var / n))
    return errs, mean_errs


@pytest.mark.slow
def test_churn_weak_order_two():
    # Churn adds exact Gaussian noise (the marginal at the raised level is exact), so only the Heun steps err:
    # measured 0.78, 0.25, 0.065, 0.017 (200k samples, 10-80 steps, slope 1.85); all >> 4.5e-3 but the last.
    steps = [10, 20, 40]
    errs, mean_errs = _variance_errors("edm-churn", steps, S_churn=10.0)  # Karras grid
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - 2) < 0.35, (slope, errs)
    assert max(mean_errs[1:]) < 5, mean_errs  # the mean is within 5 standard errors once the variance is


@pytest.mark.slow
def test_pc_weak_convergence_and_corrector_helps():
    # Measured (200k samples, uniform grid): predictor alone 2.13, 0.79, 0.34, 0.16 at 10-80 steps; with one
    # corrector step per step (snr 0.16) 2.03, 0.68, 0.27, 0.10; with three 1.81, 0.53, 0.16, 0.056.
    steps = [10, 20, 40]
    pc, _ = _variance_errors("pc", steps, grid="uniform")
    pred, _ = _variance_errors("pc", steps, grid="uniform", n_corrector=0)
    assert pc[0] > pc[1] > pc[2] and pred[0] > pred[1] > pred[2], (pc, pred)
    slope = -np.polyfit(np.log(steps), np.log(pc), 1)[0]
    assert 0.8 < slope < 1.8, (slope, pc)
    assert all(c < p for c, p in zip(pc, pred, strict=True)), (pc, pred)


def _gauss8():
    g = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(torch.linspace(0.05, 0.5, 8, dtype=torch.float64)) @ q.T
    return sd.GaussianMixture(torch.linspace(-1, 1, 8, dtype=torch.float64)[None], (cov + cov.T)[None] / 2)


@pytest.mark.slow
def test_langevin_corrector_keeps_and_reaches_the_marginal():
    """At fixed t the corrector leaves p_t invariant (up to its O(e) bias) and pulls a wrong start towards it."""
    gauss, t, n = _gauss8(), 0.3, 10_000
    pt = gauss.marginal(VP, t)
    mean, cov = pt.means[0], pt.covs[0]
    ev = Evaluator(gauss.score(VP), "pc", None)
    x = pt.sample(n, generator=torch.Generator().manual_seed(6))
    noise = NoiseSource(7)
    c = VP.coefs(t)

    def draws(like, n_steps, stream):
        return [lambda j=j: noise.randn(like.shape, stream + j, dtype=like.dtype) for j in range(n_steps)]

    with torch.no_grad():
        kept = langevin_correct(ev, x, c, snr=0.05, draws=draws(x, 20, 1))
        # Start from the right mean and 4x the covariance: the chain must contract it towards cov.
        wide = mean + 2 * (x[:2000] - mean)
        pulled = langevin_correct(ev, wide, c, snr=0.16, draws=draws(wide, 150, 100))
    assert ev.nfe == 170
    # Mean within 5 standard errors per coordinate; covariance within 5 standard errors (sqrt(2/n) relative
    # on the diagonal) plus the unadjusted chain's bias e / (2 v) <= snr^2 = 2.5e-3 (snr 0.05).
    se = (torch.diagonal(cov) / n).sqrt()
    assert ((kept.mean(0) - mean).abs() < 5 * se).all()
    rel = torch.diagonal(torch.cov(kept.T)) / torch.diagonal(cov) - 1
    assert rel.abs().max() < 5 * math.sqrt(2 / n) + 2.5e-3, rel
    # Started at 4x the covariance, 150 steps bring 2000 samples within 15% (bias with snr 0.16: <= 2.6%,
    # sampling error sqrt(2/2000) = 3.2% per coordinate); a corrector that did nothing would leave 300%.
    rel_pulled = torch.diagonal(torch.cov(pulled.T)) / torch.diagonal(cov) - 1
    assert rel_pulled.abs().max() < 0.15, rel_pulled


# --- adaptive reverse SDE ---------------------------------------------------------------------------
@pytest.mark.slow
def test_adaptive_error_falls_with_tolerance_and_lands_on_t_min():
    times = []

    def model(x, t):
        times.append(t.double().clone())
        return GAUSS1.eps_model(VP)(x, t)

    score = sd.EpsilonScore(model, VP)
    n = 20_000
    xT = GAUSS1.marginal(VP, VP.T).sample(n, generator=torch.Generator().manual_seed(2))
    a, s = float(VP.alpha(VP.t_min)), float(VP.marginal_std(VP.t_min))
    target = a**2 * 0.05 + s**2
    errs, nfes = [], []
    for tol in (1.0, 0.3, 0.1):
        times.clear()
        out = sd.sample(score, VP, method="sde-adaptive", x_init=xT, seed=3, rtol=tol, atol=tol)
        assert out.nfe == len(times) and out.nfe % 2 == 0  # two counted calls per attempt
        allt = torch.cat(times)
        assert float(allt.min()) == VP.t_min and float(allt.max()) == VP.T  # lands exactly, never below
        errs.append(abs(float(out.x.var()) / target - 1))
        nfes.append(out.nfe)
    # Measured: NFE 18 / 34 / 58, relative variance error 1.26 / 0.16 / 0.021 (Monte Carlo standard error 0.01).
    assert nfes[0] < nfes[1] < nfes[2], nfes
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.05, errs


def test_adaptive_reproducible():
    score = GAUSS1.score(VP)
    kw = dict(method="sde-adaptive", rtol=0.1, atol=0.1, dtype=torch.float64)
    a = sd.sample(score, VP, (24, 1), seed=11, **kw)
    b = sd.sample(score, VP, (24, 1), seed=11, **kw)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert a.nfe == b.nfe
    assert not torch.allclose(a.x, sd.sample(score, VP, (24, 1), seed=12, **kw).x)


def test_adaptive_step_cap_raises():
    with pytest.raises(RuntimeError, match="max_iters"):
        sd.sample(GAUSS1.score(VP), VP, (8, 1), method="sde-adaptive", seed=0, rtol=1e-4, atol=1e-4, max_iters=5)


# --- robustness and options -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["edm-heun", "edm-churn", "pc"])
@pytest.mark.parametrize("steps", [3, 4, 5, 10, 100])
def test_no_nan_float32(method, steps):
    gmm = sd.get_problem("gmm16")
    out = sd.sample(gmm.score(VP), VP, (16, 16), method=method, steps=steps, seed=1, dtype=torch.float32)
    assert out.x.dtype == torch.float32 and torch.isfinite(out.x).all()
    assert out.x.abs().max() < 20  # the data lie within radius 3 + a few stds


@pytest.mark.slow
@pytest.mark.parametrize("method", ["edm-heun", "pc"])  # edm-churn runs the same Heun steps
def test_no_nan_float32_1000_steps(method):
    gmm = sd.get_problem("gmm16")
    out = sd.sample(gmm.score(VP), VP, (4, 16), method=method, steps=1000, seed=1, dtype=torch.float32)
    assert torch.isfinite(out.x).all() and out.x.abs().max() < 20


def test_adaptive_float32_finite():
    gmm = sd.get_problem("gmm16")
    out = sd.sample(gmm.score(VP), VP, (16, 16), method="sde-adaptive", seed=1, dtype=torch.float32, rtol=0.1, atol=0.1)
    assert torch.isfinite(out.x).all() and out.x.abs().max() < 20


def test_declared_attributes():
    info = {m: sd.method_info(m) for m in ("edm-heun", "edm-churn", "pc", "sde-adaptive")}
    assert info["edm-heun"]["kind"] == "ode" and info["edm-heun"]["nfe_per_step"] == 2
    assert info["edm-churn"]["kind"] == "sde" and info["edm-churn"]["weak_order"] == 2
    assert info["pc"]["kind"] == "sde" and info["pc"]["nfe_per_step"] == 2
    assert info["sde-adaptive"]["adaptive"] and info["sde-adaptive"]["nfe_per_step"] is None
    from scoresde.solvers import get_solver

    assert get_solver("pc").make(n_corrector=3).nfe_per_step == 4


@pytest.mark.parametrize(
    "method,options,match",
    [
        ("edm-heun", {"last_euler": 1}, "last_euler"),
        ("edm-churn", {"S_churn": -1.0}, "S_churn"),
        ("edm-churn", {"S_tmin": 2.0, "S_tmax": 1.0}, "S_tmax"),
        ("edm-churn", {"S_noise": 0.0}, "S_noise"),
        ("pc", {"predictor": "leapfrog"}, "predictor"),
        ("pc", {"n_corrector": -1}, "n_corrector"),
        ("pc", {"snr": 0.0}, "snr"),
        ("sde-adaptive", {"rtol": -1e-3}, "rtol"),
        ("sde-adaptive", {"atol": float("nan")}, "atol"),
        ("sde-adaptive", {"safety": 1.5}, "safety"),
        ("sde-adaptive", {"max_iters": 0}, "max_iters"),
    ],
)
def test_bad_options(method, options, match):
    with pytest.raises(ValueError, match=match):
        sd.sample(GAUSS1.score(VP), VP, (4, 1), method=method, steps=3, seed=0, **options)


def test_churn_with_zero_churn_is_heun():
    gmm = sd.get_problem("gmm16")
    kw = dict(shape=(32, 16), steps=6, seed=4, grid="karras")
    a = sd.sample(gmm.score(VP), VP, method="edm-heun", **kw).x
    b = sd.sample(gmm.score(VP), VP, method="edm-churn", S_churn=0.0, **kw).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)
