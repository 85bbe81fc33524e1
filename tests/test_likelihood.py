"""log_likelihood against closed forms: exact mixture log-densities at t_min, Gaussian data in any shape,
Hutchinson's standard error by its coverage, dequantised Gaussians against scipy, batch layouts, NFE, errors.

The mixtures' marginal ``p_t`` is exact at every ``t`` (``GaussianMixture.marginal``), so passing the exact
``log p_T`` as the prior isolates the integration and trace error from the prior mismatch of ``N(0, I)``.
"""

import math

import pytest
import scipy.stats
import torch

import scoresde as sd
from scoresde.likelihood import _Divergence, log_likelihood

VP = sd.VPSDE()
GAUSS2 = sd.GaussianMixture(torch.tensor([[1.0, -0.5]]), torch.tensor([[[0.5, 0.1], [0.1, 0.2]]]))
GAUSS1 = sd.GaussianMixture(torch.tensor([[0.7]]), torch.tensor([[[0.3]]]))


def exact_run(gmm, n, sde=VP, seed=0, **kw):
    x = gmm.sample(n, generator=torch.Generator().manual_seed(seed))
    res = log_likelihood(gmm.score(sde), sde, x, prior_logp=gmm.marginal(sde, sde.T).log_prob, **kw)
    return res, gmm.log_prob(x, res.t_min, sde)


def gaussian_flow(gauss, sde, x, t0, t1):
    """The PF-ODE flow map of Gaussian data from ``t0`` to ``t1`` and the log-determinant of its Jacobian.

    Along each eigenvector of the data covariance (eigenvalue ``l``) the centred state is scaled by
    ``r = sqrt((alpha_1^2 l + sigma_1^2) / (alpha_0^2 l + sigma_0^2))``, the ratio of marginal standard deviations;
    the log-determinant ``sum log r`` does not depend on ``x``.
    """
    lam, U = torch.linalg.eigh(gauss.covs[0].double())
    m = gauss.means[0].double()
    a0, s0 = float(sde.alpha(t0)), float(sde.marginal_std(t0))
    a1, s1 = float(sde.alpha(t1)), float(sde.marginal_std(t1))
    r = torch.sqrt((a1**2 * lam + s1**2) / (a0**2 * lam + s0**2))
    return a1 * m + ((x.double() - a0 * m) @ U * r) @ U.T, float(r.log().sum())


def standard_normal_logp(z):
    return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * z[0].numel() * math.log(2 * math.pi)


# |nats - exact log p_t_min| at rtol = atol = 1e-5, measured over seeds 0-4 (per-seed mean over the samples;
# largest single error): gauss1 5.7e-6 to 1.2e-5, 8.9e-5; gauss2 6.3e-6 to 1.0e-5, 7.3e-5; ring 1.0e-5 to
# 2.2e-5, 3.4e-4; gmm16 3.5e-4 to 9.0e-4, 6.2e-3. The tolerances (mean, max) are about 4x the largest.
EXACT_TOL = {"gauss1": (5e-5, 4e-4), "gauss2": (5e-5, 3e-4), "ring": (1e-4, 1.5e-3), "gmm16": (4e-3, 2.5e-2)}


@pytest.mark.parametrize(
    "name,gmm,n",
    [("gauss1", GAUSS1, 32), ("gauss2", GAUSS2, 32), ("ring", sd.get_problem("ring"), 32), ("gmm16", None, 12)],
)
def test_exact_trace_matches_exact_log_density(name, gmm, n):
    gmm = gmm or sd.get_problem(name)
    res, exact = exact_run(gmm, n)
    err = (res.nats - exact).abs()
    mean_tol, max_tol = EXACT_TOL[name]
    assert float(err.mean()) < mean_tol and float(err.max()) < max_tol, f"{name}: {float(err.mean()):.3g}, {err}"
    # Bits per dimension of the exact density; the nats' error bound, in bits.
    exact_bits = -exact / (gmm.dim * math.log(2))
    assert float((res.bits_per_dim - exact_bits).abs().max()) < max_tol / (gmm.dim * math.log(2))
    assert res.nats.dtype == torch.float64 and res.nfe > 0
    assert (res.std_err == 0).all() and res.log_bin_volume == 0.0


