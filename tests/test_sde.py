"""Forward SDEs: closed-form marginals against a Monte Carlo of the SDE itself, consistency identities,
the discrete-time view, transition kernels, perturbation, input validation and the prior.

Everything runs in float64. Statistical tolerances are a number of Monte Carlo standard errors (the
draws are seeded, so each test is deterministic; the z-values only say how unlikely a failure of a
correct implementation would be for an arbitrary seed).
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as sd

F64 = torch.float64

SDES = {
    "vp-linear": sd.VPSDE(),
    "vp-cosine": sd.VPSDE(schedule="cosine"),
    "subvp-linear": sd.SubVPSDE(),
    "subvp-cosine": sd.SubVPSDE(schedule="cosine"),
    "ve": sd.VESDE(),
}
VP_LIKE = ["vp-linear", "vp-cosine"]
SUBVP = ["subvp-linear", "subvp-cosine"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Closed-form marginals against Euler–Maruyama Monte Carlo of dx = f(t) x dt + g(t) dW
# --------------------------------------------------------------------------------------------------
def _em_expected_moments(sde, x0, ts):
    """Exact mean and variance of the Euler–Maruyama chain x_{k+1} = (1 + f_k dt) x_k + g_k sqrt(dt) z_k.

    The chain is linear with Gaussian increments, so its moments follow the deterministic recursions
    m_{k+1} = a_k m_k, v_{k+1} = a_k^2 v_k + g_k^2 dt with a_k = 1 + f_k dt. Their difference from the
    closed form is exactly the O(dt) discretisation bias of the scheme (left-point rule for the integrals
    of f and g^2, plus log(1 + f dt) != f dt), which we add to the statistical tolerance below.
    Returns moments at every grid point.
    """
    dt = ts[1:] - ts[:-1]
    a = 1 + sde.drift_coef(ts[:-1]) * dt
    g2dt = sde.diffusion(ts[:-1]) ** 2 * dt
    m = [torch.tensor(x0, dtype=F64)]
    v = [torch.tensor(0.0, dtype=F64)]
    for k in range(len(dt)):
        m.append(a[k] * m[-1])
        v.append(a[k] ** 2 * v[-1] + g2dt[k])
    return torch.stack(m), torch.stack(v)


@pytest.mark.parametrize("name", ["vp-linear", "vp-cosine", "subvp-linear", "ve"])
def test_marginal_matches_euler_maruyama_monte_carlo(name):
    sde = SDES[name]
    n_paths, n_steps, x0 = 20_000, 2000, 1.5
    # End before the cosine schedule's singular end (beta(T) ~ 370 would make |f| dt ~ 0.1 at the last step).
    t_end = 0.9 if name == "vp-cosine" else sde.T
    ts = torch.linspace(0, t_end, n_steps + 1, dtype=F64)
    check_steps = (600, n_steps)  # t = 0.3 t_end and t_end: grid points, so no interpolation

    g = gen(1234)
    x = torch.full((n_paths,), x0, dtype=F64)
    f = sde.drift_coef(ts[:-1])
    gdw = sde.diffusion(ts[:-1]) * (ts[1:] - ts[:-1]).sqrt()
    snapshots = {}
    for k in range(n_steps):
        x = x + f[k] * x * (ts[k + 1] - ts[k]) + gdw[k] * torch.randn(n_paths, generator=g, dtype=F64)
        if k + 1 in check_steps:
            snapshots[k + 1] = x.clone()

    m_em, v_em = _em_expected_moments(sde, x0, ts)
    z = 5.0  # 5 standard errors: a two-sided Gaussian tail of 6e-7 per check
    for k, xs in snapshots.items():
        t = ts[k]
        mean_exact = float(sde.alpha(t)) * x0
        var_exact = float(sde.marginal_std(t)) ** 2
        bias_mean = abs(float(m_em[k]) - mean_exact)
        bias_var = abs(float(v_em[k]) - var_exact)
        # The EM chain with a deterministic start is exactly Gaussian, so
        #   SE(sample mean) = sd / sqrt(N),  SE(unbiased sample variance) = var * sqrt(2 / (N - 1)).
        se_mean = math.sqrt(float(v_em[k]) / n_paths)
        se_var = float(v_em[k]) * math.sqrt(2 / (n_paths - 1))
        assert abs(float(xs.mean()) - mean_exact) <= z * se_mean + bias_mean, (name, float(t))
        assert abs(float(xs.var()) - var_exact) <= z * se_var + bias_var, (name, float(t))
        # The discretisation bias must stay a small correction (else the test above would be vacuous):
        # it is O(dt) = O(5e-4) times the scale of f, g^2 integrated over [0, t].
        assert bias_var <= 0.03 * var_exact, (name, float(t), bias_var, var_exact)
        assert bias_mean <= 0.03 * abs(x0), (name, float(t), bias_mean)


# --------------------------------------------------------------------------------------------------
# Consistency identities
# --------------------------------------------------------------------------------------------------
def _interior_times(sde, n=400):
    # Avoid t = 0 exactly: sigma = sqrt(...) has an infinite derivative there.
    return torch.linspace(1e-4, sde.T, n, dtype=F64)


@pytest.mark.parametrize("name", list(SDES))
def test_variance_ode_and_log_alpha_derivative(name):
    """d sigma^2/dt = 2 f sigma^2 + g^2 and d log alpha/dt = f, with alpha -> 1, sigma -> 0 as t -> 0.

    The two ODEs plus the initial conditions determine alpha and sigma, so this pins the closed forms
    against drift_coef and diffusion. Autograd in float64 differentiates the same formulas exactly up to
    rounding; 1e-9 relative leaves a wide margin over the ~1e-13 rounding of these few operations.
    """
    sde = SDES[name]
    t = _interior_times(sde).requires_grad_(True)
    var = sde.marginal_std(t) ** 2
    (dvar,) = torch.autograd.grad(var.sum(), t)
    dlog_alpha = _derivative(sde.log_alpha, t)
    t = t.detach()
    f, g = sde.drift_coef(t), sde.diffusion(t)
    rhs = 2 * f * var.detach() + g**2
    torch.testing.assert_close(dvar, rhs, rtol=1e-9, atol=0)
    torch.testing.assert_close(dlog_alpha, f, rtol=1e-9, atol=1e-12)


def _derivative(fn, t):
    """d fn / dt elementwise by autograd; a function that returns a constant (VE's log alpha) has derivative 0."""
    y = fn(t)
    if not y.requires_grad:
        return torch.zeros_like(t)
    return torch.autograd.grad(y.sum(), t)[0]


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_at_time_zero(name):
    """At t = 0 the kernel is the identity: alpha = 1, sigma = 0, x_0 = x0."""
    sde = SDES[name]
    assert float(sde.marginal_std(0.0)) == 0.0
    assert float(sde.log_alpha(0.0)) == 0.0
    a, s = sde.transition(0.0, 0.5 * sde.T)
    assert float(a) == pytest.approx(float(sde.alpha(0.5 * sde.T)), rel=1e-14)
    assert float(s) == pytest.approx(float(sde.marginal_std(0.5 * sde.T)), rel=1e-14)
    x0 = torch.randn(4, 2, generator=gen(0), dtype=F64)
    xt, _ = sde.perturb(x0, 0.0, generator=gen(1))
    assert torch.equal(xt, x0)


@pytest.mark.parametrize("name", list(SDES))
def test_float32_marginal_std_accuracy(name):
    """sigma(t) evaluated in float32 matches float64 at the same (float32) t to a few float32 roundings.

    Each formula is a handful of operations whose rounding errors are amplified at most by the condition
    of exp/expm1 in the exponent (2 log(r) t ~ 17 for VE at t = 1), so 32 u = 2e-6 (u = 6e-8) bounds the
    error; the linear schedules achieve ~5e-8, VE ~5e-7.
    """
    sde = SDES[name]
    t = torch.tensor([1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 0.9, 0.99], dtype=F64) * sde.T
    t32 = t.float()
    rel = sde.marginal_std(t32).double() / sde.marginal_std(t32.double()) - 1
    assert float(rel.abs().max()) <= 2e-6


@pytest.mark.parametrize("name", list(SDES))
def test_small_time_limit(name):
    """alpha -> 1 and sigma -> 0 as t -> 0, accurately (brackets 1e-11 wide at t = 1e-12; 1e-9 for rounding).

    VP, VE: with f <= 0 and g^2 increasing near 0, t g(0)^2 (1 - 2 |f(0)| t) <= sigma_t^2 <= t g(t)^2 since
    sigma_t^2 = int_0^t (2 f sigma^2 + g^2). subVP: sigma = 1 - alpha_bar = 1 - exp(-B), B = int_0^t beta in
    [beta(0) t, beta(t) t], and B (1 - B/2) <= 1 - exp(-B) <= B. All: 0 <= 1 - alpha_t <= t |f(t)|.
    """
    sde = SDES[name]
    h, tol = 1e-12, 1e-9
    sig = float(sde.marginal_std(h))
    if isinstance(sde, sd.SubVPSDE):
        b0, bt = float(sde.beta(0.0)) * h, float(sde.beta(h)) * h
        assert b0 * (1 - bt / 2) * (1 - tol) <= sig <= bt * (1 + tol)
    else:
        f0 = abs(float(sde.drift_coef(0.0)))
        g0sq, gtsq = float(sde.diffusion(0.0)) ** 2, float(sde.diffusion(h)) ** 2
        assert h * g0sq * (1 - 2 * f0 * h) * (1 - tol) <= sig**2 <= h * gtsq * (1 + tol)
    assert 0 <= 1 - float(sde.alpha(h)) <= h * abs(float(sde.drift_coef(h))) * (1 + tol) + 1e-16


@pytest.mark.parametrize("name", VP_LIKE + SUBVP)
def test_beta_is_minus_twice_dlogalpha(name):
    sde = SDES[name]
    t = _interior_times(sde).requires_grad_(True)
    dla = _derivative(sde.log_alpha, t)
    torch.testing.assert_close(sde.beta(t.detach()), -2 * dla, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", list(SDES))
def test_alpha_bar_is_alpha_squared_and_log_snr_definition(name):
    sde = SDES[name]
    t = _interior_times(sde)
    torch.testing.assert_close(sde.alpha_bar(t), sde.alpha(t) ** 2, rtol=1e-13, atol=0)
    torch.testing.assert_close(
        sde.log_snr(t), torch.log(sde.alpha(t) ** 2 / sde.marginal_std(t) ** 2), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("name", list(SDES))
def test_log_snr_strictly_decreasing(name):
    sde = SDES[name]
    lam = sde.log_snr(torch.linspace(1e-4, sde.T, 20_001, dtype=F64))
    assert torch.isfinite(lam).all()
    assert (lam[1:] < lam[:-1]).all()


@pytest.mark.parametrize("name", list(SDES))
@settings(max_examples=60, deadline=None)
@given(u=st.floats(min_value=0.0, max_value=1.0))
def test_log_snr_inverse_property(name, u):
    """t_from_log_snr(log_snr(t)) = t on [1e-4, T] (log-uniformly spread, so small t are well covered).

    The worst conditioning is at small t, where log_snr goes through log(1 - alpha_bar) with
    1 - alpha_bar ~ 1e-5: a relative error ~1e-16 / 1e-5 = 1e-11 in t. 1e-9 leaves a margin of 100.
    """
    sde = SDES[name]
    t = torch.tensor(1e-4 * (sde.T / 1e-4) ** u, dtype=F64).clamp(max=sde.T)
    t_back = sde.t_from_log_snr(sde.log_snr(t))
    assert abs(float(t_back) - float(t)) <= 1e-9 * float(t)
    lam = sde.log_snr(t)
    assert abs(float(sde.log_snr(t_back)) - float(lam)) <= 1e-8 * max(1.0, abs(float(lam)))


@pytest.mark.parametrize("name", list(SDES))
def test_log_snr_inverse_vectorised(name):
    sde = SDES[name]
    t = torch.logspace(-4, 0, 1000, dtype=F64) * sde.T
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-9, atol=0)


# --------------------------------------------------------------------------------------------------
# Variance preservation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VP_LIKE)
def test_vp_preserves_unit_variance_exactly(name):
    """For x0 ~ N(0, I): Var x_t = alpha^2 + sigma^2, which is 1 for VP at every t (to rounding).

    (t = 0 itself is covered by test_marginal_at_time_zero.)
    """
    sde = SDES[name]
    t = torch.linspace(0, sde.T, 1001, dtype=F64)[1:]
    total = sde.alpha(t) ** 2 + sde.marginal_std(t) ** 2
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-14)


@pytest.mark.parametrize("vp_name,sub_name", [("vp-linear", "subvp-linear"), ("vp-cosine", "subvp-cosine")])
def test_subvp_variance_below_vp(vp_name, sub_name):
    vp, sub = SDES[vp_name], SDES[sub_name]
    t = torch.linspace(0, vp.T, 1001, dtype=F64)[1:]  # t = 0: test_marginal_at_time_zero
    torch.testing.assert_close(sub.alpha(t), vp.alpha(t), rtol=0, atol=0)  # same mean coefficient
    assert (sub.alpha(t) ** 2 + sub.marginal_std(t) ** 2 <= 1 + 1e-15).all()
    # strictly below on (0, T]: sigma_sub = 1 - abar < sqrt(1 - abar) when 0 < abar < 1
    assert (sub.marginal_std(t) < vp.marginal_std(t)).all()
    assert (sub.marginal_std(t) > 0).all()


def test_vp_unit_variance_data_monte_carlo():
    """The same statement through perturb(): x0 ~ N(0, I) gives sample variance 1 at several t."""
    sde = SDES["vp-linear"]
    n = 200_000
    g = gen(7)
    x0 = torch.randn(n, generator=g, dtype=F64)
    for t in (0.05, 0.3, 0.7, 1.0):
        xt, _ = sde.perturb(x0, t, generator=g)
        # unit-variance Gaussian: SE of the sample variance = sqrt(2 / (n - 1)); 5 SE
        assert abs(float(xt.var()) - 1.0) <= 5 * math.sqrt(2 / (n - 1)), t


# --------------------------------------------------------------------------------------------------
# Discrete-time view
# --------------------------------------------------------------------------------------------------
def test_linear_discrete_betas_are_ddpm_linspace():
    betas = sd.VPSDE().discrete_betas(1000)
    assert betas.dtype == F64 and betas.shape == (1000,)
    torch.testing.assert_close(betas, torch.linspace(1e-4, 0.02, 1000, dtype=F64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("n", [1000, 4000])
def test_linear_discrete_alpha_bar_matches_continuous_to_order_one_over_n(n):
    """-log of DDPM's prod (1 - beta_j) against beta_min t + d t^2 / 2 at t = (i + 1)/n, d = beta_max - beta_min.

    With beta_j = beta_min/n + j d / (n (n - 1)):
      sum_{j<=i} beta_j - L(t_i) = -d (i + 1)(n - 1 - i) / (2 n^2 (n - 1)),  |.| <= d / (8 (n - 1)),
      -sum log(1 - beta_j) - sum beta_j in [0, sum beta_j^2 / (2 (1 - max beta))],
    so |log abar_disc - log abar(t_i)| <= d/(8(n-1)) + cumsum(beta^2)/(2(1 - max beta)) = O(1/n).
    (A relative tolerance would not do: at i = 0 the two differ by ~9% relative, d/(2 n^2) absolute.)
    """
    sde = sd.VPSDE()
    i = torch.arange(n)
    t = sde.timestep_to_t(i, n)
    betas = sde.discrete_betas(n)
    d = sde.beta_max - sde.beta_min
    bound = d / (8 * (n - 1)) + torch.cumsum(betas**2, 0) / (2 * (1 - betas.max()))
    diff = (sde.discrete_alpha_bar(n).log() - sde.alpha_bar(t).log()).abs()
    assert (diff <= bound * (1 + 1e-9) + 1e-15).all()
    assert float(bound.max()) <= 80 / n  # the bound itself is O(1/n): 19.9/8 + int beta^2 / 2 ~ 70


def test_linear_discrete_alpha_bar_error_halves_with_n():
    sde = sd.VPSDE()

    def err(n):
        t = sde.timestep_to_t(torch.arange(n), n)
        return float((sde.discrete_alpha_bar(n).log() - sde.alpha_bar(t).log()).abs().max())

    ratio = err(2000) / err(1000)
    assert 0.45 <= ratio <= 0.55, ratio  # first order: 1/2 up to O(1/n) corrections


@pytest.mark.parametrize("name", ["subvp-linear", "subvp-cosine"])
def test_subvp_inherits_vp_discrete_chain(name):
    """SubVP has VP's alpha, so its discrete DDPM chain is VP's (it inherits VPSDE.discrete_betas)."""
    sub = SDES[name]
    vp = SDES[name.replace("subvp", "vp")]
    torch.testing.assert_close(sub.discrete_betas(1000), vp.discrete_betas(1000), rtol=0, atol=0)


class _QuadraticLogAlphaSDE(sd.SDE):
    """A generic (non-VP) linear SDE: log alpha = -t - t^2, sigma^2 = t (only log_alpha matters here)."""

    def log_alpha(self, t):
        t = torch.as_tensor(t, dtype=F64)
        return -t - t**2

    def marginal_std(self, t):
        return torch.as_tensor(t, dtype=F64).sqrt()

    def drift_coef(self, t):
        return -1 - 2 * torch.as_tensor(t, dtype=F64)

    def diffusion(self, t):
        raise NotImplementedError

    def t_from_log_snr(self, lam):
        raise NotImplementedError

    def prior_std(self):
        return 1.0


@pytest.mark.parametrize(
    "sde",
    [_QuadraticLogAlphaSDE(), SDES["vp-linear"], SDES["vp-cosine"], SDES["subvp-linear"], SDES["ve"]],
    ids=["generic", "vp-linear", "vp-cosine", "subvp-linear", "ve"],
)
@pytest.mark.parametrize("n", [10, 1000])
def test_base_class_discrete_chain_is_exact_at_grid_points(sde, n):
    """SDE.discrete_betas: prod_{j<=i} (1 - beta_j) = alpha_bar(timestep_to_t(i)) exactly (telescoping)."""
    betas = sd.SDE.discrete_betas(sde, n)
    abar_disc = torch.cumprod(1 - betas, 0)
    abar = sde.alpha_bar(sde.timestep_to_t(torch.arange(n), n))
    torch.testing.assert_close(abar_disc, abar, rtol=1e-11, atol=1e-300)
    assert ((betas >= 0) & (betas < 1)).all()


def test_generic_sde_uses_base_discrete_chain():
    sde = _QuadraticLogAlphaSDE()
    n = 50
    torch.testing.assert_close(
        sde.discrete_alpha_bar(n), sde.alpha_bar(sde.timestep_to_t(torch.arange(n), n)), rtol=1e-12, atol=0
    )


def test_cosine_betas_are_nichol_dhariwal():
    """Nichol & Dhariwal: beta_i = 1 - abar(i/n) / abar((i-1)/n) on [0, 1], clipped at 0.999.

    (VPSDE(schedule="cosine").discrete_betas lives on [0, T] instead, consistent with timestep_to_t: see the
    two tests below.)
    """
    n = 1000
    s = 0.008
    f = torch.cos((torch.arange(n + 1, dtype=F64) / n + s) / (1 + s) * math.pi / 2) ** 2
    expected = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    torch.testing.assert_close(sd.sde.cosine_betas(n, s), expected, rtol=1e-9, atol=1e-15)


def test_cosine_discrete_chain_consistent_with_timestep_to_t():
    """The cosine chain is exact on its own grid (test above), so a chain consistent with timestep_to_t is
    exact at timestep_to_t(i) too, to rounding; steps before the 0.999 clipping only."""
    sde = SDES["vp-cosine"]
    n = 1000
    i = torch.arange(900)
    torch.testing.assert_close(
        sde.discrete_alpha_bar(n)[i].log(), sde.alpha_bar(sde.timestep_to_t(i, n)).log(), rtol=1e-9, atol=1e-12
    )


def test_linear_discrete_chain_consistent_with_timestep_to_t_when_T_below_one():
    """Same O(1/n) bound as with T = 1 (test_linear_discrete_alpha_bar_matches_continuous...: ~70 / n)."""
    sde = sd.VPSDE(T=0.5)
    n = 1000
    i = torch.arange(n)
    diff = (sde.discrete_alpha_bar(n).log() - sde.alpha_bar(sde.timestep_to_t(i, n)).log()).abs()
    assert float(diff.max()) <= 80 / n


@settings(max_examples=50, deadline=None)
@given(i=st.floats(min_value=-1.0, max_value=2000.0), n=st.integers(min_value=1, max_value=5000))
def test_timestep_time_inverse(i, n):
    for sde in (SDES["vp-linear"], SDES["vp-cosine"], SDES["ve"]):
        t = sde.timestep_to_t(i, n)
        assert abs(float(sde.t_to_timestep(t, n)) - i) <= 1e-12 * max(1.0, abs(i))


def test_timestep_grid_endpoints():
    for sde in (SDES["vp-linear"], SDES["vp-cosine"], SDES["ve"]):
        n = 1000
        ts = sde.timestep_to_t(torch.arange(n), n)
        assert float(ts[0]) == pytest.approx(sde.T / n, rel=1e-15)
        assert float(ts[-1]) == pytest.approx(sde.T, rel=1e-15)
        torch.testing.assert_close(sde.t_to_timestep(ts, n), torch.arange(n, dtype=F64), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Transition kernels
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SDES))
@settings(max_examples=40, deadline=None)
@given(u=st.lists(st.floats(min_value=1e-9, max_value=1.0), min_size=3, max_size=3))
def test_transition_composes(name, u):
    """Kernels r -> s -> t compose into r -> t: alpha_{t|r} = alpha_{t|s} alpha_{s|r} and
    sigma_{t|r}^2 = alpha_{t|s}^2 sigma_{s|r}^2 + sigma_{t|s}^2; and r -> t is consistent with the marginals:
    sigma_t^2 = alpha_{t|r}^2 sigma_r^2 + sigma_{t|r}^2.

    (Start 0 itself: test_marginal_at_time_zero, since the cosine schedule is NaN at exactly t = 0.)
    """
    sde = SDES[name]
    r, s, t = sorted(x * sde.T for x in u)
    a_ts, s_ts = sde.transition(s, t)
    a_sr, s_sr = sde.transition(r, s)
    a_tr, s_tr = sde.transition(r, t)
    # means multiply
    assert float(a_ts * a_sr) == pytest.approx(float(a_tr), rel=1e-12)
    assert float(a_tr) == pytest.approx(float(sde.alpha(t) / sde.alpha(r)), rel=1e-12)
    # variances add; sigma_{t|s}^2 is a difference of squares, so its rounding is ~eps * sigma_t^2
    var_t, var_r = float(sde.marginal_std(t)) ** 2, float(sde.marginal_std(r)) ** 2
    scale = var_t + 1e-300
    assert abs(float(a_ts**2 * s_sr**2 + s_ts**2) - float(s_tr**2)) <= 1e-12 * scale
    assert abs(float(a_tr) ** 2 * var_r + float(s_tr) ** 2 - var_t) <= 1e-12 * scale
    assert float(s_tr) >= 0 and float(s_ts) >= 0


def test_transition_closed_forms():
    s, t = torch.tensor([0.1, 0.3, 0.5], dtype=F64), torch.tensor([0.2, 0.9, 0.5], dtype=F64)
    vp = SDES["vp-linear"]
    a, sig = vp.transition(s, t)
    torch.testing.assert_close(sig**2, 1 - a**2, rtol=1e-12, atol=1e-15)  # VP between any two times
    ve = SDES["ve"]
    a, sig = ve.transition(s, t)
    torch.testing.assert_close(a, torch.ones_like(a))
    torch.testing.assert_close(sig**2, ve.marginal_std(t) ** 2 - ve.marginal_std(s) ** 2, rtol=1e-12, atol=1e-12)
    assert float(sig[2]) == 0.0 and float(a[2]) == 1.0  # s == t: the identity kernel


# --------------------------------------------------------------------------------------------------
# perturb, marginal, drift
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SDES))
def test_perturb_reproducible_and_exact_given_eps(name):
    sde = SDES[name]
    x0 = torch.randn(6, 3, 4, generator=gen(0), dtype=F64)
    t = torch.rand(6, generator=gen(1), dtype=F64) * sde.T
    x1, e1 = sde.perturb(x0, t, generator=gen(42))
    x2, e2 = sde.perturb(x0, t, generator=gen(42))
    x3, _ = sde.perturb(x0, t, generator=gen(43))
    assert torch.equal(x1, x2) and torch.equal(e1, e2)
    assert not torch.equal(x1, x3)
    assert x1.shape == x0.shape and e1.shape == x0.shape and x1.dtype == F64
    a = sde.alpha(t)[:, None, None]
    s = sde.marginal_std(t)[:, None, None]
    torch.testing.assert_close(x1, a * x0 + s * e1, rtol=1e-14, atol=1e-14)
    mean, std = sde.marginal(x0, t)
    torch.testing.assert_close(mean, a * x0, rtol=0, atol=0)
    assert std.shape == (6, 1, 1)


