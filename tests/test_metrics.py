"""Sample-quality metrics: sliced Wasserstein (exact identities and its Gaussian-shift limit), the
mode-conditional SWD with its weight error, and the two-sample floor."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as sd
from scoresde import metrics

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def normal(n, d, seed):
    return torch.randn(n, d, generator=gen(seed), dtype=F64)


# --------------------------------------------------------------------------------------------------
# sliced_wasserstein
# --------------------------------------------------------------------------------------------------
def test_swd_of_a_set_with_itself_is_zero_and_permutation_invariant():
    x = normal(500, 3, 0)
    assert metrics.sliced_wasserstein(x, x) == 0.0
    perm = torch.randperm(500, generator=gen(1))
    assert metrics.sliced_wasserstein(x, x[perm]) == 0.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 200), d=st.integers(1, 6))
def test_swd_symmetric_nonnegative_and_triangle(seed, n, d):
    """A metric on equal-size empirical measures (for fixed directions it is an L2 norm of sorted
    projections, so the triangle inequality holds exactly up to rounding)."""
    g = gen(seed)
    x, y, z = (torch.randn(n, d, generator=g, dtype=F64) * (1 + i) + i for i in range(3))
    dxy, dyx = metrics.sliced_wasserstein(x, y), metrics.sliced_wasserstein(y, x)
    assert dxy == dyx and dxy >= 0
    dxz, dzy = metrics.sliced_wasserstein(x, z), metrics.sliced_wasserstein(z, y)
    assert dxy <= dxz + dzy + 1e-12


def test_swd_flattens_trailing_dimensions_and_accepts_float32():
    x, y = normal(100, 4, 0), normal(100, 4, 1)
    d = metrics.sliced_wasserstein(x, y)
    assert metrics.sliced_wasserstein(x.reshape(100, 2, 2), y.reshape(100, 2, 2)) == d
    assert metrics.sliced_wasserstein(x.float(), y.float()) == pytest.approx(d, rel=1e-6)


def test_swd_directions_fixed_by_seed():
    x, y = normal(300, 5, 0), normal(300, 5, 1) + 0.3
    assert metrics.sliced_wasserstein(x, y, seed=3) == metrics.sliced_wasserstein(x, y, seed=3)
    assert metrics.sliced_wasserstein(x, y, seed=3) != metrics.sliced_wasserstein(x, y, seed=4)


def test_swd_1d_shift_identity():
    """In 1-D the only directions are +-1, so SWD^2 = mean((x_(i) - y_(i) - m)^2) for y shifted by m:
    SWD(x, y + m)^2 = SWD(x, y)^2 - 2 m (mean x - mean y) + m^2 exactly (sorting commutes with the shift)."""
    n, m = 10_000, 0.7
    x, y = normal(n, 1, 0), normal(n, 1, 1)
    lhs = metrics.sliced_wasserstein(x, y + m) ** 2
    rhs = metrics.sliced_wasserstein(x, y) ** 2 - 2 * m * float(x.mean() - y.mean()) + m**2
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("m", [0.25, 1.0, 3.0])
def test_swd_1d_gaussians_approaches_shift(m):
    """N(0,1) vs N(m,1): W2 = |m|. From the identity above, SWD^2 - m^2 = W2^2(x, y) - 2 m (xbar - ybar)
    where xbar - ybar ~ N(0, 2/n); the two-sample W2^2(x, y) is measured (the floor), the mean term gets 5 SE.
    (In 1-D every direction is +-1, so 4 projections are as good as 256.)"""
    n = 100_000
    x, y = normal(n, 1, 10), normal(n, 1, 11)
    floor_sq = metrics.sliced_wasserstein(x, y, n_projections=4) ** 2
    swd = metrics.sliced_wasserstein(x, y + m, n_projections=4)
    assert abs(swd**2 - m**2) <= floor_sq + 2 * m * 5 * math.sqrt(2 / n)
    assert floor_sq <= 1e-3  # the two-sample floor is small at this n (O(log log n / n))


def test_swd_shift_decomposes_exactly():
    """For every direction, W2^2(theta.x, theta.x' + theta.mu) = W2^2(theta.x, theta.x') + (theta.mu)^2 when
    x and x' have the same sample mean (the cross term 2 (theta.mu) theta.(xbar - x'bar) vanishes), so
    SWD(x, x' + mu)^2 = SWD(x, x')^2 + SWD(y, y + mu)^2 for any y, to rounding."""
    d = 5
    x, xp = normal(3000, d, 1), normal(3000, d, 2)
    xp = xp - xp.mean(0) + x.mean(0)
    mu = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=F64)
    lhs = metrics.sliced_wasserstein(x, xp + mu) ** 2
    rhs = metrics.sliced_wasserstein(x, xp) ** 2 + metrics.sliced_wasserstein(x[:2], x[:2] + mu) ** 2
    assert lhs == pytest.approx(rhs, rel=1e-10)


@pytest.mark.parametrize("d", [2, 4, 16, 64])
def test_swd_of_a_pure_shift_is_norm_over_sqrt_d(d):
    """For a shift vector mu and directions uniform on the sphere, sliced W2^2 = E_theta (theta.mu)^2 = |mu|^2 / d.

    SWD(y, y + mu)^2 is exactly the average of (theta.mu)^2 over the P fixed directions. For theta uniform,
    (theta.mu)^2 / |mu|^2 ~ Beta(1/2, (d-1)/2): mean 1/d, variance 2 (d-1) / (d^2 (d+2)), so the average over
    P directions has standard error |mu|^2 sqrt(2 (d-1) / (d^2 (d+2) P)); tolerance 5 SE. This also checks
    that the directions are uniform (e.g. Gaussian coordinates that were not normalised would give |mu|^2).
    """
    P = 20_000
    mu = torch.zeros(d, dtype=F64)
    mu[0], mu[-1] = 2.0, -1.0  # deliberately not isotropic
    y = normal(2, d, d)
    swd_sq = metrics.sliced_wasserstein(y, y + mu, n_projections=P) ** 2
    m2 = float(mu @ mu)
    se = m2 * math.sqrt(2 * (d - 1) / (d**2 * (d + 2) * P))
    assert abs(swd_sq - m2 / d) <= 5 * se
    assert 5 * se <= 0.1 * m2 / d  # a sharp test: 10% at most (d = 2), ~5% for large d


def test_swd_input_errors_and_non_finite():
    x = normal(10, 2, 0)
    with pytest.raises(ValueError, match="equal shape"):
        metrics.sliced_wasserstein(x, normal(11, 2, 1))
    with pytest.raises(ValueError, match="equal shape"):
        metrics.sliced_wasserstein(x, normal(10, 3, 1))
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.sliced_wasserstein(x[:1], x[:1])
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[3, 1] = bad
        assert math.isnan(metrics.sliced_wasserstein(x, y))
        assert math.isnan(metrics.sliced_wasserstein(y, x))


# --------------------------------------------------------------------------------------------------
# mode_conditional_swd and floor
# --------------------------------------------------------------------------------------------------
RING = sd.get_problem("ring")
N_RING = 4000
SWD_KW = {"n_projections": 64}


@pytest.fixture(scope="module")
def mc_floor():
    """Mean and spread of the mode-conditional SWD of exact draws over 8 seeds."""
    vals = [
        metrics.mode_conditional_swd(RING.sample(N_RING, generator=gen(s)), RING, generator=gen(1000 + s), **SWD_KW)[0]
        for s in range(8)
    ]
    v = torch.tensor(vals, dtype=F64)
    return float(v.mean()), float(v.std())


def test_mode_conditional_exact_draws_near_floor(mc_floor):
    mean, std = mc_floor
    assert std > 0
    value, werr = metrics.mode_conditional_swd(
        RING.sample(N_RING, generator=gen(99)), RING, generator=gen(98), **SWD_KW
    )
    # within 5 spreads of the floor (std over 8 seeds)
    assert abs(value - mean) <= 5 * std
    # weight error of exact draws: multinomial, SE sqrt(w (1-w) / n) per component; 5 SE (Bonferroni over 8 ~ 4.4)
    w = 1 / 8
    assert werr <= 5 * math.sqrt(w * (1 - w) / N_RING)


def test_mode_conditional_detects_one_shifted_mode():
    """Four well-separated isotropic modes (distance 10, sd 0.5); every sample of mode 0 is shifted by delta
    (|delta| = 1 = 2 sd, 8 sd short of the midpoint, so no sample changes mode). With the same generator the
    reference draws are identical, so the change of the metric is w_0 (A - B), A = SWD(x_0 + delta, ref),
    B = SWD(x_0, ref), and by the triangle inequality with s = SWD(x_0 + delta, x_0) = sqrt(mean_theta
    (theta.delta)^2): s - 2B <= A - B <= s. B <= value_unshifted / w_0. No statistics involved."""
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], dtype=F64)
    gmm = sd.GaussianMixture(means, torch.full((4,), 0.25, dtype=F64))
    x, labels = gmm.sample(4000, generator=gen(7), return_labels=True)
    delta = torch.tensor([0.6, -0.8], dtype=F64)
    xs = x.clone()
    xs[labels == 0] += delta
    assert torch.equal(gmm.responsibilities(xs).argmax(1), labels)  # the premise: same assignment
    base, werr0 = metrics.mode_conditional_swd(x, gmm, generator=gen(8), **SWD_KW)
    shifted, werr1 = metrics.mode_conditional_swd(xs, gmm, generator=gen(8), **SWD_KW)
    w0 = 0.25
    s = metrics.sliced_wasserstein(x[:2], x[:2] + delta, **SWD_KW)
    assert s == pytest.approx(1 / math.sqrt(2), rel=0.2)  # |delta| / sqrt(d) up to the 64 directions' spread
    B = base / w0
    assert w0 * (s - 2 * B) - 1e-12 <= shifted - base <= w0 * s + 1e-12
    # the lower bound is itself well above 0, so the shift is detected whatever the reference draws
    assert w0 * (s - 2 * B) >= 0.5 * w0 * s
    assert werr0 == werr1  # the weights did not change


def test_mode_conditional_weight_error_detects_wrong_weights():
    """Draws from the same modes with weights proportional to 1..8: the largest weight error is
    |8/36 - 1/8| = 0.0972, far beyond the multinomial noise (SE <= 0.0066). (The modes overlap little, so
    misassignment adds nothing measurable.)"""
    wrong = sd.GaussianMixture(RING.means, RING.covs, torch.arange(1, 9, dtype=F64))
    x = wrong.sample(N_RING, generator=gen(5))
    _, werr = metrics.mode_conditional_swd(x, RING, generator=gen(6), **SWD_KW)
    expected = float((wrong.weights - RING.weights).abs().max())
    assert expected == pytest.approx(8 / 36 - 1 / 8)
    se = math.sqrt(8 / 36 * (1 - 8 / 36) / N_RING)
    assert abs(werr - expected) <= 5 * se


def test_mode_conditional_is_deterministic_given_generator():
    x = RING.sample(2000, generator=gen(1))
    a = metrics.mode_conditional_swd(x, RING, generator=gen(2), **SWD_KW)
    b = metrics.mode_conditional_swd(x, RING, generator=gen(2), **SWD_KW)
    assert a == b


def test_mode_conditional_nan_cases():
    x = RING.sample(500, generator=gen(1))
    y = x.clone()
    y[0, 0] = float("nan")
    value, werr = metrics.mode_conditional_swd(y, RING, generator=gen(2))
    assert math.isnan(value) and math.isnan(werr)
    # all samples in one mode: the empty components make the SWD nan, the weight error is still reported
    one_mode = RING.sample_component(3, 500, generator=gen(3))
    value, werr = metrics.mode_conditional_swd(one_mode, RING, generator=gen(4))
    assert math.isnan(value)
    assert werr == pytest.approx(7 / 8)


class _ZeroWeightMixture:
    """A duck-typed mixture (the documented interface: weights, responsibilities, sample_component) whose
    last component has weight 0: the ring's first two modes plus a far, weightless third one."""

    def __init__(self):
        self.inner = sd.GaussianMixture(RING.means[:2], RING.covs[:2])
        self.weights = torch.tensor([0.5, 0.5, 0.0], dtype=F64)

    def responsibilities(self, x):
        r = self.inner.responsibilities(x)
        return torch.cat([r, torch.zeros(len(x), 1, dtype=r.dtype)], 1)

    def sample_component(self, k, n, generator=None):
        return self.inner.sample_component(k, n, generator=generator)


