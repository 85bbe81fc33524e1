"""The VAE baseline: its bounds are estimates of the right quantities."""

import math

import pytest
import torch

from scoresde.models.vae import VAE, _gauss_logpdf


def _vae():
    torch.manual_seed(0)
    return VAE(latent=4, width=8).double()


def test_gauss_logpdf_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x, m, ls = (torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ref = torch.distributions.Normal(m, ls.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(_gauss_logpdf(x, m, ls), ref)


def test_elbo_closed_form_kl_agrees_with_the_one_sample_iwae():
    # iwae with k = 1 is the ELBO with a Monte Carlo KL; the means over draws agree within sampling error.
    vae = _vae()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        a = vae.elbo(x.repeat(2000, 1, 1, 1), g).view(2000, 3)
        b = vae._log_weights(x, 2000, g)  # 2000 independent one-sample bounds
    se = ((a.var(0) + b.var(0)) / 2000).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() < 4 * se).all()


def test_iwae_bound_tightens_with_k():
    vae = _vae()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        b1 = torch.stack([vae.iwae(x, 1, torch.Generator().manual_seed(s)) for s in range(20)]).mean(0)
        b100 = torch.stack([vae.iwae(x, 100, torch.Generator().manual_seed(s)) for s in range(20)]).mean(0)
    assert (b100 > b1).all()


def test_training_raises_the_elbo():
    vae = VAE(latent=4, width=8)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 8, 8, generator=g) > 0.5).float() * 2 - 1
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    with torch.no_grad():
        before = vae.elbo(x, torch.Generator().manual_seed(9)).mean()
    for _ in range(100):
        loss = -vae.elbo(x, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = vae.elbo(x, torch.Generator().manual_seed(9)).mean()
    assert after > before + 64 * math.log(2)  # at least one nat per pixel better than the start


def test_bad_sizes():
    with pytest.raises(ValueError, match="divisible by 4"):
        VAE(size=6)
    with pytest.raises(ValueError, match="k must be"):
        _vae().iwae(torch.zeros(1, 1, 8, 8, dtype=torch.float64), 0)
