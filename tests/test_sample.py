"""sample(): every method, NFE counting, quality at the two-sample floor, reproducibility, errors."""

import math
import re

import pytest
import torch

import scoresde as sd
from scoresde.metrics import mode_conditional_swd
from scoresde.solvers import get_solver

VP = sd.VPSDE()
RING = sd.get_problem("ring")
ALL = sd.available_methods()
FIXED = [m for m in ALL if not sd.method_info(m)["adaptive"]]
ADAPTIVE = [m for m in ALL if sd.method_info(m)["adaptive"]]
STOCHASTIC = [m for m in ALL if sd.method_info(m)["kind"] == "sde"]


def test_registry_lists_the_core_methods():
    for name in [
        "ddpm",
        "ddim",
        "sde-euler",
        "sde-srk",
        "ode-euler",
        "ode-midpoint",
        "ode-rk4",
        "ode-dopri5",
        "ode-bosh3",
    ]:
        assert name in ALL
    for name in ALL:
        info = sd.method_info(name)
        assert info["kind"] in ("ode", "sde") and info["order"] > 0
        assert info["adaptive"] == (info["nfe_per_step"] is None)


# --- NFE ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", FIXED)
def test_nfe_is_counted_and_matches_the_declared_cost(method, counting):
    """The count comes from the model wrapper; it must equal steps x the declared cost (torchsde's shape
    check call is served from cache, so it costs no model call)."""
    model, calls = counting(RING.eps_model(VP))
    score = sd.EpsilonScore(model, VP)
    # EDM's Heun samplers take an Euler last step (Karras et al. 2022, Alg. 1): one call fewer.
    expected = 7 * sd.method_info(method)["nfe_per_step"] - method.startswith("edm-")
    out = sd.sample(score, VP, (16, 2), method=method, steps=7, seed=0)
    assert out.nfe == len(calls) == expected == out.calls
    out = sd.sample(score, VP, (16, 2), method=method, steps=7, seed=0, denoise=True)
    assert out.nfe == expected + 1 == len(calls) - expected


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_nfe_is_counted(method, counting):
    model, calls = counting(RING.eps_model(VP))
    tol = 1e-2 if method == "sde-adaptive" else 1e-4  # strong-order-1 SDE steps: 1e-4 costs thousands of calls
    out = sd.sample(sd.EpsilonScore(model, VP), VP, (16, 2), method=method, seed=0, rtol=tol, atol=tol)
    assert out.nfe == len(calls) > 10
    # The solver lands on t_min and never evaluates the score outside [t_min, T].
    assert min(calls) >= VP.t_min - 1e-15 and max(calls) <= VP.T
    assert out.times[-1] == VP.t_min


# --- quality: the two-sample floor --------------------------------------------------------------------
N = 4000
REF_SEEDS = (0, 1, 2)


def _mode_swd(x, target):
    """Mode-conditional SWD averaged over three fixed sets of reference draws."""
    return sum(mode_conditional_swd(x, target, torch.Generator().manual_seed(s))[0] for s in REF_SEEDS) / len(REF_SEEDS)


@pytest.fixture(scope="module")
def ring_floor():
    """Mean and std of the same statistic between exact draws of p_{t_min} (10 seeds)."""
    target = RING.marginal(VP, VP.t_min)
    vals = torch.tensor(
        [_mode_swd(target.sample(N, generator=torch.Generator().manual_seed(100 + s)), target) for s in range(10)]
    )
    return float(vals.mean()), float(vals.std())


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL)
def test_reaches_the_two_sample_floor(method, ring_floor):
    """With the exact score and many steps every method is indistinguishable from exact samples.

    Measured floor: 0.0247 +- 0.0015 (mode-conditional SWD at N = 4000); "at the floor" means within
    mean + 3 std. A 5-step Euler-Maruyama run (0.75) is the negative control below.
    """
    # First-order methods need more steps to bring their bias under the floor's spread.
    steps = 500 if sd.method_info(method)["order"] <= 1 else 100
    out = sd.sample(RING.score(VP), VP, (N, 2), method=method, steps=steps, seed=0, dtype=torch.float64)
    mean, std = ring_floor
    assert _mode_swd(out.x, RING.marginal(VP, VP.t_min)) < mean + 3 * std


