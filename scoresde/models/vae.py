"""A small convolutional VAE for 8x8 images: the likelihood-based baseline the diffusion model is compared with.

Kingma & Welling 2014 (*Auto-Encoding Variational Bayes*): an encoder ``q(z | x) = N(mu(x), diag s(x)^2)``,
a prior ``p(z) = N(0, I)`` and a decoder ``p(x | z) = N(m(z), diag exp(2 log_scale))`` with a learned
per-pixel log-scale, trained by maximising the evidence lower bound

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))  <=  log p(x),

estimated with one reparameterised draw per example. For evaluation the importance-weighted bound of Burda,
Grosse & Salakhutdinov 2016 (*IWAE*, eq. 8), ``log 1/K sum_k p(x, z_k) / q(z_k | x)``, tightens the bound
as ``K`` grows. Both are densities of continuous ``x``: for discrete pixels they are applied to uniformly
dequantised data, exactly as the diffusion model's probability-flow likelihood is, so the two are compared
in the same bits per dimension.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["VAE"]

_LOG_2PI = math.log(2 * math.pi)


def _gauss_logpdf(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Sum over all but the batch dimension of ``log N(x; mean, exp(log_std)^2)``."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * _LOG_2PI).flatten(1).sum(1)


class VAE(nn.Module):
    """Convolutional VAE for ``(batch, channels, size, size)`` images (``size`` divisible by 4).

    Args:
        channels, size: image shape.
        latent: dimension of ``z``.
        width: channels of the first convolution (the second has ``2 * width``).
    """

    def __init__(self, channels: int = 1, size: int = 8, latent: int = 16, width: int = 64):
        super().__init__()
        if size % 4:
            raise ValueError(f"VAE: size must be divisible by 4, got {size}")
        self.config = dict(arch="vae", channels=channels, size=size, latent=latent, width=width)
        s4, w2 = size // 4, 2 * width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, w2, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(w2 * s4 * s4, 2 * latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, w2 * s4 * s4),
            nn.SiLU(),
            nn.Unflatten(1, (w2, s4, s4)),
            nn.ConvTranspose2d(w2, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        self.log_scale = nn.Parameter(torch.full((channels, size, size), -1.0))
        self.latent = latent

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log_std)`` of ``q(z | x)``."""
        mu, log_std = self.encoder(x).chunk(2, dim=1)
        return mu, log_std.clamp(-10, 5)

    def _log_weights(self, x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        """``log p(x, z_j) - log q(z_j | x)`` for ``k`` draws ``z_j ~ q``, shape ``(k, batch)``."""
        mu, log_std = self.encode(x)
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + log_std.exp() * eps  # (k, batch, latent)
        mean = self.decoder(z.flatten(0, 1)).unflatten(0, (k, x.shape[0]))
        log_px = _gauss_logpdf(
            x.expand(k, *x.shape).flatten(0, 1), mean.flatten(0, 1), self.log_scale.expand_as(mean.flatten(0, 1))
        ).unflatten(0, (k, x.shape[0]))
        log_pz = (-0.5 * z.square() - 0.5 * _LOG_2PI).sum(-1)
        log_qz = (-0.5 * eps.square() - log_std - 0.5 * _LOG_2PI).sum(-1)
        return log_px + log_pz - log_qz

    def elbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-example ELBO in nats, with the KL term in closed form and one draw for the reconstruction."""
        mu, log_std = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        mean = self.decoder(mu + log_std.exp() * eps)
        rec = _gauss_logpdf(x, mean, self.log_scale.expand_as(mean))
        kl = 0.5 * (mu.square() + (2 * log_std).exp() - 1 - 2 * log_std).sum(1)
        return rec - kl

    def iwae(self, x: Tensor, k: int = 100, generator: torch.Generator | None = None, chunk: int = 100) -> Tensor:
        """Per-example importance-weighted bound with ``k`` samples (Burda et al. 2016, eq. 8), in nats."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        parts = [self._log_weights(x, min(chunk, k - i), generator) for i in range(0, k, chunk)]
        return torch.logsumexp(torch.cat(parts), dim=0) - math.log(k)

    def forward(self, x: Tensor) -> Tensor:
        """The decoder mean of the posterior mean: a deterministic reconstruction."""
        return self.decoder(self.encode(x)[0])