@pytest.mark.parametrize("gauss", [GAUSS1, GAUSS2], ids=["gauss1", "gauss2"])
def test_each_term_matches_the_closed_form_flow(gauss):
    # Gaussian data: x_T is the closed-form flow map of x, delta_logp its log-determinant and prior_logp the
    # exact log p_T there. Measured over seeds 0-4: |x_T error| <= 3.0e-5, |delta_logp error| 6.4e-6 to 8.7e-6
    # (the same for every sample: the divergence does not depend on x), |prior_logp error| <= 9.5e-5.
    x = gauss.sample(32, generator=torch.Generator().manual_seed(0))
    pT = gauss.marginal(VP, VP.T)
    res = log_likelihood(gauss.score(VP), VP, x, prior_logp=pT.log_prob)
    x_T, log_det = gaussian_flow(gauss, VP, x, res.t_min, VP.T)
    assert float((res.x_T - x_T).abs().max()) < 1.2e-4
    assert float((res.delta_logp - log_det).abs().max()) < 3e-5
    assert float((res.prior_logp - pT.log_prob(x_T)).abs().max()) < 4e-4


def test_error_shrinks_with_tolerance():
    # Global error follows the tolerance: 100x tighter gives 50-200x smaller mean error (measured).
    errs = [
        float((r.nats - e).abs().mean()) for r, e in (exact_run(GAUSS2, 16, rtol=tol, atol=tol) for tol in (1e-4, 1e-6))
    ]
    assert errs[1] < errs[0] / 10, errs


@pytest.mark.parametrize("sde", [sd.VPSDE(schedule="cosine"), sd.SubVPSDE(), sd.VESDE()], ids=repr)
@pytest.mark.parametrize("time", ["t", "logsnr"])
def test_other_sdes_and_log_snr_time(sde, time):
    # Measured over seeds 0-4 (16 samples each): per-seed mean |error| 1.1e-6 (cosine, t) to 7.1e-5 (VE,
    # log-SNR), largest single error 2.9e-4 (VE). Tolerances about 3x and 4x those.
    res, exact = exact_run(GAUSS2, 16, sde=sde, time=time)
    err = (res.nats - exact).abs()
    assert float(err.mean()) < 2e-4 and float(err.max()) < 1.2e-3, err


def test_float32_network_same_integral_in_t_and_log_snr_time():
    # A (random) float32 network has no closed form, but the two integration variables compute the same
    # integral; measured difference 1.3e-4 nats at t_min = 1e-3 and 1.2e-3 at 1e-5 (log-likelihoods ~ -20).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.SiLU(), torch.nn.Linear(64, 4))
    score = sd.EpsilonScore(lambda x, t: net(torch.cat([x, t[:, None]], 1)), VP)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    res = {tv: log_likelihood(score, VP, x, time=tv, t_min=1e-5) for tv in ("t", "logsnr")}
    assert res["t"].nats.dtype == torch.float64 and res["t"].x_T.dtype == torch.float32
    assert float((res["t"].nats - res["logsnr"].nats).abs().max()) < 5e-3


def test_default_prior_adds_exactly_the_prior_mismatch():
    # With the default prior N(0, I) the result is log p_t_min(x) - log p_T(x_T) + log N(x_T; 0, I), x_T the
    # closed-form flow map of x. Measured over seeds 0-4: |nats error| <= 2.9e-5, |prior_logp error| <= 3.8e-5.
    x = GAUSS2.sample(8, generator=torch.Generator().manual_seed(1))
    res = log_likelihood(GAUSS2.score(VP), None, x)
    x_T, _ = gaussian_flow(GAUSS2, VP, x, res.t_min, VP.T)
    exact_prior = standard_normal_logp(x_T)
    exact = GAUSS2.log_prob(x, VP.t_min, VP) - GAUSS2.marginal(VP, VP.T).log_prob(x_T) + exact_prior
    assert float((res.prior_logp - exact_prior).abs().max()) < 1.5e-4
    assert float((res.nats - exact).abs().max()) < 1.2e-4


def isotropic_eps(s2):
    """eps of data N(0, s2 I) in any shape: score = -x / (alpha^2 s2 + sigma^2), eps = -sigma score."""

    def eps(x, t):
        a, s = (VP.alpha(t.double()), VP.marginal_std(t.double()))
        shape = (-1,) + (1,) * (x.ndim - 1)
        return (s / (a**2 * s2 + s**2)).to(x.dtype).reshape(shape) * x

    return eps


