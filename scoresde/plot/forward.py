"""The forward process: closed-form marginals against simulation, images being noised, schedules and the SNR.

For ``dx = f(t) x dt + g(t) dW`` the marginal is ``x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)`` (Song et al. 2021,
eq. 29 for VP); :func:`simulate_forward` integrates the SDE itself by Euler-Maruyama so the two can be compared.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._mpl import pyplot

__all__ = [
    "simulate_forward",
    "plot_forward",
    "plot_noising",
    "plot_schedules",
    "plot_variance_recursion",
]


def simulate_forward(sde, x0: Tensor, ts, steps: int = 1000, generator: torch.Generator | None = None) -> Tensor:
    """Euler-Maruyama for the forward SDE from ``x0`` at ``t = 0``: the states at each time of ``ts``,
    ``(len(ts), *x0.shape)``. ``steps`` uniform steps span ``[0, max(ts)]``, each time of ``ts`` landed on exactly."""
    ts = sorted(float(t) for t in ts)
    grid = sorted(set(torch.linspace(0, ts[-1], steps + 1, dtype=torch.float64).tolist()) | set(ts))
    x, out = x0.double().clone(), {}
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        dt = b - a
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + float(sde.drift_coef(a)) * x * dt + float(sde.diffusion(a)) * math.sqrt(dt) * z
        if b in ts:
            out[b] = x.clone()
    if 0.0 in ts:
        out[0.0] = x0.double().clone()
    return torch.stack([out[t] for t in ts]).to(x0.dtype)


def plot_forward(mixture, sde, ts, *, n: int = 2000, steps: int = 500, seed: int = 0, lim: float = 4.5):
    """Top row: Euler-Maruyama simulation of the forward SDE from ``n`` draws of a 2-D ``mixture`` (dots) over the
    exact marginal ``log p_t`` (contours); bottom row: the histogram of the simulated first coordinate against the
    exact marginal density of that coordinate. Returns the Figure."""
    import numpy as np

    plt = pyplot()
    g = torch.Generator().manual_seed(seed)
    ts = sorted(float(t) for t in ts)
    x0 = mixture.sample(n, generator=g)
    sims = simulate_forward(sde, x0, ts, steps=steps, generator=g)
    fig, axes = plt.subplots(2, len(ts), figsize=(3.0 * len(ts), 6.0), squeeze=False)
    grid = torch.linspace(-lim, lim, 120, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    for c, t in enumerate(ts):
        ax = axes[0][c]
        logp = mixture.log_prob(pts, t, sde).reshape(120, 120).numpy()
        ax.contourf(grid.numpy(), grid.numpy(), logp, levels=np.linspace(logp.max() - 10, logp.max(), 11), cmap="Blues")
        ax.scatter(*sims[c, :500].T.numpy(), s=1.5, c="C3", alpha=0.6)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[], title=f"t = {t:g}")
        ax = axes[1][c]
        ax.hist(sims[c, :, 0].numpy(), bins=60, range=(-lim, lim), density=True, color="C3", alpha=0.5, label="SDE")
        a, s = float(sde.alpha(t)), float(sde.marginal_std(t))
        var = a**2 * mixture.covs[:, 0, 0] + s**2
        mean = a * mixture.means[:, 0]
        dens = (mixture.weights * torch.exp(-0.5 * (grid[:, None] - mean) ** 2 / var) / (2 * math.pi * var).sqrt()).sum(
            1
        )
        ax.plot(grid.numpy(), dens.numpy(), "k", lw=1.2, label="closed form")
        ax.set(xlim=(-lim, lim), yticks=[], xlabel="x_1")
    axes[0][0].set_ylabel("simulated (dots) on exact p_t", fontsize=9)
    axes[1][0].legend(fontsize=7)
    fig.suptitle(f"forward process, Euler-Maruyama ({steps} steps) vs closed-form marginal; {sde!r}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_noising(images: Tensor, sde, ts, *, seed: int = 0, value_range=(-1.0, 1.0)):
    """Rows: images ``(n, 1, H, W)``; columns: ``x_t = alpha(t) x_0 + sigma(t) eps`` at each time of ``ts``, the
    same ``eps`` in every column. Returns the Figure."""
    plt = pyplot()
    ts = [float(t) for t in ts]
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=images.dtype)
    lo, hi = value_range
    fig, axes = plt.subplots(images.shape[0], len(ts), figsize=(1.1 * len(ts), 1.15 * images.shape[0]), squeeze=False)
    for c, t in enumerate(ts):
        a, s = float(sde.alpha(t)), float(sde.marginal_std(t))
        xt = a * images + s * eps
        for r in range(images.shape[0]):
            ax = axes[r][c]
            ax.imshow(xt[r, 0].numpy(), cmap="gray", vmin=lo - 1, vmax=hi + 1)
            ax.axis("off")
            if r == 0:
                ax.set_title(f"t = {t:g}", fontsize=8)
    fig.tight_layout(pad=0.2)
    return fig


def plot_schedules(sdes: dict):
    """Four panels over ``t``: ``alpha(t)``, ``sigma(t)``, ``alpha^2 + sigma^2`` (1 for VP: variance preserving)
    and the log-SNR ``log(alpha^2 / sigma^2)``, one line per entry of ``sdes`` ``{label: SDE}``. Returns the
    Figure."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for label, sde in sdes.items():
        t = torch.linspace(sde.t_min, sde.T, 300, dtype=torch.float64)
        a, s = sde.alpha(t), sde.marginal_std(t)
        for ax, y in zip(axes, (a, s, a**2 + s**2, sde.log_snr(t)), strict=True):
            ax.plot(t.numpy(), y.numpy(), label=label)
    titles = ("alpha(t)  (signal)", "sigma(t)  (noise)", "alpha^2 + sigma^2", "log SNR = log(alpha^2 / sigma^2)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xlabel="t")
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_variance_recursion(betas: Tensor, var0=(0.25, 1.0, 4.0)):
    """DDPM's step ``x_k = sqrt(1 - beta_k) x_{k-1} + sqrt(beta_k) z`` keeps the variance recursion
    ``v_k = (1 - beta_k) v_{k-1} + beta_k`` at 1 once it reaches it (and pulls any start towards 1), while
    ``x_k = x_{k-1} + sqrt(beta_k) z`` (no square root on the signal) lets it grow like ``sum beta``. Returns the
    Figure."""
    plt = pyplot()
    betas = torch.as_tensor(betas, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    k = range(len(betas) + 1)
    for v0 in var0:
        vp, ve = [v0], [v0]
        for b in betas.tolist():
            vp.append((1 - b) * vp[-1] + b)
            ve.append(ve[-1] + b)
        (line,) = ax.plot(k, vp, label=f"sqrt(1 - beta) x + sqrt(beta) z, Var x_0 = {v0:g}")
        ax.plot(k, ve, "--", color=line.get_color(), lw=0.8)
    ax.plot([], [], "k--", lw=0.8, label="x + sqrt(beta) z (dashed)")
    ax.set(xlabel="step k", ylabel="Var x_k", yscale="log", title="the variance recursion")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