def test_mode_conditional_zero_weight_component_does_not_make_nan():
    mix = _ZeroWeightMixture()
    x = mix.inner.sample(1000, generator=gen(0))
    value, werr = metrics.mode_conditional_swd(x, mix, generator=gen(1))
    assert math.isfinite(value)


def test_floor_mean_std_deterministic():
    def draw(g):
        return RING.sample(500, generator=g)

    def swd(a, b):
        return metrics.sliced_wasserstein(a, b, n_projections=32)

    m1, s1 = metrics.floor(draw, swd)
    m2, s2 = metrics.floor(draw, swd)
    assert (m1, s1) == (m2, s2)
    assert m1 > 0 and s1 > 0
    # the pair in each seed is two independent draws, so the floor matches SWDs of independent sets:
    # compare means with 5 SE of the difference of two sample means (10 direct values, 5 in the floor)
    direct = torch.tensor([swd(draw(gen(500 + 2 * s)), draw(gen(501 + 2 * s))) for s in range(10)], dtype=F64)
    assert abs(m1 - float(direct.mean())) <= 5 * math.sqrt(float(direct.var()) / 10 + s1**2 / 5)
    # a single seed has no spread
    m, s = metrics.floor(draw, swd, seeds=[0])
    assert s == 0.0 and m > 0
    # different seed sets give different values
    assert metrics.floor(draw, swd, seeds=range(5, 10))[0] != m1


