"""Inpainting (replacement and RePaint) against closed-form Gaussian conditionals."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import scoresde as sd
from scoresde.conditioning import inpaint

RHO = 0.9
CORR = sd.GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, RHO], [RHO, 1.0]]]))


def _known(n, value=1.5):
    y = torch.zeros(n, 2, dtype=torch.float64)
    y[:, 0] = value
    return y, torch.tensor([True, False])


def _unknown_on_fixed_path(sde, x2_T, z, value=1.5):
    """The unknown coordinate's PF-ODE when the known one follows ``alpha_t value + sigma_t z``, solved by scipy
    (DOP853, tolerance 1e-12) from ``T`` to ``t_min``: with p_t = N(0, alpha^2 S + sigma^2 I), eps = sigma P x,
    P = (alpha^2 S + sigma^2 I)^-1, so dx2/dt = f x2 + g^2 / 2 (P x)_2."""
    cov = np.array([[1.0, RHO], [RHO, 1.0]])

    def rhs(t, x2):
        c = sde.coefs(t)
        p = np.linalg.inv(c.alpha**2 * cov + c.sigma**2 * np.eye(2))
        return c.f * x2 + 0.5 * c.g2 * (p[1, 0] * (c.alpha * value + c.sigma * z) + p[1, 1] * x2)

    return solve_ivp(rhs, (sde.T, sde.t_min), x2_T, method="DOP853", rtol=1e-12, atol=1e-12).y[:, -1]


@pytest.mark.parametrize(
    "method,order",
    [("dpm++2m", 2), ("unipc", 3), ("edm-heun", 2), ("dpm2s", 2), ("ode-midpoint", 2), ("ode-rk4", 4)],
)
def test_inpainting_keeps_the_order_of_the_method(method, order):
    """With the known entry on one fixed noise path the unknown one solves an ODE; its error must fall at the
    method's order. Measured slopes over 8-64 steps (64 samples, float64): dpm++2m 2.09, unipc 2.94, edm-heun
    2.21, dpm2s 1.90, ode-midpoint 2.17, ode-rk4 3.62; before the stepping loop carried the multistep history
    and the stages saw the known path, every method ran at first order here (ddim's slope: 0.87)."""
    _check_inpainting_order(sd.VPSDE(), method, order)


@pytest.mark.parametrize("method,order", [("dpm++2m", 2), ("unipc", 3), ("ode-rk4", 4)])
def test_inpainting_keeps_the_order_on_the_flow_path(method, order):
    """The same on the rectified-flow path (shift 3): inpainting is a callback on the loop, blind to the path.
    Measured slopes over 8-64 steps: dpm++2m 1.98, unipc 2.62, ode-rk4 4.20."""
    _check_inpainting_order(sd.FlowSDE(shift=3.0), method, order)


def _check_inpainting_order(sde, method, order):
    n, steps = 64, [8, 16, 32, 64]
    y, mask = _known(n)
    kw = {"lower_order_final": False} if method in ("dpm++2m", "unipc") else {}
    errs = []
    for k in steps:
        kw |= dict(known_path="fixed", return_trajectory=True)
        out = inpaint(CORR.score(sde), y, mask, method=method, steps=k, seed=0, **kw)
        start, c_T = out.trajectory[0], sde.coefs(sde.T)  # the known entry at T is alpha_T y + sigma_T z
        z = (start[:, 0] - c_T.alpha * 1.5) / c_T.sigma
        exact = _unknown_on_fixed_path(sde, start[:, 1].numpy(), z.numpy())
        errs.append(math.sqrt(float(np.mean((out.x[:, 1].numpy() - exact) ** 2))))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert slope > order - 0.45, (slope, errs)


def test_known_entries_are_the_data_exactly():
    sde = sd.VPSDE()
    gmm = sd.GaussianMixture(torch.zeros(1, 16), torch.eye(16)[None] * 0.5)
    score = gmm.score(sde)
    # image-shaped data, float32, a checkerboard mask
    y = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(16).reshape(1, 1, 4, 4) % 3 == 0).expand(5, 1, 4, 4)
    model = gmm.eps_model(sde)
    score = sd.EpsilonScore(lambda x, t: model(x.reshape(-1, 16), t).reshape(x.shape).to(x.dtype), sde)
    out = inpaint(score, y, mask, method="ddim", steps=10, seed=3)
    assert out.x.shape == y.shape and out.x.dtype == torch.float32
    assert torch.equal(out.x[mask], y[mask])
    assert not torch.equal(out.x[~mask], y[~mask])
    assert out.nfe == 10