@pytest.mark.parametrize("name", ["vp-linear", "subvp-linear", "ve"])
def test_perturb_statistics(name):
    sde = SDES[name]
    n, t = 100_000, 0.4
    x0 = torch.tensor([1.0, -2.0], dtype=F64).expand(n, 2)
    xt, eps = sde.perturb(x0, t, generator=gen(5))
    a, s = float(sde.alpha(t)), float(sde.marginal_std(t))
    # 4 checks (2 coordinates x mean/var) at 5 SE each
    se_mean = s / math.sqrt(n)
    se_var = s**2 * math.sqrt(2 / (n - 1))
    torch.testing.assert_close(xt.mean(0), a * x0[0], rtol=0, atol=5 * se_mean)
    torch.testing.assert_close(xt.var(0), torch.full((2,), s**2, dtype=F64), rtol=0, atol=5 * se_var)
    # the two coordinates are independent: correlation SE ~ 1/sqrt(n)
    assert abs(float(torch.corrcoef(eps.T)[0, 1])) <= 5 / math.sqrt(n)


def test_perturb_rejects_out_of_range_time():
    sde = SDES["vp-linear"]
    x0 = torch.zeros(3, 2, dtype=F64)
    for bad in (-0.1, 1.5, float("nan"), torch.tensor([0.5, 0.2, 1.01], dtype=F64)):
        with pytest.raises(ValueError, match="time must lie in"):
            sde.perturb(x0, bad, generator=gen(0))