# --- MMD and per-mode diagnostics ----------------------------------------------------------------------
def test_mmd_matches_closed_form_for_shifted_gaussians():
    """For 1-D N(0,1) vs N(mu,1) and a fixed bandwidth h, E k(a, b) over a - b ~ N(m, 2) is
    h / sqrt(h^2 + 2) exp(-m^2 / (2 (h^2 + 2))), so MMD^2 = 2 h / sqrt(h^2 + 2) (1 - exp(-mu^2 / (2 (h^2 + 2)))).
    The unbiased estimator at n = 4000 has a standard deviation below 1e-3 here (measured over seeds: ~4e-4)."""
    h, mu = 1.0, 0.7
    expected = 2 * h / math.sqrt(h**2 + 2) * (1 - math.exp(-(mu**2) / (2 * (h**2 + 2))))
    vals = []
    for s in range(3):
        g = gen(50 + s)
        x, y = torch.randn(4000, 1, generator=g, dtype=F64), mu + torch.randn(4000, 1, generator=g, dtype=F64)
        vals.append(metrics.mmd_rbf(x, y, bandwidth=h))
    assert abs(sum(vals) / 3 - expected) < 3e-3, (vals, expected)


def test_mmd_is_unbiased_between_samples_of_one_law():
    vals = []
    for s in range(8):
        g = gen(70 + s)
        vals.append(metrics.mmd_rbf(torch.randn(1000, 3, generator=g), torch.randn(1000, 3, generator=g)))
    v = torch.tensor(vals)
    assert abs(float(v.mean())) < 4 * float(v.std()) / math.sqrt(len(vals))  # mean 0 within 4 standard errors
    assert float(v.min()) < 0 or float(v.max()) < 1e-3  # an unbiased estimator of 0 is not clamped at 0
    shifted = metrics.mmd_rbf(torch.randn(1000, 3, generator=gen(1)), 0.3 + torch.randn(1000, 3, generator=gen(2)))
    assert shifted > float(v.mean() + 10 * v.std())


