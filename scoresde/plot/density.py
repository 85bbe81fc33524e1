"""Log-densities on a 2-D grid (PF-ODE against exact) and image rows side by side."""

from __future__ import annotations

from torch import Tensor

from ._mpl import pyplot

__all__ = ["plot_log_density", "plot_image_rows"]


def plot_log_density(logp_model: Tensor, logp_exact: Tensor, lim: float, *, floor: float = 12.0, title: str = ""):
    """Three panels for ``n x n`` grids of log-densities on ``[-lim, lim]^2``: exact, model (e.g. through the
    PF-ODE) and their difference, the colour range ``floor`` nats below the maximum. Returns the Figure."""
    plt = pyplot()
    n = int(round(logp_exact.numel() ** 0.5))
    ex, mo = logp_exact.reshape(n, n).double(), logp_model.reshape(n, n).double()
    top = float(ex.max())
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.6))
    ext = (-lim, lim, -lim, lim)
    for ax, z, name in ((axes[0], ex, "exact log p"), (axes[1], mo, "PF-ODE log p")):
        im = ax.imshow(z.clamp_min(top - floor).numpy(), extent=ext, origin="lower", cmap="viridis", vmin=top - floor)
        ax.set(title=name, xticks=[], yticks=[])
        fig.colorbar(im, ax=ax, shrink=0.8)
    diff = (mo - ex).numpy()
    m = max(float(abs(diff).max()), 1e-6)
    im = axes[2].imshow(diff, extent=ext, origin="lower", cmap="RdBu_r", vmin=-m, vmax=m)
    axes[2].set(title="PF-ODE - exact (nats)", xticks=[], yticks=[])
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_image_rows(rows: dict, *, value_range=(-1.0, 1.0), ncol: int = 16):
    """One row of images per entry of ``rows`` ``{label: (n, 1, H, W)}`` (the first ``ncol`` of each). Returns the
    Figure."""
    plt = pyplot()
    lo, hi = value_range
    fig, axes = plt.subplots(len(rows), ncol, figsize=(0.62 * ncol + 1.2, 0.7 * len(rows)), squeeze=False)
    for r, (label, x) in enumerate(rows.items()):
        img = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
        for c in range(ncol):
            ax = axes[r][c]
            ax.set(xticks=[], yticks=[])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < img.shape[0]:
                ax.imshow(img[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.12, right=0.99, top=0.98, bottom=0.02)
    return fig