def isotropic_logp(x, s2, t):
    var = float(VP.alpha(t)) ** 2 * s2 + float(VP.marginal_std(t)) ** 2
    d = x[0].numel()
    return -0.5 * x.flatten(1).pow(2).sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_image_shaped_data(trace):
    s2 = 0.4
    x = math.sqrt(s2) * torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = {"trace": trace, "n_probes": 4, "seed": 0} if trace == "hutchinson" else {}
    res = log_likelihood(
        sd.EpsilonScore(isotropic_eps(s2), VP), VP, x, prior_logp=lambda z: isotropic_logp(z, s2, VP.T), **kw
    )
    assert res.x_T.shape == x.shape and res.dim == 18
    # The Jacobian is a multiple of the identity, so every Rademacher probe gives the exact trace. Measured
    # largest |error| over seeds 0-4: 1.1e-4 (exact), 1.3e-4 (Hutchinson).
    assert float((res.nats - isotropic_logp(x, s2, VP.t_min)).abs().max()) < 4e-4


def test_zero_model_gives_the_linear_flow_in_closed_form():
    # eps = 0: dx/dt = f x, so x_T = alpha_T / alpha_t_min x and int div F dt = d (log alpha_T - log alpha_t_min);
    # with the N(0, I) prior, log p = log N(x_T; 0, I) + d (log alpha_T - log alpha_t_min). Measured over seeds
    # 0-4 at rtol = atol = 1e-8: |x_T error| <= 1.1e-8, |delta_logp error| <= 1.2e-13, |nats error| <= 3.0e-10.
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    res = log_likelihood(sd.EpsilonScore(lambda x, t: torch.zeros_like(x), VP), VP, x, rtol=1e-8, atol=1e-8)
    la_T, la_0 = float(VP.log_alpha(VP.T)), float(VP.log_alpha(VP.t_min))
    x_T = math.exp(la_T - la_0) * x
    assert float((res.x_T - x_T).abs().max()) < 5e-8
    assert float((res.delta_logp - 6 * (la_T - la_0)).abs().max()) < 1e-12
    assert float((res.nats - standard_normal_logp(x_T) - 6 * (la_T - la_0)).abs().max()) < 1.5e-9