@pytest.mark.parametrize("name", list(SDES))
def test_drift_and_per_sample_broadcast(name):
    sde = SDES[name]
    x = torch.randn(5, 2, 3, generator=gen(0), dtype=F64)
    t = torch.linspace(0.1, 0.9, 5, dtype=F64) * sde.T
    expect = sde.drift_coef(t)[:, None, None] * x
    torch.testing.assert_close(sde.drift(x, t), expect, rtol=0, atol=0)
    torch.testing.assert_close(sde.drift(x, 0.3), float(sde.drift_coef(0.3)) * x, rtol=1e-15, atol=0)


def test_float_time_gives_float64():
    for sde in SDES.values():
        for fn in (sde.alpha, sde.marginal_std, sde.log_snr, sde.drift_coef, sde.diffusion):
            assert fn(0.5).dtype == F64


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta_min": 0.0},
        {"beta_min": -0.1},
        {"beta_min": 1.0, "beta_max": 0.5},
        {"beta_max": float("inf")},
        {"beta_min": float("nan")},
        {"beta_max": float("nan")},
    ],
)
def test_vp_invalid_betas(kwargs):
    for cls in (sd.VPSDE, sd.SubVPSDE):
        with pytest.raises(ValueError, match=r"0 < beta_min <= beta_max"):
            cls(**kwargs)