def test_mmd_errors_and_nan():
    with pytest.raises(ValueError):
        metrics.mmd_rbf(torch.zeros(10, 2), torch.zeros(10, 3))
    assert math.isnan(metrics.mmd_rbf(torch.full((10, 2), math.nan), torch.zeros(10, 2)))


def test_mode_diagnostics_detects_a_shifted_mode():
    mix = sd.get_problem("gmm16")
    x = mix.sample(20_000, generator=gen(3))
    good = metrics.mode_diagnostics(x, mix)
    # Exact draws: per-mode mean error ~ sqrt(trace C_k / n_k) <= sqrt(16 * 0.09 / 500) = 0.054.
    assert good["max_mean_err"] < 0.1 and good["max_weight_err"] < 0.02
    labels = mix.responsibilities(x).argmax(1)
    bad = x.clone()
    bad[labels == 0] += 0.2 / math.sqrt(16)  # shift mode 0 by 0.2 in norm
    diag = metrics.mode_diagnostics(bad, mix)
    assert diag["mean_err"][0] > 0.15 and diag["max_mean_err"] > good["max_mean_err"]
    # Inflate mode 1's spread by 20%: its covariance error grows by ~44% of |C_1|.
    m1 = labels == 1
    inflated = x.clone()
    inflated[m1] = mix.means[1] + 1.2 * (x[m1] - mix.means[1])
    assert metrics.mode_diagnostics(inflated, mix)["cov_err"][1] > good["cov_err"][1] + 0.3


