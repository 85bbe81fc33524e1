"""Exact Gaussian-mixture problems: score against autograd of the log-density, the two routes to p_t,
the data density against scipy, sampling statistics, normalisation, validation and the built-in problems."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import scoresde as sd

F64 = torch.float64

SDES = {"vp": sd.VPSDE(), "vp-cosine": sd.VPSDE(schedule="cosine"), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_full_cov_mixture(dim, k, seed):
    """A mixture with random full (non-diagonal, non-isotropic) covariances, built independently of
    sd.problems.mixture."""
    g = gen(seed)
    means = 2 * torch.randn(k, dim, generator=g, dtype=F64)
    a = torch.randn(k, dim, dim, generator=g, dtype=F64)
    covs = a @ a.mT / dim + 0.05 * torch.eye(dim, dtype=F64)
    weights = torch.rand(k, generator=g, dtype=F64) + 0.2
    return sd.GaussianMixture(means, covs, weights)


MIXTURES = {
    "ring": lambda: sd.get_problem("ring"),
    "random-2d": lambda: random_full_cov_mixture(2, 3, seed=1),
    "gmm16": lambda: sd.problems.mixture(dim=16),
}


def points_at(gmm, sde, t, seed):
    """Typical points of p_t (alpha x0 + sigma eps) plus a few far-out points (tails of the log-sum-exp)."""
    g = gen(seed)
    x0 = gmm.sample(len(t), generator=g)
    a = sde.alpha(t)[:, None]
    s = sde.marginal_std(t)[:, None]
    x = a * x0 + s * torch.randn(x0.shape, generator=g, dtype=F64)
    x[:3] += 6 * torch.randn(3, gmm.dim, generator=g, dtype=F64)
    return x


# --------------------------------------------------------------------------------------------------
# Score, eps and the density at time t
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mix", list(MIXTURES))
@pytest.mark.parametrize("sde_name", ["vp", "vp-cosine", "ve"])
def test_score_equals_autograd_of_log_prob(mix, sde_name):
    """score_fn(x, t) = grad_x log p_t(x) at per-sample t (autograd of log_prob, float64).

    Both are exact closed forms evaluated in float64; the only amplification is through
    Sigma(t)^{-1} (condition up to ~225 at t -> 0 for gmm16), so 1e-9 relative per row is a wide margin.
    """
    gmm, sde = MIXTURES[mix](), SDES[sde_name]
    n = 64
    t = torch.cat([torch.tensor([1e-4, sde.T], dtype=F64), sde.T * torch.rand(n - 2, generator=gen(2), dtype=F64)])
    x = points_at(gmm, sde, t, seed=4).requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x, t, sde).sum(), x)
    score = gmm.score_fn(x.detach(), t, sde)
    err = (score - grad).norm(dim=1) / grad.norm(dim=1).clamp_min(1e-300)
    assert float(err.max()) <= 1e-9, float(err.max())


@pytest.mark.parametrize("mix", list(MIXTURES))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_marginal_mixture_log_prob_equals_log_prob_at_t(mix, sde_name):
    """Two routes to p_t: the marginal GaussianMixture (covariances alpha^2 C + sigma^2 I, its own
    eigendecomposition) and log_prob(x, t, sde) (rotated variances alpha^2 l + sigma^2)."""
    gmm, sde = MIXTURES[mix](), SDES[sde_name]
    for t in (1e-3, 0.2, 0.6, sde.T):
        x = points_at(gmm, sde, torch.full((40,), t, dtype=F64), seed=int(t * 1000))
        a = gmm.marginal(sde, t).log_prob(x)
        b = gmm.log_prob(x, t, sde)
        c = gmm.log_prob(x, torch.full((40,), t, dtype=F64), sde)
        # log-densities of order 10-100: 1e-10 relative (plus 1e-10 absolute) covers the different
        # eigendecompositions (errors ~ cond * eps ~ 225 * 1e-16 relative in the quadratic form)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b, c, rtol=0, atol=0)


def test_marginal_at_t_zero_is_the_data_and_responsibilities_sum_to_one():
    gmm, sde = MIXTURES["random-2d"](), SDES["vp"]
    x = gmm.sample(50, generator=gen(0))
    torch.testing.assert_close(gmm.log_prob(x, 0.0, sde), gmm.log_prob(x), rtol=1e-13, atol=1e-13)
    r = gmm.responsibilities(x, 0.3, sde)
    assert r.shape == (50, 3)
    torch.testing.assert_close(r.sum(1), torch.ones(50, dtype=F64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("mix", list(MIXTURES))
def test_log_prob_data_density_against_scipy(mix):
    gmm = MIXTURES[mix]()
    x = points_at(gmm, SDES["vp"], torch.full((30,), 0.05, dtype=F64), seed=9)
    comp = np.stack(
        [
            stats.multivariate_normal(gmm.means[k].numpy(), gmm.covs[k].numpy()).logpdf(x.numpy())
            for k in range(gmm.n_components)
        ],
        axis=1,
    )
    ref = logsumexp(comp + np.log(gmm.weights.numpy()), axis=1)
    # scipy uses its own eigendecomposition; same 1e-10 relative argument as above
    np.testing.assert_allclose(gmm.log_prob(x).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_weights_normalised_and_log_prob_uses_them():
    means = torch.tensor([[0.0, 0.0], [5.0, 0.0]], dtype=F64)
    gmm = sd.GaussianMixture(means, torch.tensor([1.0, 1.0], dtype=F64), weights=[3.0, 1.0])
    torch.testing.assert_close(gmm.weights, torch.tensor([0.75, 0.25], dtype=F64))
    x = torch.tensor([[0.0, 0.0]], dtype=F64)
    ref = logsumexp([math.log(0.75) - math.log(2 * math.pi), math.log(0.25) - math.log(2 * math.pi) - 12.5])
    assert float(gmm.log_prob(x)) == pytest.approx(ref, rel=1e-14)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_eps_model_and_score_object(sde_name):
    gmm, sde = MIXTURES["gmm16"](), SDES[sde_name]
    t = sde.T * torch.rand(32, generator=gen(1), dtype=F64).clamp_min(1e-3)
    x = points_at(gmm, sde, t, seed=2)
    score = gmm.score_fn(x, t, sde)
    s = sde.marginal_std(t)[:, None]
    torch.testing.assert_close(gmm.eps_model(sde)(x, t), -s * score, rtol=1e-14, atol=0)
    obj = gmm.score(sde)
    assert isinstance(obj, sd.EpsilonScore)
    torch.testing.assert_close(obj(x, t), score, rtol=1e-13, atol=0)
    assert obj.nfe == 1


def test_float32_input_gives_float32_output():
    gmm, sde = MIXTURES["ring"](), SDES["vp"]
    x = gmm.sample(10, generator=gen(0), dtype=torch.float32)
    assert x.dtype == torch.float32
    t = torch.full((10,), 0.5)
    assert gmm.score_fn(x, t, sde).dtype == torch.float32
    assert gmm.log_prob(x, t, sde).dtype == torch.float32
    torch.testing.assert_close(gmm.score_fn(x, t, sde), gmm.score_fn(x.double(), t, sde).float())


# --------------------------------------------------------------------------------------------------
# Normalisation by quadrature
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [None, 0.5])
def test_ring_density_integrates_to_one(t):
    """Riemann sum of p_t on a uniform grid over a box.

    By Poisson summation a Riemann sum of a Gaussian with std >= sd_min on spacing h errs by
    ~2 exp(-2 pi^2 sd_min^2 / h^2): sd_min = 0.08, h = 0.01 gives exp(-126). The box reaches >= 6 sd
    beyond every mode in every direction (ring radius 3, sd <= 0.3 at t = 0; at t = 0.5 under VP,
    alpha = 0.28, sigma = 0.96: modes within radius 0.85), so the mass outside is < 1e-8. Tolerance 1e-7.
    """
    gmm = sd.get_problem("ring")
    sde = SDES["vp"]
    lim, h = (4.9, 0.01) if t is None else (7.0, 0.02)
    u = torch.arange(-lim, lim + h / 2, h, dtype=F64)
    xx, yy = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    logp = gmm.log_prob(pts) if t is None else gmm.log_prob(pts, t, sde)
    total = float(logp.exp().sum()) * h * h
    assert abs(total - 1.0) <= 1e-7, total


# --------------------------------------------------------------------------------------------------
# Sampling statistics
# --------------------------------------------------------------------------------------------------
def _z_bonferroni(n_checks, alpha=1e-3):
    """Two-sided Gaussian quantile so that n_checks checks all pass with probability >= 1 - alpha."""
    return float(stats.norm.isf(alpha / (2 * n_checks)))


@pytest.mark.parametrize("mix", list(MIXTURES))
def test_sample_statistics(mix):
    """Component frequencies (binomial SE), per-component means (SE sqrt(C_ii / n_k)) and covariances
    (Wishart: Var S_ij = (C_ij^2 + C_ii C_jj) / (n_k - 1)), each entry at a Bonferroni-corrected z."""
    gmm = MIXTURES[mix]()
    n = 200_000 if gmm.dim <= 2 else 80_000
    x, labels = gmm.sample(n, generator=gen(17), return_labels=True)
    assert x.shape == (n, gmm.dim) and x.dtype == F64 and labels.shape == (n,)
    K, d = gmm.n_components, gmm.dim
    z = _z_bonferroni(K * (1 + d + d * (d + 1) // 2))

    freq = torch.bincount(labels, minlength=K).double() / n
    w = gmm.weights
    assert ((freq - w).abs() <= z * (w * (1 - w) / n).sqrt()).all()

    for k in range(K):
        xk = x[labels == k]
        nk = len(xk)
        C = gmm.covs[k]
        diag = torch.diagonal(C)
        assert ((xk.mean(0) - gmm.means[k]).abs() <= z * (diag / nk).sqrt()).all(), k
        S = torch.cov(xk.T)
        se = ((C**2 + diag[:, None] * diag[None, :]) / (nk - 1)).sqrt()
        assert ((S - C).abs() <= z * se).all(), k


def test_sample_global_moments():
    """Mixture mean sum w_k m_k and covariance sum w_k (C_k + m_k m_k^T) - mu mu^T; entry SEs measured
    from the draws (std of the centred products / sqrt(n)), 5 SE after Bonferroni over the entries."""
    gmm = MIXTURES["random-2d"]()
    n = 200_000
    x = gmm.sample(n, generator=gen(23))
    w = gmm.weights
    mu = (w[:, None] * gmm.means).sum(0)
    cov = (w[:, None, None] * (gmm.covs + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0) - torch.outer(mu, mu)
    z = _z_bonferroni(2 + 3)
    xc = x - x.mean(0)
    se_mean = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - mu).abs() <= z * se_mean).all()
    prods = xc[:, :, None] * xc[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    assert ((torch.cov(x.T) - cov).abs() <= z * se_cov).all()


@pytest.mark.parametrize("mix", ["ring", "gmm16"])
def test_sample_component(mix):
    gmm = MIXTURES[mix]()
    n, d = 100_000, gmm.dim
    z = _z_bonferroni(gmm.n_components * (d + d * (d + 1) // 2))
    for k in (0, gmm.n_components - 1):
        xk = gmm.sample_component(k, n, generator=gen(k))
        C, diag = gmm.covs[k], torch.diagonal(gmm.covs[k])
        assert ((xk.mean(0) - gmm.means[k]).abs() <= z * (diag / n).sqrt()).all()
        se = ((C**2 + diag[:, None] * diag[None, :]) / (n - 1)).sqrt()
        assert ((torch.cov(xk.T) - C).abs() <= z * se).all()


def test_sampling_is_reproducible():
    gmm = MIXTURES["gmm16"]()
    a, la = gmm.sample(100, generator=gen(5), return_labels=True)
    b, lb = gmm.sample(100, generator=gen(5), return_labels=True)
    c = gmm.sample(100, generator=gen(6))
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert torch.equal(gmm.sample_component(2, 10, generator=gen(1)), gmm.sample_component(2, 10, generator=gen(1)))
    assert gmm.sample(4, generator=gen(0), dtype=torch.float32).dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# Constructor validation and alternative covariance forms
# --------------------------------------------------------------------------------------------------
def test_diagonal_and_isotropic_covariance_forms():
    means = torch.zeros(2, 3, dtype=F64)
    iso = sd.GaussianMixture(means, [0.5, 2.0])
    torch.testing.assert_close(iso.covs[1], 2.0 * torch.eye(3, dtype=F64))
    diag = sd.GaussianMixture(means, [[1.0, 2.0, 3.0], [0.1, 0.2, 0.3]])
    torch.testing.assert_close(diag.covs[0], torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64)))
    torch.testing.assert_close(diag.weights, torch.full((2,), 0.5, dtype=F64))
    assert diag.dim == 3 and diag.n_components == 2 and repr(diag) == "GaussianMixture(K=2, d=3)"


@pytest.mark.parametrize(
    "means,covs,weights,match",
    [
        ([0.0, 1.0], [1.0, 1.0], None, r"means must have shape \(K, d\)"),
        ([[0.0, 1.0]], [[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]], None, "covs must have shape"),
        ([[0.0, 1.0]], [1.0, 1.0, 1.0], None, "covs must have shape"),
        ([[0.0, 1.0]], [[[1.0, 0.5], [0.0, 1.0]]], None, "covs must be symmetric"),
        ([[0.0, 1.0]], [[[1.0, 2.0], [2.0, 1.0]]], None, "covs must be positive definite"),
        ([[0.0, 1.0]], [[[1.0, 1.0], [1.0, 1.0]]], None, "covs must be positive definite"),
        ([[0.0, 1.0]], [[0.0, 1.0]], None, "covs must be positive definite"),
        ([[0.0, 1.0]], [-1.0], None, "covs must be positive definite"),
        ([[0.0], [1.0]], [1.0, 1.0], [1.0, 0.0], "weights must be 2 positive finite numbers"),
        ([[0.0], [1.0]], [1.0, 1.0], [1.0, -1.0], "weights must be 2 positive finite numbers"),
        ([[0.0], [1.0]], [1.0, 1.0], [1.0, float("nan")], "weights must be 2 positive finite numbers"),
        ([[0.0], [1.0]], [1.0, 1.0], [1.0, float("inf")], "weights must be 2 positive finite numbers"),
        ([[0.0], [1.0]], [1.0, 1.0], [1.0, 1.0, 1.0], "weights must be 2 positive finite numbers"),
    ],
)
def test_constructor_errors(means, covs, weights, match):
    with pytest.raises(ValueError, match=match):
        sd.GaussianMixture(means, covs, weights)


def test_input_errors():
    gmm = MIXTURES["ring"]()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        gmm.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        gmm.score_fn(torch.zeros(4), 0.5, SDES["vp"])
    with pytest.raises(ValueError, match="needs the sde"):
        gmm.log_prob(torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match="time must lie in"):
        gmm.log_prob(torch.zeros(4, 2), 1.5, SDES["vp"])


# --------------------------------------------------------------------------------------------------
# Built-in problems
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,dim,k", [("ring", 2, 8), ("gmm16", 16, 8), ("gmm64", 64, 8)])
def test_builtin_problems(name, dim, k):
    gmm = sd.get_problem(name)
    assert isinstance(gmm, sd.GaussianMixture)
    assert gmm.dim == dim and gmm.n_components == k
    assert float(gmm.weights.sum()) == pytest.approx(1.0, abs=1e-15)
    assert (gmm.weights > 0).all()
    torch.testing.assert_close(gmm.means.norm(dim=1), torch.full((k,), 3.0, dtype=F64), rtol=1e-14, atol=0)
    # deterministic: a second construction is identical
    assert torch.equal(sd.get_problem(name).covs, gmm.covs)


@pytest.mark.parametrize("name", ["gmm16", "gmm64"])
def test_random_mixture_documented_properties(name):
    """Eigenvalues in [0.02^2, 0.3^2]; weights proportional to a permutation of 1..K (max / min = K)."""
    gmm = sd.get_problem(name)
    ev = torch.linalg.eigvalsh(gmm.covs)
    assert float(ev.min()) >= 0.02**2 * (1 - 1e-9) and float(ev.max()) <= 0.3**2 * (1 + 1e-9)
    K = gmm.n_components
    ranks = torch.sort(gmm.weights * K * (K + 1) / 2).values
    torch.testing.assert_close(ranks, torch.arange(1, K + 1, dtype=F64), rtol=1e-13, atol=0)
    assert not torch.allclose(gmm.covs, torch.diag_embed(torch.diagonal(gmm.covs, dim1=-2, dim2=-1)))  # full


def test_ring_geometry():
    gmm = sd.problems.ring(n_modes=6, radius=2.0, radial_std=0.1, tangential_std=0.4)
    for k in range(6):
        m = gmm.means[k]
        radial = m / m.norm()
        tangential = torch.stack([-radial[1], radial[0]])
        assert float(radial @ gmm.covs[k] @ radial) == pytest.approx(0.01, rel=1e-12)
        assert float(tangential @ gmm.covs[k] @ tangential) == pytest.approx(0.16, rel=1e-12)
        assert float(radial @ gmm.covs[k] @ tangential) == pytest.approx(0.0, abs=1e-14)


def test_unknown_problem_lists_names():
    with pytest.raises(ValueError, match="unknown problem 'moons'.*ring.*gmm16.*gmm64"):
        sd.get_problem("moons")


def test_the_random_family_is_reproducible_and_has_what_it_promises():
    """gmm-family members: fixed by (d, k, seed), eigenvalues within a decade [0.05, 0.5], uneven weights, and
    distinct members for distinct seeds; bad specs are refused with the expected form."""
    a = sd.get_problem("gmm-family:d=8,k=3,seed=2")
    assert torch.equal(a.means, sd.get_problem("gmm-family:seed=2,k=3,d=8").means)
    assert not torch.equal(a.means, sd.get_problem("gmm-family:d=8,k=3,seed=3").means)
    ev = torch.linalg.eigvalsh(a.covs)
    assert float(ev.min()) >= 0.05 - 1e-12 and float(ev.max()) <= 0.5 + 1e-12
    assert a.dim == 8 and a.weights.numel() == 3 and float(a.weights.max() / a.weights.min()) > 1.0
    assert sd.get_problem("gmm-family").dim == 16
    for bad in ("gmm-family:d=x", "gmm-family:q=3", "gmm-family:d=0"):
        with pytest.raises(ValueError, match="gmm-family"):
            sd.get_problem(bad)
