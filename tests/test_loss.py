"""The denoising losses against closed forms.

For a single Gaussian ``x_0 ~ N(m, C)``, ``C = diag(c)``, ``(eps, x_t)`` is jointly Gaussian with
``Cov(eps, x_t) = sigma I`` and ``Cov(x_t) = alpha^2 C + sigma^2 I``, so the optimal eps predictor is
``E[eps | x_t] = sigma (alpha^2 C + sigma^2 I)^{-1} (x_t - alpha m)`` and its residual covariance is
``I - sigma^2 (alpha^2 C + sigma^2 I)^{-1}``. The minimal eps-MSE (averaged over the ``d`` coordinates) is

    L_eps(t) = 1/d (d - sigma^2 tr (alpha^2 C + sigma^2)^{-1}) = 1/d sum_i alpha^2 c_i / (alpha^2 c_i + sigma^2).

The exact x0 and v predictions follow from the exact eps (x0 = (x - sigma eps) / alpha, v = alpha eps - sigma x0),
so their errors are ``-sigma/alpha`` and ``(alpha^2 + sigma^2)/alpha`` times the eps error:
``L_x0 = sigma^2/alpha^2 L_eps`` and ``L_v = (alpha^2 + sigma^2)^2/alpha^2 L_eps``.

Monte Carlo estimates are compared with these values within 4 standard errors (measured from the per-sample
losses of the same draw; fixed seeds, so each check is deterministic).
"""

import math

import pytest
import torch
from scipy import integrate, stats

import scoresde as sd
from scoresde import loss as L

