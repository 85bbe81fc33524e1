"""Parameterisations: eps / x0 / v / denoiser predictions <-> eps, x0 and score, and the model-call contract.

The round trips build x = alpha x0 + sigma eps from known x0 and eps at per-sample t, and a model that
returns the exact prediction of its parameterisation computed from the (x, t) it receives; each wrapper
must then give back eps, x0 and score = -eps / sigma. In float64 the conversions are a few operations
with at most one cancellation (e.g. x0 = (x - sigma eps) / alpha with alpha(T) ~ 6e-3 for VP), so the
relative error is ~1e-16 / 6e-3 ~ 1e-14; 1e-10 leaves a wide margin.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as sd

F64 = torch.float64

SDES = {
    "vp": sd.VPSDE(),
    "vp-cosine": sd.VPSDE(schedule="cosine"),
    "subvp": sd.SubVPSDE(),
    "ve": sd.VESDE(),
}
PARAMS = ["eps", "x0", "v", "denoiser"]
WRAPPERS = {"eps": sd.EpsilonScore, "x0": sd.DataScore, "v": sd.VScore, "denoiser": sd.DenoiserScore}
RTOL = 1e-10


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel_norm_err(got, want):
    return float((got - want).norm() / want.norm())


def _coefs(sde, t, ndim):
    a = sde.alpha(t).reshape(-1, *([1] * (ndim - 1)))
    s = sde.marginal_std(t).reshape(-1, *([1] * (ndim - 1)))
    return a, s


class Case:
    """Known x0, eps, per-sample t and x = alpha x0 + sigma eps, with the exact model of each kind."""

    def __init__(self, sde, seed, shape=(32, 3, 2), t_lo=None):
        g = gen(seed)
        self.sde = sde
        self.x0 = torch.randn(shape, generator=g, dtype=F64)
        self.eps = torch.randn(shape, generator=g, dtype=F64)
        lo = sde.t_min if t_lo is None else t_lo
        self.t = lo + (sde.T - lo) * torch.rand(shape[0], generator=g, dtype=F64)
        a, s = _coefs(sde, self.t, len(shape))
        self.x = a * self.x0 + s * self.eps
        self.calls = []

    def _check_inputs(self, x, t):
        self.calls.append((x, t))
        assert t.shape == (x.shape[0],)

    def model(self, kind):
        sde = self.sde

        def eps_model(x, t):
            self._check_inputs(x, t)
            a, s = _coefs(sde, t, x.ndim)
            return (x - a * self.x0) / s  # = eps at the true (x, t)

        def x0_model(x, t):
            self._check_inputs(x, t)
            a, s = _coefs(sde, t, x.ndim)
            return (x - s * self.eps) / a  # = x0 at the true (x, t)

        def v_model(x, t):
            self._check_inputs(x, t)
            a, s = _coefs(sde, t, x.ndim)
            return a * self.eps - s * self.x0

        def denoiser(x_hat, sigma_hat):
            # Karras et al.: x_hat = x / alpha = x0 + sigma_hat eps, so D(x_hat, sigma_hat) = x_hat - sigma_hat eps
            self._check_inputs(x_hat, sigma_hat)
            return x_hat - sigma_hat.reshape(-1, *([1] * (x_hat.ndim - 1))) * self.eps

        return {"eps": eps_model, "x0": x0_model, "v": v_model, "denoiser": denoiser}[kind]


@pytest.mark.parametrize("kind", PARAMS)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_round_trip(kind, sde_name):
    sde = SDES[sde_name]
    case = Case(sde, seed=100 * PARAMS.index(kind) + list(SDES).index(sde_name))
    score = WRAPPERS[kind](case.model(kind), sde)
    _, s = _coefs(sde, case.t, case.x.ndim)
    want_score = -case.eps / s

    assert rel_norm_err(score.eps(case.x, case.t), case.eps) <= RTOL
    assert rel_norm_err(score.x0(case.x, case.t), case.x0) <= RTOL
    assert rel_norm_err(score.score(case.x, case.t), want_score) <= RTOL
    assert rel_norm_err(score(case.x, case.t), want_score) <= RTOL
    e, x0 = score.eps_and_x0(case.x, case.t)
    assert rel_norm_err(e, case.eps) <= RTOL
    assert rel_norm_err(x0, case.x0) <= RTOL
    # per-sample relative errors too (norms could hide one bad row at a small-sigma time)
    err = ((score.eps(case.x, case.t) - case.eps).flatten(1).norm(dim=1) / case.eps.flatten(1).norm(dim=1)).max()
    assert float(err) <= RTOL


@pytest.mark.parametrize("sde_name", list(SDES))
def test_model_receives_the_right_inputs(sde_name):
    """(x, t) models get x itself and t of shape (batch,); the denoiser gets x / alpha and sigma / alpha."""
    sde = SDES[sde_name]
    case = Case(sde, seed=3)
    for kind in ("eps", "x0", "v"):
        case.calls.clear()
        WRAPPERS[kind](case.model(kind), sde).score(case.x, case.t)
        (x_in, t_in), *rest = case.calls
        assert not rest
        assert torch.equal(x_in, case.x) and torch.equal(t_in, case.t)
    case.calls.clear()
    sd.DenoiserScore(case.model("denoiser"), sde).score(case.x, case.t)
    ((x_hat, sigma_hat),) = case.calls
    a, s = _coefs(sde, case.t, case.x.ndim)
    torch.testing.assert_close(x_hat, case.x / a, rtol=1e-14, atol=0)
    torch.testing.assert_close(sigma_hat, (s / a).flatten(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", PARAMS)
def test_score_satisfies_tweedie(kind):
    """Cross-check between wrappers: all four, given exact models, agree on score, and score = -eps / sigma
    agrees with Tweedie's formula x0 = (x + sigma^2 score) / alpha."""
    sde = SDES["vp"]
    case = Case(sde, seed=11)
    score = WRAPPERS[kind](case.model(kind), sde)
    a, s = _coefs(sde, case.t, case.x.ndim)
    tweedie_x0 = (case.x + s**2 * score(case.x, case.t)) / a
    assert rel_norm_err(tweedie_x0, case.x0) <= RTOL


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(PARAMS), sde_name=st.sampled_from(list(SDES)))
def test_round_trip_property(seed, kind, sde_name):
    """Round trip at random data, noise and times, including times right down to 1e-5 (tiny sigma)."""
    sde = SDES[sde_name]
    case = Case(sde, seed=seed, shape=(8, 5), t_lo=1e-5)
    score = WRAPPERS[kind](case.model(kind), sde)
    e, x0 = score.eps_and_x0(case.x, case.t)
    # At t = 1e-5 DataScore/DenoiserScore compute eps = (x - alpha x0) / sigma with sigma >= 1e-3 (VP) or
    # 1.3e-4 (VE): cancellation costs |x| / sigma * 1e-16 <= 1e-12 relative, within RTOL.
    assert rel_norm_err(e, case.eps) <= RTOL
    assert rel_norm_err(x0, case.x0) <= RTOL