def test_vp_invalid_schedule_and_T():
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'"):
        sd.VPSDE(schedule="quadratic")
    with pytest.raises(ValueError, match="cosine offset s must be > 0"):
        sd.VPSDE(schedule="cosine", cosine_s=0.0)
    with pytest.raises(ValueError, match="cosine offset s must be > 0"):
        sd.VPSDE(schedule="cosine", cosine_s=-0.01)
    for T in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="T must lie in"):
            sd.VPSDE(T=T)
    assert sd.VPSDE(T=1.5).T == 1.5  # the linear schedule extends past 1
    with pytest.raises(ValueError, match="T must lie in"):
        sd.VPSDE(schedule="cosine", T=1.0)  # alpha_bar(1) = 0 for cosine: log-SNR infinite
    sd.VPSDE(beta_min=1.0, beta_max=1.0)  # a constant schedule is valid


@pytest.mark.parametrize(
    "sigma_min,sigma_max",
    [(0.0, 1.0), (-0.01, 50.0), (1.0, 1.0), (2.0, 1.0), (0.01, float("inf")), (float("nan"), 1.0), (0.01, -5.0)],
)
def test_ve_invalid_sigmas(sigma_min, sigma_max):
    with pytest.raises(ValueError, match="0 < sigma_min < sigma_max"):
        sd.VESDE(sigma_min, sigma_max)


