"""Inpainting (replacement and RePaint) against closed-form Gaussian conditionals."""

import pytest
import torch

import scoresde as sd
from scoresde.conditioning import inpaint

RHO = 0.9
CORR = sd.GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, RHO], [RHO, 1.0]]]))


def _known(n, value=1.5):
    y = torch.zeros(n, 2, dtype=torch.float64)
    y[:, 0] = value
    return y, torch.tensor([True, False])


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