# --------------------------------------------------------------------------------------------------
# The call contract
# --------------------------------------------------------------------------------------------------
def _zero_model(x, t):
    return torch.zeros_like(x)


@pytest.mark.parametrize("kind", PARAMS)
def test_nfe_counts_one_per_call(kind):
    sde = SDES["vp"]
    score = WRAPPERS[kind](_zero_model, sde)
    x = torch.randn(4, 2, generator=gen(0), dtype=F64)
    assert score.nfe == 0
    score.eps(x, 0.5)
    assert score.nfe == 1
    score.x0(x, 0.5)
    assert score.nfe == 2
    score.score(x, 0.5)
    assert score.nfe == 3
    score(x, 0.5)
    assert score.nfe == 4
    score.eps_and_x0(x, 0.5)
    assert score.nfe == 5


@pytest.mark.parametrize("kind", PARAMS)
def test_nfe_counts_model_calls_exactly(kind, counting):
    model, calls = counting(lambda x, t: torch.zeros_like(x))
    score = WRAPPERS[kind](model, SDES["ve"])
    x = torch.ones(3, 2, dtype=F64)
    for _ in range(7):
        score.eps_and_x0(x, 0.3)
        score(x, 0.3)
    assert score.nfe == len(calls) == 14


@pytest.mark.parametrize("kind", PARAMS)
def test_scalar_time_broadcasts(kind):
    sde = SDES["subvp"]
    case = Case(sde, seed=5)
    seen = []

    def model(x, t):
        seen.append(t)
        return case.model(kind)(x, t)

    score = WRAPPERS[kind](model, sde)
    x = case.x
    b = x.shape[0]
    per_sample = score.eps(x, torch.full((b,), 0.25, dtype=F64))
    for t in (0.25, torch.tensor(0.25, dtype=F64)):
        out = score.eps(x, t)
        assert seen[-1].shape == (b,) and seen[-1].dtype == F64
        torch.testing.assert_close(out, per_sample, rtol=0, atol=0)
    if kind != "denoiser":
        assert torch.equal(seen[-1], torch.full((b,), 0.25, dtype=F64))


