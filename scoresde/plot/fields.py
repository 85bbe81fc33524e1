"""Score and drift fields of a 2-D problem: the values, side-by-side stream plots, error maps, trajectories, animation.

The three fields at time ``t`` (Song et al. 2021), for the forward SDE ``dx = f(t) x dt + g(t) dW``:

    score      s(x, t) = grad_x log p_t(x)
    pf-drift   f(t) x - g(t)^2 / 2 s(x, t)     the probability-flow ODE dx = [...] dt          (eq. 13)
    sde-drift  f(t) x - g(t)^2 s(x, t)         the reverse-time SDE dx = [...] dt + g dW_bar   (eq. 6)

Both drifts are integrated from ``T`` down to 0, so a sample moves along ``-drift`` per unit of decreasing ``t``;
the plots draw that direction of travel (``travel=True``) unless told otherwise. :func:`vector_field` returns the
drift exactly as written above.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from ._mpl import pyplot

__all__ = [
    "FIELD_KINDS",
    "field_grid",
    "vector_field",
    "field_error",
    "plot_fields",
    "plot_field_error",
    "data_extent",
    "record_trajectory",
    "plot_trajectories",
    "animate_fields",
    "sharpness",
]

FIELD_KINDS = ("score", "pf-drift", "sde-drift")
_LABELS = {"score": "score  grad log p_t", "pf-drift": "PF-ODE drift", "sde-drift": "reverse-SDE drift"}


def _check_kind(kind: str) -> None:
    if kind not in FIELD_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FIELD_KINDS)}, got {kind!r}")


def _as_score(obj, sde):
    """A :class:`~scoresde.param.Score`; a :class:`~scoresde.problems.GaussianMixture` gives its exact score."""
    from ..problems import GaussianMixture

    return obj.score(sde) if isinstance(obj, GaussianMixture) else obj


def field_grid(lim: float = 4.5, n: int = 40, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """An ``n x n`` grid on ``[-lim, lim]^2``: ``(xs, ys, points)`` with ``points`` of shape ``(n * n, 2)``, row-major
    in ``y`` (``points.reshape(n, n, 2)[i, j] = (xs[j], ys[i])``, the layout ``streamplot`` expects)."""
    if n < 2 or not lim > 0:
        raise ValueError(f"field_grid needs n >= 2 and lim > 0, got n={n}, lim={lim}")
    xs = torch.linspace(-lim, lim, n, dtype=dtype)
    ys = torch.linspace(-lim, lim, n, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xs, ys, torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


@torch.no_grad()
def vector_field(score, t: float, points: Tensor, kind: str = "score", sde=None) -> Tensor:
    """The field ``kind`` (``score``, ``pf-drift``, ``sde-drift``; see the module docstring) at ``points``
    ``(n, d)`` and time ``t``: ``(n, d)``, one model call. ``score`` is a Score or a GaussianMixture (exact)."""
    _check_kind(kind)
    if sde is None:
        sde = score.sde
    score = _as_score(score, sde)
    s = score.score(points, float(t))
    if kind == "score":
        return s
    c = sde.coefs(float(t))
    weight = c.g2 / 2 if kind == "pf-drift" else c.g2
    return c.f * points - weight * s


def field_error(learned, exact, t: float, points: Tensor, kind: str = "score", sde=None) -> Tensor:
    """Relative error ``|v_learned - v_exact| / |v_exact|`` per point, ``(n,)``."""
    if sde is None:
        sde = exact.sde
    v1 = vector_field(learned, t, points, kind, sde)
    v0 = vector_field(exact, t, points.to(v1.dtype), kind, sde)
    return (v1 - v0).norm(dim=1) / v0.norm(dim=1).clamp_min(1e-12)


def _is_mixture(obj) -> bool:
    from ..problems import GaussianMixture

    return isinstance(obj, GaussianMixture)


def _log_density(mixture, sde, t: float, points: Tensor) -> Tensor:
    return mixture.log_prob(points.double(), float(t), sde)


def _panel(ax, xs, ys, v: Tensor, n: int, travel: bool, kind: str, style: str, background=None, data=None):
    """One stream (or quiver) plot of ``v`` on the grid, coloured by log10 |v|, over an optional background and
    under an optional scatter of ``data``."""
    import numpy as np

    lim = float(xs[-1])
    if background is not None:
        ax.imshow(
            background.reshape(n, n).numpy(),
            extent=(-lim, lim, -lim, lim),
            origin="lower",
            cmap="Greys",
            alpha=0.55,
            interpolation="bilinear",
        )
    if kind != "score" and travel:
        v = -v
    u, w = (v[:, 0].reshape(n, n).double().numpy(), v[:, 1].reshape(n, n).double().numpy())
    speed = np.log10(np.hypot(u, w) + 1e-12)
    X, Y = xs.double().numpy(), ys.double().numpy()
    if style == "quiver":
        norm = np.hypot(u, w) + 1e-12
        step = max(1, n // 20)
        sl = (slice(None, None, step), slice(None, None, step))
        XX, YY = np.meshgrid(X, Y)
        ax.quiver(XX[sl], YY[sl], (u / norm)[sl], (w / norm)[sl], speed[sl], cmap="viridis", scale=20, width=0.006)
    else:
        ax.streamplot(X, Y, u, w, color=speed, cmap="viridis", density=1.1, linewidth=0.8, arrowsize=0.8)
    if data is not None:
        pts = data.detach().double().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, c="tab:red", alpha=0.25, linewidths=0, zorder=3)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.tick_params(labelsize=7)


def _field_rows(axes, scores: dict, sde, ts, kind, lim, n, density, travel, style, data=None) -> None:
    xs, ys, pts = field_grid(lim, n)
    rows = len(scores)
    for r, (label, sc) in enumerate(scores.items()):
        for c, t in enumerate(ts):
            ax = axes[r][c]
            bg = _log_density(density, sde, t, pts).clamp_min(-30).float() if density is not None else None
            _panel(ax, xs, ys, vector_field(sc, t, pts, kind, sde).float(), n, travel, kind, style, bg, data)
            ax.set_title(f"t = {t:g}" if r == 0 else "", fontsize=10)
            if c == 0:
                ax.set_ylabel(label, fontsize=10)
            else:
                ax.tick_params(labelleft=False)
            if r + 1 < rows:
                ax.tick_params(labelbottom=False)


def data_extent(points: Tensor, margin: float = 1.15) -> float:
    """A plot half-width ``lim`` that holds ``points`` ``(m, 2)``: ``margin`` times their largest |coordinate| at
    the 99.5th percentile, rounded up to a tenth."""
    q = torch.quantile(points.detach().abs().double().cpu().reshape(-1), 0.995).item()
    return math.ceil(10 * margin * max(q, 1e-3)) / 10


def plot_fields(
    scores,
    sde,
    ts,
    kind: str = "score",
    *,
    lim: float = 4.5,
    n: int = 40,
    density=None,
    travel: bool = True,
    style: str = "stream",
    data: Tensor | None = None,
):
    """Stream plots of the field ``kind`` at each time of ``ts`` side by side, one row per entry of ``scores``.

    Args:
        scores: a Score or GaussianMixture, or a dict ``{row label: Score or GaussianMixture}``.
        sde: the forward SDE.
        ts: times in ``(0, T]``.
        kind: ``score``, ``pf-drift`` or ``sde-drift``.
        lim, n: the grid ``[-lim, lim]^2`` with ``n`` points a side.
        density: a GaussianMixture whose exact ``log p_t`` is drawn in grey behind the field (default: the mixture
            among ``scores``, if any).
        travel: draw the drifts as the direction a sample moves while ``t`` decreases (``-drift``).
        style: ``stream`` or ``quiver``.
        data: points ``(m, 2)`` (a learned model's training data) drawn faintly over every panel, where the field
            should lead at small ``t``.

    Returns the matplotlib Figure (colour: log10 of the field's length); the outer panels carry the axes' ticks.
    """
    _check_kind(kind)
    plt = pyplot()
    if not isinstance(scores, dict):
        scores = {"exact" if _is_mixture(scores) else "model": scores}
    if density is None:
        density = next((s for s in scores.values() if _is_mixture(s)), None)
    ts = [float(t) for t in ts]
    fig, axes = plt.subplots(len(scores), len(ts), figsize=(3.0 * len(ts), 3.1 * len(scores)), squeeze=False)
    _field_rows(axes, scores, sde, ts, kind, lim, n, density, travel, style, data)
    arrow = " (direction of travel as t decreases)" if kind != "score" and travel else ""
    fig.suptitle(f"{_LABELS[kind]}{arrow}; {sde!r}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_field_error(learned, exact, sde, ts, kind: str = "score", *, lim: float = 4.5, n: int = 40):
    """Three rows at each time of ``ts``: the learned field, the exact one (a GaussianMixture), and the relative
    error map ``|v_learned - v_exact| / |v_exact|`` (log colour) under the exact density's contours. Returns the
    Figure."""
    import numpy as np
    from matplotlib.colors import LogNorm

    _check_kind(kind)
    plt = pyplot()
    ts = [float(t) for t in ts]
    fig, axes = plt.subplots(3, len(ts), figsize=(3.0 * len(ts), 9.3), squeeze=False)
    _field_rows(axes, {"learned": learned, "exact": exact}, sde, ts, kind, lim, n, exact, True, "stream")
    xs, ys, pts = field_grid(lim, n)
    for c, t in enumerate(ts):
        ax = axes[2][c]
        err = field_error(learned, exact, t, pts, kind, sde).reshape(n, n).double().numpy()
        im = ax.imshow(
            np.clip(err, 1e-3, 1e1),
            extent=(-lim, lim, -lim, lim),
            origin="lower",
            cmap="magma",
            norm=LogNorm(1e-3, 1e1),
        )
        logp = _log_density(exact, sde, t, pts).reshape(n, n).numpy()
        levels = np.linspace(logp.max() - 8, logp.max(), 5)
        ax.contour(xs.numpy(), ys.numpy(), logp, levels=levels, colors="w", linewidths=0.5)
        ax.set(aspect="equal")
        ax.tick_params(labelsize=7, labelleft=c == 0)
        axes[1][c].tick_params(labelbottom=False)
        if c == 0:
            ax.set_ylabel("relative error", fontsize=10)
    fig.suptitle(f"learned vs exact {_LABELS[kind]}; white: contours of the exact log p_t", fontsize=10)
    fig.tight_layout()
    fig.colorbar(im, ax=list(axes[2]), shrink=0.8, label="|learned - exact| / |exact|")
    return fig


@torch.no_grad()
def record_trajectory(score, x_init: Tensor, method: str = "ddim", steps: int = 20, **kwargs):
    """Run :func:`scoresde.sample` from ``x_init`` and keep the state after every step through its ``callback``.

    Returns ``(times, path, samples)``: ``times`` ``(steps + 1,)`` float64 from ``T`` down, ``path``
    ``(steps + 1, *x_init.shape)`` with ``path[0] = x_init``, and the :class:`~scoresde.sample.Samples`.
    """
    from ..sample import sample

    times, states = [], [x_init.detach().clone()]

    def keep(info) -> None:
        if info.repeat == info.repeats - 1:
            times.append((info.t, info.s))
            states.append(info.x.detach().clone())

    out = sample(score, x_init=x_init, method=method, steps=steps, callback=keep, **kwargs)
    t = torch.tensor([times[0][0]] + [s for _, s in times], dtype=torch.float64) if times else torch.zeros(1)
    return t, torch.stack(states), out


def plot_trajectories(paths: dict, *, reference: Tensor | None = None, lim: float = 4.5, max_paths: int = 64):
    """One panel per entry of ``paths`` ``{label: (steps + 1, n, 2) tensor}``: each sample's path from the prior
    (small dots) to its end (large dots), over optional ``reference`` data in grey. Returns the Figure."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(paths), figsize=(3.6 * len(paths), 3.8), squeeze=False)
    for ax, (label, path) in zip(axes[0], paths.items(), strict=True):
        if reference is not None:
            ax.scatter(*reference.detach().double().cpu().T.numpy(), s=1, c="0.8", zorder=0)
        p = path[:, :max_paths].detach().double().cpu().numpy()
        cmap = plt.get_cmap("turbo")
        for i in range(p.shape[1]):
            color = cmap(i / max(p.shape[1] - 1, 1))
            ax.plot(p[:, i, 0], p[:, i, 1], lw=0.7, color=color, alpha=0.8)
            ax.plot(p[0, i, 0], p[0, i, 1], ".", ms=2, color=color)
            ax.plot(p[-1, i, 0], p[-1, i, 1], "o", ms=3, color=color, mec="k", mew=0.3)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
        ax.set_title(label, fontsize=10)
    fig.tight_layout()
    return fig


def animate_fields(
    score,
    sde,
    ts,
    path: str | Path,
    kind: str = "score",
    *,
    lim: float = 4.5,
    n: int = 30,
    density=None,
    fps: int = 4,
    travel: bool = True,
    data: Tensor | None = None,
) -> Path:
    """Write a GIF (PillowWriter) of the field ``kind`` at each time of ``ts`` in turn, one frame per time; atomic.
    ``score`` is a Score or a GaussianMixture (whose density is then drawn behind the field); ``data`` as in
    :func:`plot_fields`."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    _check_kind(kind)
    plt = pyplot()
    if density is None and _is_mixture(score):
        density = score
    ts = [float(t) for t in ts]
    xs, ys, pts = field_grid(lim, n)
    fig, ax = plt.subplots(figsize=(4, 4.2))

    def frame(i: int):
        ax.clear()
        t = ts[i]
        bg = _log_density(density, sde, t, pts).clamp_min(-30).float() if density is not None else None
        _panel(ax, xs, ys, vector_field(score, t, pts, kind, sde).float(), n, travel, kind, "stream", bg, data)
        ax.set_title(f"{_LABELS[kind]}, t = {t:.3g}", fontsize=9)
        return []

    anim = FuncAnimation(fig, frame, frames=len(ts), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".gif")
    os.close(fd)
    try:
        anim.save(tmp, writer=PillowWriter(fps=fps))
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def sharpness(mixture, sde, ts, n: int = 2000, seed: int = 0) -> list[float]:
    """``E_{p_t} |grad log p_t|^2`` (the Fisher information) at each ``t``: how the field sharpens as ``t -> 0``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in ts:
        x = mixture.marginal(sde, float(t)).sample(n, generator=g)
        out.append(float(mixture.score_fn(x, float(t), sde).pow(2).sum(1).mean()))
    return out