def test_non_finite_model_output_raises():
    bad = sd.EpsilonScore(lambda x, t: x * math.nan, VP)
    with pytest.raises(sd.NonFiniteError, match="non-finite"):
        log_likelihood(bad, VP, torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(sd.NonFiniteError, match="max_num_steps"):  # torchdiffeq's step limit, reported
        log_likelihood(GAUSS2.score(VP), VP, torch.zeros(2, 2, dtype=torch.float64), max_steps=2)


def test_divergence_matches_closed_form():
    A = torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    out = x @ A.T
    div = _Divergence(None, 5)
    assert torch.allclose(div(out, x)[:, 0], torch.full((3,), float(A.trace()), dtype=torch.float64))
    assert div.vjps == 5
    v = torch.randn(2, 3, 5, dtype=torch.float64)
    est = _Divergence(v, 5)(out, x)
    assert torch.allclose(est, torch.einsum("pbi,ij,pbj->bp", v, A, v))


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_standard_error_has_the_right_coverage(probe):
    # With P = 10 probes, z = (estimate - exact) / std_err is Student-t with 9 degrees of freedom when the
    # per-probe integrals are normal: E z^2 = 9/7 and Var z^2 = 3 * 81 / 35 - (9/7)^2 = 5.29. Pooled over
    # 3 seeds x 40 samples of gmm16 (d = 16 makes the quadratic forms close to normal), the mean of z^2 lies
    # within 3 standard deviations sqrt(5.29 / 120) = 0.21 of 9/7; a std_err off by a factor 1.6 fails.
    gmm = sd.get_problem("gmm16")
    z, diffs, ses = [], [], []
    for seed in range(3):
        x = gmm.sample(40, generator=torch.Generator().manual_seed(10 + seed))
        res = log_likelihood(
            gmm.score(VP),
            VP,
            x,
            trace="hutchinson",
            probe=probe,
            n_probes=10,
            seed=seed,
            prior_logp=gmm.marginal(VP, VP.T).log_prob,
        )
        diff = res.nats - gmm.log_prob(x, VP.t_min, VP)
        z.append(diff / res.std_err)
        diffs.append(diff)
        ses.append(res.std_err)
    z, diffs, ses = torch.cat(z), torch.cat(diffs), torch.cat(ses)
    assert abs(float(z.pow(2).mean()) - 9 / 7) < 3 * math.sqrt(5.29 / z.numel()), float(z.pow(2).mean())
    # The mean over samples is within 3 standard errors of the exact value (the target).
    assert abs(float(diffs.mean())) < 3 * float(ses.pow(2).sum().sqrt()) / diffs.numel()


def test_one_probe_has_no_standard_error_and_probes_do_not_depend_on_n_probes():
    x = GAUSS2.sample(4, generator=torch.Generator().manual_seed(3))
    one = log_likelihood(GAUSS2.score(VP), VP, x, trace="hutchinson", n_probes=1, seed=7)
    assert torch.isnan(one.std_err).all() and torch.isnan(one.bits_per_dim_std_err).all()
    again = log_likelihood(GAUSS2.score(VP), VP, x, trace="hutchinson", n_probes=1, seed=7)
    assert torch.equal(one.nats, again.nats)
    other = log_likelihood(GAUSS2.score(VP), VP, x, trace="hutchinson", n_probes=1, seed=8)
    assert not torch.equal(one.nats, other.nats)


def test_batch_layout_independence():
    # Probes and dequantisation noise belong to the sample, not to its place in the batch. The step sizes
    # follow the batch's worst sample, so layouts agree to within the integration error: at 1e-8 tolerance
    # that is far below the Hutchinson noise and the dequantisation noise (both of order 0.1 nat here).
    x = (GAUSS2.sample(8, generator=torch.Generator().manual_seed(4)) * 4).round() / 4
    kw = {"trace": "hutchinson", "n_probes": 3, "seed": 11, "bins": 41, "data_range": (-5.0, 5.0)}
    kw |= {"rtol": 1e-8, "atol": 1e-8}
    score = GAUSS2.score(VP)
    whole = log_likelihood(score, VP, x, **kw).nats
    halves = torch.cat([log_likelihood(score, VP, x[i : i + 4], sample_offset=i, **kw).nats for i in (0, 4)])
    ones = torch.cat([log_likelihood(score, VP, x[i : i + 1], sample_offset=i, **kw).nats for i in (6, 7)])
    assert float((whole - halves).abs().max()) < 1e-5
    assert float((whole[6:] - ones).abs().max()) < 1e-5
    shifted = log_likelihood(score, VP, x[4:], sample_offset=0, **kw).nats  # other samples' noise
    assert float((whole[4:] - shifted).abs().max()) > 1e-2


def test_dequantised_gaussian_against_scipy():
    # Data N(0, 1) in 1-D on 9 levels over [-2, 2] (Delta = 0.5). With y = x + Delta w, w ~ U(-1/2, 1/2),
    # E_w log p(y) + log Delta = -1/2 log(2 pi S) - (x^2 + Delta^2 / 12) / (2 S) + log Delta in closed form
    # (S the variance at t_min); it lower-bounds log P(x) = log(Phi((x + Delta/2)/sqrt S) - Phi((x - Delta/2)/sqrt S)).
    gmm = sd.GaussianMixture(torch.zeros(1, 1), torch.ones(1, 1, 1))
    delta, copies = 0.5, 64
    levels = torch.linspace(-2, 2, 9, dtype=torch.float64)
    x = levels.repeat_interleave(copies)[:, None]
    res = log_likelihood(
        gmm.score(VP), VP, x, bins=9, data_range=(-2.0, 2.0), seed=0, prior_logp=gmm.marginal(VP, VP.T).log_prob
    )
    assert res.log_bin_volume == pytest.approx(math.log(delta))
    S = float(gmm.marginal(VP, VP.t_min).covs[0, 0, 0])
    bound = -0.5 * math.log(2 * math.pi * S) - (levels**2 + delta**2 / 12) / (2 * S) + math.log(delta)
    sd_ = scipy.stats.norm(scale=math.sqrt(S))
    log_mass = torch.tensor(
        [math.log(sd_.cdf(v + delta / 2) - sd_.cdf(v - delta / 2)) for v in levels.tolist()], dtype=torch.float64
    )
    per_level = res.nats.reshape(9, copies)
    mean, se = per_level.mean(1), per_level.std(1) / math.sqrt(copies)
    assert ((mean - bound).abs() < 4 * se + 1e-3).all(), (mean - bound) / se
    # Jensen's gap log E e^phi - E phi, phi(w) = log p(x + Delta w), is Var(phi) / 2 to second order, with
    # Var(phi) = (x Delta / S)^2 / 12 + (Delta^2 / 2S)^2 / 180 for w ~ U(-1/2, 1/2).
    gap = log_mass - bound
    var_phi = (levels * delta / S) ** 2 / 12 + (delta**2 / (2 * S)) ** 2 / 180
    assert (gap >= 0).all() and float((gap - var_phi / 2).abs().max()) < 2e-3
    # Bits per dimension against the exact bound's (d = 1), within the same tolerance in bits.
    bits = res.bits_per_dim.reshape(9, copies)
    assert ((bits.mean(1) + bound / math.log(2)).abs() < (4 * se + 1e-3) / math.log(2)).all()


def test_dequantisation_checks_the_grid():
    x = torch.tensor([[0.1], [0.3]], dtype=torch.float64)
    with pytest.raises(ValueError, match="levels"):
        log_likelihood(GAUSS1.score(VP), VP, x, bins=5, data_range=(0.0, 1.0), seed=0)
    with pytest.raises(ValueError, match="bins"):
        log_likelihood(GAUSS1.score(VP), VP, x, bins=1, seed=0)
    with pytest.raises(ValueError, match="data_range"):
        log_likelihood(GAUSS1.score(VP), VP, x, bins=3, data_range=(1.0, 0.0), seed=0)


def test_nfe_is_counted(counting):
    model, calls = counting(GAUSS2.eps_model(VP))
    x = GAUSS2.sample(5, generator=torch.Generator().manual_seed(5))
    for kw, per_call in (({}, 2), ({"trace": "hutchinson", "n_probes": 3, "seed": 0}, 3)):
        calls.clear()
        res = log_likelihood(sd.EpsilonScore(model, VP), VP, x, **kw)
        assert res.nfe == len(calls) > 10
        assert res.vjps == per_call * res.nfe
        assert min(calls) >= VP.t_min - 1e-12 and max(calls) <= VP.T + 1e-12


def test_bad_input_raises_clear_errors():
    score = GAUSS2.score(VP)
    x = GAUSS2.sample(3, generator=torch.Generator().manual_seed(6))
    cases = [
        ({"trace": "hutchinsen"}, "trace must be one of"),
        ({"trace": "hutchinson", "probe": "normal"}, "probe must be one of"),
        ({"method": "rk4"}, "method must be one of"),
        ({"time": "sigma"}, "time must be one of"),
        ({"trace": "hutchinson", "n_probes": 0}, "n_probes"),
        ({"n_probes": 4}, "n_probes applies to trace='hutchinson' only"),
        ({"t_min": 0.0}, "t_min"),
        ({"t_min": 0.5, "T": 0.4}, "t_min"),
        ({"T": 1.5}, "sde.T"),
        ({"rtol": 0.0}, "rtol"),
        ({"max_steps": 0}, "max_steps"),
        ({"seed": 1, "generator": torch.Generator()}, "either generator or seed"),
        ({"prior_logp": lambda z: z}, "prior_logp must return shape"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            log_likelihood(score, VP, x, **kw)
    for bad in (x[0], x.long(), torch.full((3, 2), math.nan, dtype=torch.float64)):
        with pytest.raises(ValueError, match="x "):
            log_likelihood(score, VP, bad)
    with pytest.raises(ValueError, match="built for"):
        log_likelihood(score, sd.VESDE(), x)
    with pytest.raises(TypeError, match="Score"):
        log_likelihood(GAUSS2.eps_model(VP), VP, x)


def test_cli_likelihood(capsys):
    from scoresde.cli import main

    assert main(["likelihood", "--problem", "ring", "--n", "6", "--trace", "hutchinson", "--probes", "3"]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "vs exact log p_t_min" in out and "NFE" in out
    assert main(["likelihood", "--problem", "ring", "--n", "6", "--trace", "exakt"]) == 2
    assert "trace must be one of" in capsys.readouterr().err
    assert main(["likelihood", "--n", "6"]) == 2
    assert "exactly one of --problem" in capsys.readouterr().err


def test_progress_shows_the_integration_advancing_and_changes_nothing(capsys):
    """Issue 32: `scoresde likelihood` on 2,000 points ran 70 s without a line; the bar now moves with the solver."""
    ring = sd.get_problem("ring")
    x = ring.sample(16, generator=torch.Generator().manual_seed(0))
    quiet = log_likelihood(ring.score(VP), VP, x)
    shown = log_likelihood(ring.score(VP), VP, x, progress=True)
    assert torch.equal(quiet.nats, shown.nats) and quiet.nfe == shown.nfe
    err = capsys.readouterr().err
    assert "log-likelihood of 16 points, t from 0.001 to 1" in err and "100%" in err and "model calls" in err