@pytest.mark.parametrize("kind", PARAMS)
def test_float32_in_float32_out(kind):
    sde = SDES["vp"]
    score = WRAPPERS[kind](_zero_model, sde)
    x = torch.randn(4, 2, generator=gen(0))
    for out in (score.eps(x, 0.5), score.x0(x, 0.5), score(x, 0.5)):
        assert out.dtype == torch.float32 and out.shape == x.shape


@pytest.mark.parametrize("kind", PARAMS)
@pytest.mark.parametrize(
    "bad_output",
    [
        lambda x: x[:, :1],
        lambda x: x.flatten(),
        lambda x: x.unsqueeze(0),
        lambda x: x.tolist(),
        lambda x: None,
    ],
    ids=["narrow", "flat", "extra-dim", "list", "none"],
)
def test_wrong_model_output_raises(kind, bad_output):
    score = WRAPPERS[kind](lambda x, t: bad_output(x), SDES["vp"])
    x = torch.randn(4, 2, generator=gen(0), dtype=F64)
    with pytest.raises(ValueError, match="model output has shape"):
        score.eps(x, 0.5)


@pytest.mark.parametrize("kind", PARAMS)
@pytest.mark.parametrize(
    "bad_t", [torch.full((4, 1), 0.5), torch.full((5,), 0.5), torch.full((2, 4), 0.5), torch.full((3,), 0.5)]
)
def test_wrong_time_shape_raises(kind, bad_t):
    score = WRAPPERS[kind](_zero_model, SDES["vp"])
    x = torch.randn(4, 2, generator=gen(0), dtype=F64)
    with pytest.raises(ValueError, match=r"t must be a scalar or of shape \(batch,\)"):
        score(x, bad_t)
    assert score.nfe == 0  # rejected before the model is called


@pytest.mark.parametrize("kind", PARAMS)
def test_scalar_x_raises(kind):
    score = WRAPPERS[kind](_zero_model, SDES["vp"])
    with pytest.raises(ValueError, match="leading batch dimension"):
        score(torch.tensor(1.0), 0.5)


@pytest.mark.parametrize("kind", PARAMS)
@pytest.mark.parametrize("not_callable", [3, "model", None, torch.zeros(2)])
def test_non_callable_model_raises(kind, not_callable):
    with pytest.raises(TypeError, match="model must be callable"):
        WRAPPERS[kind](not_callable, SDES["vp"])


def test_repr_names_class_and_sde():
    assert repr(sd.VScore(_zero_model, sd.VESDE())) == "VScore(VESDE(sigma_min=0.01, sigma_max=50.0))"