@pytest.mark.parametrize("name", list(SDES))
def test_check_time(name):
    sde = SDES[name]
    for good in (0.0, sde.T, 0.5 * sde.T, torch.tensor([0.0, sde.T], dtype=F64), torch.zeros(0)):
        sde.check_time(good)
    bad = [
        -1e-12,
        sde.T + 1e-9,
        float("nan"),
        float("inf"),
        torch.tensor([0.5, float("nan")]),
        torch.tensor([0.1, -0.1]),
    ]
    for t in bad:
        with pytest.raises(ValueError, match=rf"{type(sde).__name__}: time must lie in \[0, "):
            sde.check_time(t)
    with pytest.raises(ValueError, match="time must lie in"):
        sde.check_time(0.05, low=0.1)


# --------------------------------------------------------------------------------------------------
# Prior
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp-linear", "ve"])
def test_prior_logp_matches_normal(name):
    sde = SDES[name]
    s = sde.prior_std()
    x = s * torch.randn(7, 3, 2, generator=gen(0), dtype=F64) + 0.3
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(s, dtype=F64))
    expect = normal.log_prob(x).flatten(1).sum(1)
    got = sde.prior_logp(x)
    assert got.shape == (7,)
    torch.testing.assert_close(got, expect, rtol=1e-13, atol=1e-12)