def test_repaint_reduces_the_bias_of_replacement():
    # Unknown x2 given x1 = 1.5 is N(rho * 1.5, 1 - rho^2) = N(1.35, 0.19). Replacement is biased (measured
    # mean 0.92 at 100 DDPM steps, and the bias does not shrink with more steps: 0.95 at 500); RePaint with
    # 5 passes gives 1.26. The standard error of each mean is about 0.01 at n = 2000.
    sde = sd.VPSDE()
    score = CORR.score(sde)
    y, mask = _known(2000)
    plain = inpaint(score, y, mask, method="ddpm", steps=50, seed=0).x[:, 1]
    repaint = inpaint(score, y, mask, method="ddpm", steps=50, resample=5, seed=0).x[:, 1]
    exact = RHO * 1.5
    assert abs(repaint.mean() - exact) < 0.5 * abs(plain.mean() - exact)
    assert abs(repaint.mean() - exact) < 0.15


def test_independent_unknowns_follow_their_marginal():
    # With independent coordinates the known ones carry no information: the unknown one must have the law the
    # same solver gives without conditioning (DDPM at 100 uniform steps has its own variance bias, 0.218
    # for 0.25, so the comparison is with the unconditioned sampler, within sampling error).
    sde = sd.VPSDE()
    gmm = sd.GaussianMixture(torch.zeros(1, 2), torch.diag(torch.tensor([1.0, 0.25]))[None])
    n = 4000
    y, mask = _known(n)
    u = inpaint(gmm.score(sde), y, mask, method="ddpm", steps=100, seed=1).x[:, 1]
    free = sd.sample(gmm.score(sde), sde, (n, 2), method="ddpm", steps=100, seed=2, dtype=torch.float64).x[:, 1]
    se_mean, se_var = (2 * 0.25 / n) ** 0.5, 0.25 * (4 / n) ** 0.5
    assert abs(float(u.mean() - free.mean())) < 4 * se_mean
    assert abs(float(u.var() - free.var())) < 4 * se_var


def test_batch_size_independent_and_reproducible():
    sde = sd.VPSDE()
    score = CORR.score(sde)
    y, mask = _known(6)
    full = inpaint(score, y, mask, method="ddpm", steps=8, resample=2, seed=11).x
    again = inpaint(score, y, mask, method="ddpm", steps=8, resample=2, seed=11).x
    tail = inpaint(score, y[3:], mask, method="ddpm", steps=8, resample=2, seed=11, sample_offset=3).x
    assert torch.equal(full, again)
    assert torch.equal(full[3:], tail)


def test_nfe_counts_passes_and_denoise():
    sde = sd.VPSDE()
    score = CORR.score(sde)
    y, mask = _known(4)
    assert inpaint(score, y, mask, method="ddim", steps=6, resample=3, seed=0).nfe == 18
    assert inpaint(score, y, mask, method="ode-midpoint", steps=6, seed=0, denoise=True).nfe == 13


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mask=torch.ones(3)), "does not broadcast"),
        (dict(mask=torch.tensor([0.5, 1.0])), "only 0 and 1"),
        (dict(method="ode-dopri5"), "adaptive"),
        (dict(resample=0), "resample"),
        (dict(method="nope"), "unknown method"),
    ],
)
def test_bad_input(kwargs, match):
    score = CORR.score(sd.VPSDE())
    y, mask = _known(4)
    args = dict(mask=mask, steps=4, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        inpaint(score, y, **args)


def test_nan_data_rejected():
    score = CORR.score(sd.VPSDE())
    y, mask = _known(4)
    y[0, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        inpaint(score, y, mask, steps=4, seed=0)