def test_floor_test_detects_a_bad_sampler(ring_floor):
    out = sd.sample(RING.score(VP), VP, (N, 2), method="sde-euler", steps=5, seed=0, dtype=torch.float64)
    mean, std = ring_floor
    assert _mode_swd(out.x, RING.marginal(VP, VP.t_min)) > mean + 10 * std


@pytest.mark.parametrize(
    "sde", [sd.SubVPSDE(), sd.VESDE(sigma_min=0.01, sigma_max=20.0), sd.VPSDE(schedule="cosine")], ids=repr
)
@pytest.mark.parametrize("method", ["ddim", "ode-rk4", "sde-euler"])
def test_other_sdes_reach_the_floor(sde, method, ring_floor):
    """Same floor statistic (the floor of p_{t_min} hardly depends on the SDE at this t_min: measured by
    the same procedure for each SDE below)."""
    target = RING.marginal(sde, sde.t_min)
    vals = torch.tensor(
        [_mode_swd(target.sample(N, generator=torch.Generator().manual_seed(100 + s)), target) for s in range(6)]
    )
    # First-order methods need more steps: DDIM on this grid measured 0.030 / 0.027 / 0.026 at 100 / 200 / 400
    # steps against a converged 0.0257 (rk4 and dopri5) and a floor of 0.0247 +- 0.0015.
    steps = 500 if sd.method_info(method)["order"] <= 1 else 100
    out = sd.sample(
        RING.score(sde), sde, (N, 2), method=method, steps=steps, seed=0, grid="logsnr", dtype=torch.float64
    )
    assert _mode_swd(out.x, target) < float(vals.mean() + 3 * vals.std())


# --- DDPM and DDIM -----------------------------------------------------------------------------------
def test_ddim_eta1_is_ddpm():
    """DDIM(eta=1) draws from DDPM's posterior q(x_s | x_t, x0): with the same noise the paths coincide."""
    kw = dict(shape=(512, 2), steps=30, seed=5, dtype=torch.float64)
    a = sd.sample(RING.score(VP), VP, method="ddpm", **kw).x
    b = sd.sample(RING.score(VP), VP, method="ddim", eta=1.0, **kw).x
    assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_ddim_eta1_and_ddpm_agree_in_distribution(ring_floor):
    """Independent noise: both are at the same distance from p_{t_min} (within the floor spread)."""
    kw = dict(shape=(N, 2), steps=200, dtype=torch.float64)
    a = sd.sample(RING.score(VP), VP, method="ddpm", seed=1, **kw).x
    b = sd.sample(RING.score(VP), VP, method="ddim", eta=1.0, seed=2, **kw).x
    target = RING.marginal(VP, VP.t_min)
    _, std = ring_floor
    assert abs(_mode_swd(a, target) - _mode_swd(b, target)) < 3 * math.sqrt(2) * std


def test_ddim_eta_interpolates_the_noise():
    kw = dict(shape=(64, 2), steps=10, dtype=torch.float64)
    det = [sd.sample(RING.score(VP), VP, method="ddim", eta=0.0, seed=s, **kw).x for s in (0, 1)]
    sto = [sd.sample(RING.score(VP), VP, method="ddim", eta=0.5, seed=s, **kw).x for s in (0, 1)]
    # Same prior draw (seed) and eta = 0: deterministic; eta > 0 adds noise that changes the result.
    assert torch.equal(det[0], sd.sample(RING.score(VP), VP, method="ddim", seed=0, **kw).x)
    assert not torch.allclose(det[0], sto[0])
    with pytest.raises(ValueError, match="eta"):
        sd.sample(RING.score(VP), VP, (4, 2), method="ddim", eta=-1.0)


# --- reproducibility ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", FIXED)
def test_same_seed_same_samples_and_batch_size_independence(method):
    kw = dict(method=method, steps=6, dtype=torch.float64)
    big = sd.sample(RING.score(VP), VP, (25, 2), seed=11, **kw).x
    again = sd.sample(RING.score(VP), VP, (25, 2), seed=11, **kw).x
    small = sd.sample(RING.score(VP), VP, (10, 2), seed=11, **kw).x
    shard = sd.sample(RING.score(VP), VP, (7, 2), seed=11, sample_offset=10, **kw).x
    assert torch.equal(big, again)
    assert torch.allclose(small, big[:10], rtol=0, atol=1e-12)
    assert torch.allclose(shard, big[10:17], rtol=0, atol=1e-12)
    other = sd.sample(RING.score(VP), VP, (25, 2), seed=12, **kw).x
    assert not torch.allclose(other, big)


