"""Benchmark and sample figures: NFE against sample quality (the floor as a band), image grids, point clouds."""

from __future__ import annotations

import io
import math
from pathlib import Path

from ..util import atomic_write_bytes

__all__ = ["plot_nfe_quality", "save_image_grid", "save_points"]


def plot_nfe_quality(rows: list[dict], path: str | Path, metric: str = "mode_swd") -> None:
    """Log-log NFE vs ``metric``: one line per method (ours solid, peers dashed), floor mean +- std shaded; a fitted
    method is placed at its amortised NFE (``nfe_amortised``: its fit's calls spread over the run's samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    if not problems:
        return
    fig, axes = plt.subplots(1, len(problems), figsize=(6.5 * len(problems), 5), squeeze=False)
    default = metric
    for ax, pname in zip(axes[0], problems, strict=True):
        sub = [r for r in rows if r["problem"] == pname]
        metric = sub[0].get("primary", default) if default == "mode_swd" else default
        cmap = plt.get_cmap("tab20")
        for i, method in enumerate(dict.fromkeys(r["method"] for r in sub)):
            pts = sorted(
                (float(r.get("nfe_amortised") or r["nfe"]), r[metric])
                for r in sub
                if r["method"] == method and not math.isnan(r[metric])
            )
            if not pts:
                continue
            peer = sub[[r["method"] for r in sub].index(method)]["source"] == "peer"
            style = dict(ls="--" if peer else "-", marker="os^vDP"[i % 6], ms=3.5, lw=1.2, color=cmap(i % 20))
            ax.plot(*zip(*pts, strict=True), label=method, **style)
        f, fs = sub[0][f"{metric}_floor"], sub[0][f"{metric}_floor_std"]
        ax.axhspan(max(f - fs, f * 1e-3), f + fs, color="0.8", zorder=0, label="two-sample floor")
        ax.axhline(f, color="0.5", lw=0.8, zorder=0)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="NFE per sample (counted model calls, fits amortised)",
            ylabel=metric.replace("_", " "),
        )
        ax.set_title(f"{pname} (d = {sub[0]['dim']}, n = {sub[0]['n']})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _save_fig(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=fig.dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def save_image_grid(x, path: str | Path, nrow: int | None = None, value_range=(-1.0, 1.0), titles=None) -> None:
    """Save ``(n, C, H, W)`` images (C = 1 grey or 3 RGB, in ``value_range``) as one grid image, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (n, 1 or 3, H, W), got {tuple(x.shape)}")
    n = x.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    lo, hi = value_range
    img = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    fig, axes = plt.subplots(ncol, nrow, figsize=(0.8 * nrow, 0.8 * ncol + (0.2 if titles else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(img[i, :, :, 0] if img.shape[-1] == 1 else img[i], cmap="gray", vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=6, pad=1)
    fig.subplots_adjust(wspace=0.05, hspace=0.3 if titles else 0.05, left=0, right=1, bottom=0, top=1)
    fig.dpi = 100
    _save_fig(fig, path)


def save_points(x, path: str | Path, reference=None, title: str = "") -> None:
    """Scatter ``(n, 2)`` points (and optional reference points in grey), saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"points must be (n, 2), got {tuple(x.shape)}")
    fig, ax = plt.subplots(figsize=(5, 5))
    if reference is not None:
        ax.scatter(*reference.detach().cpu().T, s=1, c="0.7", alpha=0.5, label="data")
    ax.scatter(*x.detach().float().cpu().T, s=1, c="C0", alpha=0.6, label="samples")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", markerscale=5)
    _save_fig(fig, path)