def test_prior_std_values():
    assert SDES["vp-linear"].prior_std() == 1.0
    assert SDES["vp-cosine"].prior_std() == 1.0
    assert SDES["ve"].prior_std() == 50.0
    # the VE prior matches the marginal at T up to sigma_min^2: sigma(1)^2 = sigma_max^2 - sigma_min^2
    assert float(SDES["ve"].marginal_std(1.0)) ** 2 == pytest.approx(50.0**2 - 0.01**2, rel=1e-12)


@pytest.mark.parametrize("name", ["vp-linear", "ve"])
def test_prior_sample(name):
    sde = SDES[name]
    n = 50_000
    a = sde.prior_sample((n, 2), generator=gen(3), dtype=F64)
    b = sde.prior_sample((n, 2), generator=gen(3), dtype=F64)
    assert torch.equal(a, b) and a.dtype == F64
    s = sde.prior_std()
    # 2 coordinates x (mean, var), 5 SE each
    torch.testing.assert_close(a.mean(0), torch.zeros(2, dtype=F64), rtol=0, atol=5 * s / math.sqrt(n))
    torch.testing.assert_close(a.var(0), torch.full((2,), s**2, dtype=F64), rtol=5 * math.sqrt(2 / (n - 1)), atol=0)


def test_repr():
    assert repr(sd.VPSDE()) == "VPSDE(beta_min=0.1, beta_max=20.0)"
    assert repr(sd.VESDE(0.02, 80)) == "VESDE(sigma_min=0.02, sigma_max=80.0)"
    assert "cosine" in repr(sd.VPSDE(schedule="cosine"))
    assert repr(sd.VPSDE()) != repr(sd.SubVPSDE())