@pytest.mark.parametrize("method", ALL)
def test_sampling_with_a_seed_leaves_the_global_rng_alone(method):
    kw = {"rtol": 1e-3, "atol": 1e-3} if method in ADAPTIVE else {"steps": 3}
    state = torch.random.get_rng_state()
    sd.sample(RING.score(VP), VP, (8, 2), method=method, seed=0, **kw)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_generator_reproducibility():
    kw = dict(method="sde-euler", steps=5)
    a = sd.sample(RING.score(VP), VP, (8, 2), generator=torch.Generator().manual_seed(3), **kw).x
    b = sd.sample(RING.score(VP), VP, (8, 2), generator=torch.Generator().manual_seed(3), **kw).x
    assert torch.equal(a, b)


def test_adaptive_results_depend_on_batch_only_within_tolerance():
    """Adaptive step control uses a norm over the batch, so a sample's path depends on its companions
    only within the error tolerance."""
    kw = dict(method="ode-dopri5", rtol=1e-6, atol=1e-6, dtype=torch.float64)
    big = sd.sample(RING.score(VP), VP, (40, 2), seed=4, **kw).x
    small = sd.sample(RING.score(VP), VP, (5, 2), seed=4, **kw).x
    assert torch.allclose(small, big[:5], atol=1e-4)


# --- other paths -------------------------------------------------------------------------------------
def test_trajectory_and_times():
    out = sd.sample(
        RING.score(VP), VP, (8, 2), method="ode-midpoint", steps=5, grid="quadratic", seed=0, return_trajectory=True
    )
    assert out.trajectory.shape == (6, 8, 2)
    assert torch.equal(out.trajectory[-1], out.x)
    assert torch.allclose(out.times, sd.time_grid(VP, 5, "quadratic"))
    for method in ("sde-srk", "ddpm"):
        out = sd.sample(RING.score(VP), VP, (8, 2), method=method, steps=5, seed=0, return_trajectory=True)
        assert out.trajectory.shape == (6, 8, 2) and torch.equal(out.trajectory[-1], out.x)


def test_image_shaped_states():
    """Any trailing shape works (torchsde's 2-D contract is met inside the adapter)."""
    model = lambda x, t: 0.1 * x  # noqa: E731
    for method in ("sde-srk", "ode-rk4", "ddpm"):
        out = sd.sample(sd.EpsilonScore(model, VP), VP, (3, 1, 4, 5), method=method, steps=3, seed=0)
        assert out.x.shape == (3, 1, 4, 5) and torch.isfinite(out.x).all()


@pytest.mark.parametrize("cls", [sd.DataScore, sd.VScore, sd.DenoiserScore])
def test_sampling_is_invariant_to_the_parameterisation(cls):
    """The same exact score expressed as x0, v or EDM denoiser gives the same DDIM samples."""
    exact = RING.score(VP)
    conv = {
        sd.DataScore: lambda x, t: exact.x0(x, t),
        sd.VScore: lambda x, t: _v(exact, x, t),
        sd.DenoiserScore: lambda xh, sh: exact.x0(xh * _alpha_from_sigma_hat(sh)[:, None], _t_from_sigma_hat(sh)),
    }[cls]
    kw = dict(shape=(32, 2), method="ddim", steps=8, seed=0, dtype=torch.float64)
    a = sd.sample(exact, VP, **kw).x
    b = sd.sample(cls(conv, VP), VP, **kw).x
    assert torch.allclose(a, b, atol=1e-8)


def _v(score, x, t):
    eps, x0 = score.eps_and_x0(x, t)
    a, s = VP.alpha(t)[:, None].to(x.dtype), VP.marginal_std(t)[:, None].to(x.dtype)
    return a * eps - s * x0


def _t_from_sigma_hat(sigma_hat):
    return VP.t_from_log_snr(-2 * sigma_hat.double().log()).to(sigma_hat.dtype)


def _alpha_from_sigma_hat(sigma_hat):
    return VP.alpha(_t_from_sigma_hat(sigma_hat)).to(sigma_hat.dtype)


