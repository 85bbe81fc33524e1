"""Time grids (scoresde/grids.py): end points, strict monotonicity, closed forms, and the optimized grid."""

import math
import sys
from pathlib import Path

import pytest
import torch
from test_orders import GAUSS, exact_flow

import scoresde as sd
from scoresde.grids import GRIDS, optimized_grid, time_grid, unit_steps

SDES = {"vp": sd.VPSDE(), "vp-cosine": sd.VPSDE(schedule="cosine"), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("steps", [1, 2, 10, 1000])
def test_grids_decrease_strictly_between_exact_end_points(sde_name, kind, steps):
    sde = SDES[sde_name]
    g = time_grid(sde, steps, kind)
    assert g.dtype == torch.float64 and g.shape == (steps + 1,)
    assert float(g[0]) == sde.T and float(g[-1]) == sde.t_min
    assert (g[1:] < g[:-1]).all()
    # The model sees t in float32: no two steps may collapse to the same float32 time (diffusers' linspace
    # grid repeats a timestep at 1000 steps).
    g32 = g.float()
    assert (g32[1:] < g32[:-1]).all(), f"{kind} grid repeats a float32 time at {steps} steps"


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("rho", [1.0, 3.0, 7.0])
def test_karras_grid_matches_its_closed_form(sde_name, rho):
    """sigma_hat_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho with sigma_hat = sigma / alpha."""
    sde, n = SDES[sde_name], 12
    g = time_grid(sde, n, "karras", rho=rho)
    sig = lambda t: float(sde.marginal_std(t) / sde.alpha(t))  # noqa: E731
    s_max, s_min = sig(sde.T), sig(sde.t_min)
    for i in range(n + 1):
        want = (s_max ** (1 / rho) + i / n * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        assert sig(float(g[i])) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_logsnr_grid_has_equal_steps_in_log_snr(sde_name):
    sde = SDES[sde_name]
    lam = sde.log_snr(time_grid(sde, 20, "logsnr"))
    d = lam[1:] - lam[:-1]
    torch.testing.assert_close(d, torch.full_like(d, float(d.mean())), rtol=1e-8, atol=0)


def test_grid_names_and_options_are_checked():
    sde = SDES["vp"]
    with pytest.raises(ValueError, match="needs the score"):
        time_grid(sde, 10, "optimized")
    with pytest.raises(ValueError, match="unknown grid"):
        time_grid(sde, 10, "cosine")
    with pytest.raises(ValueError, match="rho"):
        time_grid(sde, 10, "karras", rho=0.0)
    score = GAUSS.score(sde)
    with pytest.raises(ValueError, match="order"):
        optimized_grid(score, 10, (2,), order=4)
    with pytest.raises(ValueError, match="mix"):
        optimized_grid(score, 10, (2,), mix=-1.0)


def test_optimized_grid_is_deterministic_uncached_and_valid(counting):
    sde = SDES["vp"]
    model, calls = counting(sd.get_problem("ring").eps_model(sde))
    score = sd.EpsilonScore(model, sde)
    fitted = sd.fit_grid(score, 10, (2,), order=2, n_pilot=64, pilot_steps=32)
    assert len(calls) == fitted.fit_nfe == 33  # the documented pilot cost: pilot_steps + 1 calls
    g = fitted.grid
    assert fitted.steps == 10 and fitted.order == 2 and fitted.options["n_pilot"] == 64
    assert float(g[0]) == sde.T and float(g[-1]) == sde.t_min and (g[1:] < g[:-1]).all()
    again = optimized_grid(score, 10, (2,), order=2, n_pilot=64, pilot_steps=32)
    assert len(calls) == 66 and torch.equal(g, again)  # no hidden cache: the caller keeps the FittedGrid
    fresh = sd.get_problem("ring").score(sde)
    assert torch.equal(optimized_grid(fresh, 10, (2,), order=2, n_pilot=64, pilot_steps=32), g)
    g1000 = optimized_grid(fresh, 1000, (2,), order=2, n_pilot=64, pilot_steps=32)
    assert (g1000.float()[1:] < g1000.float()[:-1]).all()


def test_sample_with_optimized_grid_counts_only_its_own_calls(counting):
    sde = SDES["vp"]
    model, calls = counting(sd.get_problem("ring").eps_model(sde))
    score = sd.EpsilonScore(model, sde)
    out = sd.sample(score, shape=(16, 2), method="unipc", steps=8, seed=0, grid="optimized")
    # the pilot (64 steps + 1) is calibration, not sampling: reported apart, in fit_nfe
    assert out.nfe == 8 and out.fit_nfe == 65 and len(calls) == 8 + 65
    fitted = sd.fit_grid(score, 8, (2,), order=3, dtype=torch.get_default_dtype())
    torch.testing.assert_close(out.times, fitted.grid, rtol=0, atol=0)
    reuse = sd.sample(score, shape=(16, 2), method="unipc", seed=0, grid=fitted)  # paid for once, when fitted
    assert reuse.nfe == 8 and reuse.fit_nfe == 0 and torch.equal(reuse.x, out.x)
    with pytest.raises(ValueError, match="fitted for"):
        sd.sample(sd.get_problem("ring").score(sd.VESDE()), shape=(4, 2), method="unipc", grid=fitted)


def test_optimized_grid_concentrates_steps_where_the_error_density_is():
    """For Gaussian data N(m, C) along the flow, x0(lambda) - m = U diag(l / sqrt(l + e^{-2 lambda})) c (per
    eigen-direction, c fixed by the start), so |x0''| e^lambda peaks near e^{-2 lambda} ~ l and vanishes at
    both ends: the optimized grid's largest step in lambda must lie at the noisy end, and it must beat the
    equal-log-SNR grid on the exact flow map (dpm++2m, 10 steps, float64)."""
    sde = SDES["vp"]
    score = GAUSS.score(sde)
    g = optimized_grid(score, 10, (2,), order=2)
    lam = 0.5 * sde.log_snr(g)
    steps = lam[1:] - lam[:-1]
    assert int(steps.argmax()) == 0
    xT = GAUSS.marginal(sde, sde.T).sample(256, generator=torch.Generator().manual_seed(3))
    exact = exact_flow(sde, xT, sde.T, sde.t_min)
    err = {}
    for name, grid in (("optimized", g), ("logsnr", time_grid(sde, 10, "logsnr"))):
        out = sd.sample(score, method="dpm++2m", x_init=xT, grid=grid, lower_order_final=False)
        err[name] = float((out.x - exact).pow(2).sum(1).mean().sqrt())
    assert err["optimized"] < err["logsnr"], err


# The default grids chosen on families of mixtures and judged on held-out members (benchmarks/default_grids.py, the
# family table of docs/guides/solvers.md): the quadratic grid kept the ODE multistep methods at or below plain Euler
# where the log-SNR grid lost to it; the stochastic dpm++2m-sde keeps log-SNR (better at the 20+ NFE where an SDE
# sampler is used); the rest were not part of that measurement.
CHOSEN_DEFAULT_GRIDS = {
    "unipc": "quadratic",
    "dpm++2m": "quadratic",
    "dpm++3m": "quadratic",
    "dpm++2m-sde": "logsnr",
    "dpm2s": "logsnr",
    "dpm3s": "logsnr",
    "edm-heun": "karras",
    "edm-churn": "karras",
    "ddim": "uniform",
    "ode-euler": "uniform",
}


def test_default_grids_are_the_measured_choice():
    """A change of a default grid is a change of what users get without asking: it must come with a new measurement
    (benchmarks/default_grids.py) and this table, and the golden cases stay on the grid they were recorded with."""
    sys.path.insert(0, str(Path(__file__).parent / "golden"))
    from make_golden import RECORDED_GRIDS, cases

    for method, grid in CHOSEN_DEFAULT_GRIDS.items():
        assert sd.solvers.get_solver(method).default_grid == grid, method
    for name, case in cases().items():
        if case["method"] in RECORDED_GRIDS:
            assert "grid" in case, name


def test_solver_default_grid_is_used():
    """grid=None takes the method's declared default: "uniform" for the core solvers, "quadratic" for the ODE
    multistep ones."""
    sde = SDES["vp"]
    score = GAUSS.score(sde)
    for method, kind in (
        ("ddim", "uniform"),
        ("dpm++2m", "quadratic"),
        ("unipc", "quadratic"),
        ("dpm++2m-sde", "logsnr"),
    ):
        out = sd.sample(score, shape=(4, 2), method=method, steps=5, seed=0)
        torch.testing.assert_close(out.times, time_grid(sde, 5, kind), rtol=0, atol=0)
    assert math.isfinite(float(out.x.sum()))


def test_unit_steps_are_correctly_rounded():
    """Every grid starts from i / steps, each the float64 nearest to the fraction (as Python's division gives it),
    so grids agree to the last bit on every CPU; torch.linspace's vectorised kernel does not promise that (the golden
    test of a 10-point grid failed by one ulp on an AVX2 machine against files written with AVX-512)."""
    for steps in range(1, 300):
        assert unit_steps(steps).tolist() == [i / steps for i in range(steps + 1)], steps
    assert time_grid(sd.VPSDE(), 9, "uniform").tolist() == [
        1.0 + (1e-3 - 1.0) * (i / 9) if 0 < i < 9 else (1.0 if i == 0 else 1e-3) for i in range(10)
    ]
