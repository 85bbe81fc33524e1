"""benchmarks/restart_probe.py's Restart run: with an exact score its exact forward jumps and ODE passes keep the
marginal (Xu et al. 2023: an exact jump and an exact solve leave p_t unchanged), and it spends
``N1 + K N2 + N3 + 1`` model calls."""

import sys
from pathlib import Path

import torch

import scoresde as sd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from restart_probe import restart  # noqa: E402


def test_restart_keeps_a_gaussian_marginal_and_counts_its_calls():
    sde = sd.VPSDE()
    target = sd.GaussianMixture(torch.tensor([[0.5, -0.5]]), torch.diag(torch.tensor([0.3, 0.1])).unsqueeze(0))
    score = target.score(sde)
    # a wide interval, sigma / alpha in (0.5, 3], where a wrong jump shows: measured on seeds 0 and 1 (n = 4,000),
    # the right jump gives means within 0.01 and variances 0.26-0.27 / 0.093 (dpm++2m's bias at these steps; the
    # standard errors are 0.007 / 0.002); without the alpha ratio the means move to 0.75 / -0.64, with a jump of
    # std sigma_hi - sigma_lo the variances fall to 0.08 / 0.03. (A jump whose variance omits the alpha^2 sigma_lo^2
    # term moves them by under 0.01: not caught at this size.)
    x, nfe = restart(score, sde, 4000, 2, n1=10, k=2, n2=8, n3=4, lo=0.5, hi=3.0, seed=0)
    assert nfe == 10 + 2 * 8 + 4 + 1
    assert torch.allclose(x.mean(0), torch.tensor([0.5, -0.5], dtype=x.dtype), atol=0.03)
    assert torch.allclose(x.var(0), torch.tensor([0.3, 0.1], dtype=x.dtype), atol=0.05)
    plain, nfe0 = restart(score, sde, 4000, 2, n1=19, k=0, n2=1, n3=1, lo=0.05, hi=0.3, seed=0)
    assert nfe0 == 21 and torch.isfinite(plain).all()
