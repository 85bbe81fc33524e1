"""What a user watches during a run: the loss curve and samples of the EMA model, as PNGs at every checkpoint.

:func:`write_pngs` writes ``<out>/loss.png`` (every step's loss, faint, and its running mean over
``max(1, steps // 50)`` steps, log scale) and ``<out>/samples.png`` (2-D data: a scatter of 2,000 samples over
2,000 training points; images: a grid of 64, or of 100 with one row per class for a class-conditional model).
Both are written atomically (:func:`scoresde.util.atomic_write_bytes`), so a viewer never reads half a file.

The samples come from :func:`ddim_preview`, a 25-step deterministic DDIM (Song, Meng & Ermon 2021, eq. 12 with
``eta = 0``) written here on the model's ``x0`` / ``eps`` predictions: training does not import the sampling
core's solvers. It draws its noise from its own generator (seed 0), so writing the pictures leaves every state
of the run untouched and a resumed run stays bit for bit the same.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from ..sde import SDE
from .pretrained import make_score

__all__ = ["write_pngs", "ddim_preview"]


@torch.no_grad()
def ddim_preview(
    model: nn.Module, sde: SDE, prediction: str, shape: tuple[int, ...], steps: int = 25, y: Tensor | None = None
) -> Tensor:
    """``shape`` samples of ``model`` by deterministic DDIM on ``steps`` uniform times from ``T`` to ``sde.t_min``,
    finishing with the data prediction at the last time; labels ``y`` for a class-conditional model."""
    score = make_score(model, sde, prediction, y=y)
    p = next(model.parameters())
    g = torch.Generator(device=p.device).manual_seed(0)
    x = torch.randn(shape, generator=g, device=p.device, dtype=p.dtype) * float(sde.marginal_std(sde.T))
    ts = torch.linspace(float(sde.T), float(sde.t_min), steps + 1, dtype=torch.float64)
    x0 = x
    for k in range(steps):
        eps, x0 = score.eps_and_x0(x, float(ts[k]))
        if k + 1 < steps:
            t_next = ts[k + 1]
            x = float(sde.alpha(t_next)) * x0 + float(sde.marginal_std(t_next)) * eps
    return x0


def _pyplot():
    from ..plot._mpl import pyplot  # Agg, but a notebook's inline backend is kept (training inside a notebook)

    return pyplot()


def _save(fig, path: Path) -> None:
    import io

    from ..util import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _loss_png(losses: list[float], path: Path, title: str) -> None:
    plt = _pyplot()
    v = torch.tensor(losses, dtype=torch.float64)
    w = max(1, len(losses) // 50)
    smooth = torch.nn.functional.avg_pool1d(v[None, None], w, stride=1)[0, 0] if len(losses) >= w else v
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = torch.arange(1, len(losses) + 1)
    ax.plot(steps, v, lw=0.5, alpha=0.3, color="C0", label="loss per step")
    ax.plot(steps[w - 1 :], smooth, lw=1.5, color="C1", label=f"running mean of {w}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    _save(fig, path)


def _samples_png(x: Tensor, path: Path, title: str, reference: Tensor | None) -> None:
    plt = _pyplot()
    x = x.detach().float().cpu()
    if x.ndim == 2 and x.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        if reference is not None:
            ax.scatter(*reference.float().cpu().T, s=1, c="0.75", alpha=0.5, label="training data")
        ax.scatter(*x.T, s=1, c="C0", alpha=0.6, label="samples (EMA)")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=5)
    else:
        n = x.shape[0]
        nrow = 10 if n % 10 == 0 and n >= 100 else math.ceil(math.sqrt(n))
        img = ((x.flatten(0, -4) if x.ndim > 4 else x) + 1) / 2
        if img.ndim != 4:  # flat vectors: one row of lines is all we can show
            fig, ax = plt.subplots(figsize=(6, 3))
            ax.plot(x.T[:, :16], lw=0.5)
        else:
            rows = math.ceil(n / nrow)
            fig, axes = plt.subplots(rows, nrow, figsize=(0.6 * nrow, 0.6 * rows / 0.9), squeeze=False)
            for i, ax in enumerate(axes.flat):
                ax.axis("off")
                if i < n:
                    im = img[i].clamp(0, 1).permute(1, 2, 0).numpy()
                    ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
            fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0, right=1, bottom=0, top=0.9)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def write_pngs(out: Path, step: int, losses: list[float], ema: nn.Module, sde: SDE, cfg, train_x: Tensor) -> None:
    """``<out>/loss.png`` and ``<out>/samples.png`` for the state after ``step`` steps (module docstring)."""
    out = Path(out)
    _loss_png(losses, out / "loss.png", f"{cfg.data}: loss, step {step}")
    was_training = ema.training
    ema.eval()
    try:
        if train_x.ndim == 2 and train_x.shape[1] == 2:
            x = ddim_preview(ema, sde, cfg.prediction, (2000, 2))
            ref = train_x[:2000]
        else:
            y, n, k = None, 64, getattr(ema, "num_classes", None)
            if k is not None:
                n = k * min(k, 10)
                y = torch.arange(n, device=train_x.device) // min(k, 10)
            x, ref = ddim_preview(ema, sde, cfg.prediction, (n, *train_x.shape[1:]), y=y), None
    finally:
        ema.train(was_training)
    _samples_png(x, out / "samples.png", f"{cfg.data}: EMA samples, DDIM 25 steps, step {step}", ref)