# --- histogram total variation --------------------------------------------------------------------------
def test_histogram_tv_exact_values():
    x = normal(1000, 2, 0)
    assert metrics.histogram_tv(x, x) == 0.0
    assert metrics.histogram_tv(x, x[torch.randperm(1000, generator=gen(1))]) == 0.0
    # two points per set, by hand: cells of width 1 on [-2, 2)^2 (bins=4, lim=2)
    a = torch.tensor([[0.5, 0.5], [-1.5, -1.5]], dtype=F64)
    b = torch.tensor([[0.6, 0.9], [1.5, 1.5]], dtype=F64)  # one shared cell, one moved: TV = 1/2
    assert metrics.histogram_tv(a, b, bins=4, lim=2.0) == pytest.approx(0.5)
    # disjoint supports: 1; points outside the box count as one more cell (not dropped)
    assert metrics.histogram_tv(a, a + 10, bins=4, lim=2.0) == pytest.approx(1.0)
    far = torch.tensor([[50.0, 0.0], [0.0, -50.0]], dtype=F64)
    assert metrics.histogram_tv(far, far + 7, bins=4, lim=2.0) == 0.0
    # different sizes are fine (fractions), symmetric
    c = torch.cat([a, a])
    assert metrics.histogram_tv(a, c, bins=4, lim=2.0) == 0.0
    assert metrics.histogram_tv(a, b, bins=4, lim=2.0) == metrics.histogram_tv(b, a, bins=4, lim=2.0)


def test_histogram_tv_errors_and_non_finite():
    x = normal(10, 2, 0)
    with pytest.raises(ValueError, match="2-D points"):
        metrics.histogram_tv(normal(10, 3, 0), normal(10, 3, 1))
    with pytest.raises(ValueError, match="bins"):
        metrics.histogram_tv(x, x, bins=0)
    y = x.clone()
    y[3, 1] = float("nan")
    assert math.isnan(metrics.histogram_tv(x, y))


def test_histogram_tv_checkerboard_floor_and_blur():
    """The figures the learned-scores issue quotes: with 100,000 points and 48 x 48 bins over [-2.6, 2.6]^2,
    two exact checkerboard sets are 0.040 +- 0.001 apart; blurring one by Gaussian noise of std 0.05 raises
    that to ~2.7x and std 0.1 to ~4.6x, so the figure tells sharp squares from soft ones."""
    from scoresde import data

    def board(seed):
        return data.get_dataset("checkerboard", "train", n=100_000, seed=seed)[0]

    exact = [metrics.histogram_tv(board(2 * s), board(2 * s + 1)) for s in range(3)]
    assert all(0.036 < v < 0.045 for v in exact), exact
    floor = sum(exact) / 3
    a, b = board(10), board(11)
    blur05 = metrics.histogram_tv(a, b + 0.05 * torch.randn(b.shape, generator=gen(0)))
    blur10 = metrics.histogram_tv(a, b + 0.10 * torch.randn(b.shape, generator=gen(1)))
    assert 2.3 < blur05 / floor < 3.1
    assert 4.0 < blur10 / floor < 5.2