def test_denoise_step_is_tweedie():
    kw = dict(shape=(16, 2), method="ddim", steps=5, seed=0, dtype=torch.float64)
    plain = sd.sample(RING.score(VP), VP, **kw).x
    den = sd.sample(RING.score(VP), VP, denoise=True, **kw).x
    assert torch.allclose(den, RING.score(VP).x0(plain, VP.t_min))


def test_float32_default_dtype_is_finite_for_every_method():
    for method in ALL:
        out = sd.sample(RING.score(VP), VP, (64, 2), method=method, steps=10, seed=0)
        assert out.x.dtype == torch.float32 and torch.isfinite(out.x).all(), method


# --- errors -------------------------------------------------------------------------------------------
def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="available methods: .*ddim"):
        sd.sample(RING.score(VP), VP, (4, 2), method="dpm-magic")


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(TypeError, match="accepted: eta"):
        sd.sample(RING.score(VP), VP, (4, 2), method="ddim", temperature=2.0)
    with pytest.raises(TypeError, match="accepted: none"):
        sd.sample(RING.score(VP), VP, (4, 2), method="ddpm", eta=1.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(shape=(4,)), "shape"),
        (dict(shape=(0, 2)), "shape"),
        (dict(shape=(4, 2), steps=0), "steps"),
        (dict(shape=(4, 2), t_min=0.0), "t_min"),
        (dict(shape=(4, 2), t_min=2.0), "t_min"),
        (dict(shape=(4, 2), T=1.5), "T"),
        (dict(shape=(4, 2), grid="cubic"), "known grids"),
        (dict(shape=(4, 2), grid=torch.tensor([0.5, 0.7, 0.1])), "strictly decreasing"),
        (dict(shape=(4, 2), grid=torch.tensor([1.0, 0.5, 0.0])), r"\(0, T"),
        (dict(shape=(4, 2), seed=1, generator=torch.Generator()), "either"),
        (dict(shape=(4, 3), x_init=torch.zeros(4, 2)), "x_init"),
        (dict(x_init=torch.full((4, 2), math.nan)), "non-finite"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sd.sample(RING.score(VP), VP, **kwargs)


def test_wrong_data_shape_for_the_model_is_reported():
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        sd.sample(RING.score(VP), VP, (4, 3), method="ddim", steps=2)


def test_mismatched_sde_is_refused():
    with pytest.raises(ValueError, match="built for"):
        sd.sample(RING.score(VP), sd.VPSDE(beta_max=10.0), (4, 2))
    with pytest.raises(TypeError, match="Score"):
        sd.sample(lambda x, t: x, VP, (4, 2))


def _nan_after(t_bad):
    exact = RING.eps_model(VP)

    def model(x, t):
        out = exact(x, t)
        return out * math.nan if float(t[0]) < t_bad else out

    return sd.EpsilonScore(model, VP)


@pytest.mark.parametrize("method", ALL)
def test_nan_score_names_the_step_and_time(method):
    """The score turns NaN below t = 0.5: the error names the method, the step (fixed grids) and the time."""
    kw = {"rtol": 1e-3, "atol": 1e-3} if method in ADAPTIVE else {"steps": 10}
    with pytest.raises(sd.NonFiniteError, match=re.escape(method)) as info:
        sd.sample(_nan_after(0.5), VP, (8, 2), method=method, seed=0, **kw)
    msg = str(info.value)
    t = float(msg.split("t = ")[1].split(",")[0])
    assert t < 0.5, msg
    if method in FIXED:
        # The reported step contains t, and it is the first step whose evaluations reach below 0.5: the step
        # that crosses 0.5 (for methods with interior stages) or the next (one evaluation at its start), on the
        # method's own default grid (uniform: steps 6 or 7 of 10).
        step = int(msg.split("step ")[1].split(" of 10")[0])
        grid = sd.time_grid(VP, 10, getattr(get_solver(method), "default_grid", "uniform"))
        assert grid[step] - 1e-5 <= t <= grid[step - 1] + 1e-5, msg  # t is printed to 6 digits
        crossing = next(k for k in range(1, 11) if grid[k] < 0.5)
        assert step in (crossing, crossing + 1), msg
    else:
        assert "step" not in msg, msg