F64 = torch.float64
SDES = {"vp": sd.VPSDE(), "vp-cosine": sd.VPSDE(schedule="cosine"), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian(d=3):
    c = torch.tensor([0.25, 1.0, 2.5], dtype=F64)[:d]
    return sd.GaussianMixture(torch.tensor([[0.5, -1.0, 2.0]], dtype=F64)[:, :d], c[None, :]), c


def closed_form_eps_mse(sde, c, t):
    a2, s2 = float(sde.alpha_bar(t)), float(sde.marginal_std(t)) ** 2
    return float((a2 * c / (a2 * c + s2)).mean())


def exact_models(gmm, sde):
    """The exact eps, x0 and v predictions of ``gmm``'s marginals as model callables."""
    score = gmm.score(sde)

    def eps(x, t):
        return score.eps(x, t)

    def x0(x, t):
        return score.x0(x, t)

    def v(x, t):
        e, x0_hat = score.eps_and_x0(x, t)
        a = sde.alpha(t)[:, None].to(x)
        s = sde.marginal_std(t)[:, None].to(x)
        return a * e - s * x0_hat

    return {"eps": eps, "x0": x0, "v": v}


def mean_and_se(v):
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("t", [0.02, 0.3, 0.9])
def test_exact_prediction_attains_closed_form_minimum(sde_name, t):
    sde = SDES[sde_name]
    gmm, c = gaussian()
    n = 20_000
    x0 = gmm.sample(n, generator=gen(1))
    a2, s2 = float(sde.alpha_bar(t)), float(sde.marginal_std(t)) ** 2
    l_eps = closed_form_eps_mse(sde, c, t)
    want = {"eps": l_eps, "x0": s2 / a2 * l_eps, "v": (a2 + s2) ** 2 / a2 * l_eps}
    for pred, model in exact_models(gmm, sde).items():
        per = L.denoising_loss(
            model, sde, x0, prediction=pred, t=torch.full((n,), t, dtype=F64), generator=gen(2), reduction="none"
        )
        m, se = mean_and_se(per)
        assert abs(m - want[pred]) < 4 * se, (pred, m, want[pred], se)
    # the named wrappers are the same losses
    g = gen(3)
    e = L.eps_mse(exact_models(gmm, sde)["eps"], sde, x0[:100], t=torch.full((100,), t, dtype=F64), generator=g)
    g = gen(3)
    d = L.denoising_loss(exact_models(gmm, sde)["eps"], sde, x0[:100], t=torch.full((100,), t, dtype=F64), generator=g)
    assert torch.equal(e, d)


def test_exact_model_minimises_the_loss_on_a_mixture():
    """With common random numbers, loss(eps* + delta h) - loss(eps*) = 2 delta <h, eps* - eps> + delta^2 |h|^2 / d,
    and the cross term has mean zero because E[eps | x_t] = eps*: the difference must match delta^2 E|h|^2 / d."""
    sde = SDES["vp"]
    gmm = sd.problems.mixture(dim=4, n_modes=3, seed=5)
    exact = gmm.eps_model(sde)
    n = 20_000
    x0 = gmm.sample(n, generator=gen(7))
    delta = 0.2

    def h(x, t):
        return torch.sin(x) * t[:, None]

    def perturbed(x, t):
        return exact(x, t) + delta * h(x, t)

    def per_sample(model, seed=8):
        return L.eps_mse(model, sde, x0, generator=gen(seed), reduction="none")

    base, pert = per_sample(exact), per_sample(perturbed)
    # recompute the same x_t, t to get |h|^2 (the same generator stream)
    t, _ = L.sample_t(n, sde, generator=(g := gen(8)), dtype=F64)
    x_t, _ = sde.perturb(x0, t.double(), generator=g)
    excess = delta**2 * h(x_t, t).square().mean(1)
    m, se = mean_and_se(pert - base - excess)
    assert abs(m) < 4 * se
    assert float((pert - base).mean()) > 10 * float((pert - base).std() / math.sqrt(n))


def test_stratified_times_one_per_stratum():
    sde = SDES["vp"]
    t_eps = 1e-3
    for seed, batch in [(0, 1), (1, 7), (2, 64), (3, 1000)]:
        t, iw = L.sample_t(batch, sde, t_sampler="stratified", t_eps=t_eps, generator=gen(seed), dtype=F64)
        assert ((t >= t_eps) & (t <= sde.T)).all()
        strata = torch.floor((t - t_eps) / (sde.T - t_eps) * batch).long()
        assert torch.equal(strata.sort().values, torch.arange(batch))
        assert torch.equal(iw, torch.ones_like(iw))


@pytest.mark.parametrize("name", list(SDES))
def test_log_snr_rate_is_g2_over_sigma2(name):
    """The importance weight rests on d lambda / dt = -g^2 / sigma^2 (central differences, float64)."""
    sde = SDES[name]
    t = torch.linspace(0.01, 0.98 * sde.T, 50, dtype=F64)
    h = 1e-6
    fd = (sde.log_snr(t + h) - sde.log_snr(t - h)) / (2 * h)
    rate = sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2
    torch.testing.assert_close(-fd, rate, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", list(SDES))
def test_importance_sampler_is_uniform_in_log_snr(name):
    sde = SDES[name]
    t_eps = 1e-4
    n = 20_000
    t, iw = L.sample_t(n, sde, t_sampler="importance", t_eps=t_eps, generator=gen(11), dtype=F64)
    assert ((t >= t_eps) & (t <= sde.T)).all()
    lam_hi, lam_lo = float(sde.log_snr(t_eps)), float(sde.log_snr(sde.T))
    u = (lam_hi - sde.log_snr(t)) / (lam_hi - lam_lo)
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    # iw = p_uniform / q: E_q[iw] = 1, and iw * g^2/sigma^2 is the constant (lambda range) / (T - t_eps)
    m, se = mean_and_se(iw)
    assert abs(m - 1) < 4 * se
    rate = sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2
    torch.testing.assert_close(iw * rate, torch.full_like(iw, (lam_hi - lam_lo) / (sde.T - t_eps)), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", list(SDES))
def test_lognormal_sampler_draws_edm_noise_levels(name):
    """log(sigma / alpha) of the drawn times is N(P_mean, P_std^2) (Karras et al. 2022), with unit weights."""
    sde = SDES[name]
    t, iw = L.sample_t(20_000, sde, t_sampler="lognormal", lognormal=(-0.8, 0.9), generator=gen(3), dtype=F64)
    assert torch.equal(iw, torch.ones_like(iw)) and ((t >= L.DEFAULT_T_EPS) & (t <= sde.T)).all()
    log_sigma_hat = torch.log(sde.marginal_std(t) / sde.alpha(t))
    z = (log_sigma_hat + 0.8) / 0.9
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_min_snr_weights_the_implied_x0_error_by_min_snr_gamma(sde_name):
    """One x0 predictor written as an eps, x0 and v model: with min-SNR weighting all three losses equal
    min(SNR, gamma) |x0_hat - x0|^2 per sample (Hang et al. 2023), whatever the prediction."""
    sde = SDES[sde_name]
    gmm, _ = gaussian()
    x0 = gmm.sample(64, generator=gen(0))
    t = torch.linspace(0.01, 0.99, 64, dtype=F64)

    def x0_hat(x, t):
        return 0.7 * x + 0.1

    def coefs(t):
        return sde.alpha(t)[:, None].to(F64), sde.marginal_std(t)[:, None].to(F64)

    def as_eps(x, t):
        a, s = coefs(t)
        return (x - a * x0_hat(x, t)) / s

    def as_v(x, t):
        a, s = coefs(t)
        return a * as_eps(x, t) - s * x0_hat(x, t)

    gamma = 2.0
    losses = {}
    for prediction, model in (("eps", as_eps), ("x0", x0_hat), ("v", as_v)):
        losses[prediction] = L.denoising_loss(
            model,
            sde,
            x0,
            prediction=prediction,
            t=t,
            generator=gen(5),
            weighting="min-snr",
            snr_gamma=gamma,
            reduction="none",
        )
    x_t, _ = sde.perturb(x0, t, generator=gen(5))
    a, s = coefs(t)
    direct = (a[:, 0] ** 2 / s[:, 0] ** 2).clamp(max=gamma) * (x0_hat(x_t, t) - x0).square().mean(1)
    for prediction, value in losses.items():
        torch.testing.assert_close(value, direct, rtol=1e-9, atol=1e-12, msg=prediction)
    assert (L.min_snr_weight(sde, t, "x0", gamma) <= gamma).all()


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["unit", "likelihood"])
def test_every_t_sampler_estimates_the_same_objective(weighting):
    """1/(T - t_eps) int w(t) L_eps(t) dt by quadrature vs each sampler's estimate; importance sampling must also
    shrink the standard error of the likelihood-weighted loss."""
    sde = SDES["vp"]
    gmm, c = gaussian(2)
    t_eps, n = 1e-3, 40_000

    def integrand(t):
        w = 1.0 if weighting == "unit" else float(sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2)
        return w * closed_form_eps_mse(sde, c, t)

    want = integrate.quad(integrand, t_eps, sde.T, points=[0.01, 0.1], limit=200)[0] / (sde.T - t_eps)
    x0 = gmm.sample(n, generator=gen(21))
    ses = {}
    for sampler in ("uniform", "stratified", "importance"):  # lognormal changes the objective
        per = L.eps_mse(
            gmm.eps_model(sde),
            sde,
            x0,
            generator=gen(22),
            t_sampler=sampler,
            t_eps=t_eps,
            weighting=weighting,
            reduction="none",
        )
        m, ses[sampler] = mean_and_se(per)
        assert abs(m - want) < 4 * ses[sampler], (sampler, m, want, ses[sampler])
    if weighting == "likelihood":
        assert ses["importance"] < 0.5 * ses["uniform"]


def test_bad_inputs_raise_clear_errors():
    sde = SDES["vp"]
    x0 = torch.zeros(4, 2)

    def model(x, t):
        return x

    with pytest.raises(ValueError, match="prediction"):
        L.denoising_loss(model, sde, x0, prediction="score")
    with pytest.raises(ValueError, match="t_sampler"):
        L.eps_mse(model, sde, x0, t_sampler="sobol")
    with pytest.raises(ValueError, match="weighting"):
        L.eps_mse(model, sde, x0, weighting="snr")
    with pytest.raises(ValueError, match="t_eps"):
        L.eps_mse(model, sde, x0, t_eps=0.0)
    with pytest.raises(ValueError, match="model output has shape"):
        L.eps_mse(lambda x, t: x[:, :1], sde, x0)
    with pytest.raises(ValueError, match="x0 must be"):
        L.eps_mse(model, sde, torch.zeros(4))
    with pytest.raises(ValueError, match="y must be"):
        L.eps_mse(lambda x, t, y: x, sde, x0, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="t must be"):
        L.eps_mse(model, sde, x0, t=torch.zeros(3))
    with pytest.raises(ValueError, match="time must lie"):
        L.eps_mse(model, sde, x0, t=torch.full((4,), 1.5))


def test_labels_reach_the_model_and_draws_follow_the_generator():
    sde = SDES["vp"]
    x0 = torch.randn(8, 2, generator=gen(0))
    seen = {}

    def model(x, t, y):
        seen["y"] = y
        return torch.zeros_like(x)

    y = torch.arange(8)
    a = L.v_mse(model, sde, x0, y=y, generator=gen(5))
    assert torch.equal(seen["y"], y)
    b = L.v_mse(model, sde, x0, y=y, generator=gen(5))
    c = L.v_mse(model, sde, x0, y=y, generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("t_sampler", L.T_SAMPLERS)
@pytest.mark.parametrize("weighting", L.WEIGHTINGS)
def test_the_loss_makes_no_float64_on_a_device(t_sampler, weighting, dtype_trace):
    """On a device (here the meta device, which runs no kernels) the loss makes no float64 tensor, since Apple MPS
    has none: times drawn on the CPU arrive in x0's dtype and the coefficients follow it. On the CPU they stay
    float64."""
    for device in ("meta", "cpu"):
        net = torch.nn.Linear(3, 2, device=device)
        model = lambda x, t, net=net: net(torch.cat([x, t[:, None]], 1))  # noqa: E731
        with dtype_trace() as mode:
            loss = L.denoising_loss(
                model,
                sd.VPSDE(),
                torch.zeros(8, 2, device=device),
                prediction="v",
                t_sampler=t_sampler,
                weighting=weighting,
            )
        assert loss.device.type == device and loss.dtype == torch.float32
        assert ((device, torch.float64) in mode.seen) == (device == "cpu")
