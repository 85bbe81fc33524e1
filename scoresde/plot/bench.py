"""Benchmark and sample figures: NFE against sample quality (the floor as a band), image grids, point clouds."""

from __future__ import annotations

import io
import math
from pathlib import Path

from ..util import atomic_write_bytes

__all__ = ["plot_nfe_quality", "nfe_quality_figure", "nfe_ticks", "save_image_grid", "save_points"]


# ours in cool colours (blues, greens, purples, teals), filled markers, solid lines; peers in warm colours (oranges,
# reds, browns), open markers, dashed lines: two cues each way, so the two families stay apart in grey print too
OURS_COLOURS = (
    "#08306b", "#2171b5", "#6baed6", "#00441b", "#238b45", "#74c476", "#3f007d", "#6a51a3", "#9e9ac8",
    "#0c8e9e", "#525252", "#969696",
)  # fmt: skip
PEER_COLOURS = ("#7f2704", "#d94801", "#fd8d3c", "#a50f15", "#ef3b2c", "#fc9272", "#8c510a", "#bf812d", "#dfc27d")
MARKERS = "osD^vPXhp<>"
METRIC_NAMES = {"mode_swd": "mode-conditional SWD", "swd": "sliced W2", "fd": "Frechet distance", "tv": "histogram TV"}


def nfe_ticks(rows: list[dict], min_ratio: float = 1.3) -> list[int]:
    """The x ticks of the NFE axis: the run's budgets (``run = "budget=N"``; else the NFE values seen), thinned so
    that neighbours differ by a factor of at least ``min_ratio`` and their labels cannot collide on a log axis."""
    budgets = sorted({int(r["run"].split("=", 1)[1]) for r in rows if str(r.get("run", "")).startswith("budget=")})
    values = budgets or sorted({int(round(float(r["nfe"]))) for r in rows if float(r["nfe"]) >= 1})
    ticks: list[int] = []
    for v in values:
        if not ticks or v >= ticks[-1] * min_ratio:
            ticks.append(v)
    return ticks


def _method_styles(rows: list[dict]) -> dict[str, dict]:
    """One style per method, the same in every panel: ours first (cool, solid, filled), then the peers (warm,
    dashed, open markers)."""
    methods = dict.fromkeys(r["method"] for r in rows)
    peers = [m for m in methods if any(r["method"] == m and r.get("source") == "peer" for r in rows)]
    ours = [m for m in methods if m not in peers]
    styles = {}
    for i, m in enumerate(ours):
        c = OURS_COLOURS[i % len(OURS_COLOURS)]
        styles[m] = dict(color=c, ls="-", lw=1.6, marker=MARKERS[i % len(MARKERS)], ms=4.5, mfc=c, mec=c)
    for i, m in enumerate(peers):
        c = PEER_COLOURS[i % len(PEER_COLOURS)]
        styles[m] = dict(color=c, ls=(0, (4, 2)), lw=1.3, marker=MARKERS[i % len(MARKERS)], ms=5, mfc="white", mec=c)
    return styles


def nfe_quality_figure(rows: list[dict], metric: str = "mode_swd"):
    """The figure of :func:`plot_nfe_quality`: one log-log panel per problem and the legend in a column of its own
    on the right (ours, then peers, then the floor), x ticks at the NFE budgets, the floor band labelled."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    from ._mpl import pyplot

    plt = pyplot()
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    styles = _method_styles(rows)
    peers = {m for m in styles if styles[m]["mfc"] == "white"}
    entries = len(styles) + 4
    height = max(4.6, 0.16 * entries + 1.0)
    fig = plt.figure(figsize=(5.6 * len(problems) + 2.4, height), layout="constrained")
    grid = fig.add_gridspec(1, len(problems) + 1, width_ratios=[5.6] * len(problems) + [2.4])
    default = metric
    drawn: set[str] = set()
    for col, pname in enumerate(problems):
        ax = fig.add_subplot(grid[0, col])
        sub = [r for r in rows if r["problem"] == pname]
        metric = sub[0].get("primary", default) if default == "mode_swd" else default
        for method in dict.fromkeys(r["method"] for r in sub):
            pts = sorted(
                (float(r.get("nfe_amortised") or r["nfe"]), r[metric])
                for r in sub
                if r["method"] == method and not math.isnan(r[metric])
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), label=method, zorder=3 if method in peers else 4, **styles[method])
                drawn.add(method)
        f, fs = sub[0][f"{metric}_floor"], sub[0][f"{metric}_floor_std"]
        ax.axhspan(max(f - fs, f * 1e-3), f + fs, color="0.85", zorder=0)
        ax.axhline(f, color="0.5", lw=0.8, zorder=1)
        ax.set(xscale="log", yscale="log", xlabel="NFE per sample (counted model calls, fits amortised)")
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric.replace('_', ' '))} (lower is better)")
        ax.annotate(
            "two-sample floor",
            xy=(0.02, f + fs),
            xycoords=("axes fraction", "data"),
            xytext=(0, 2),
            textcoords="offset points",
            fontsize=8,
            color="0.3",
            va="bottom",
        )
        ticks = nfe_ticks(sub)
        if ticks:
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.set_xticklabels([str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{pname} (d = {sub[0]['dim']}, n = {sub[0]['n']})")
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", axis="y", alpha=0.15)

    def header(text):
        return Line2D([], [], ls="none", label=text)

    handles = [header("ours")]
    handles += [Line2D([], [], label=m, **styles[m]) for m in styles if m in drawn and m not in peers]
    if peers & drawn:
        handles += [header("peers (same exact score, NFE counted by us)")]
        handles += [Line2D([], [], label=m, **styles[m]) for m in styles if m in drawn and m in peers]
    handles += [Patch(color="0.85", label="two-sample floor")]
    lax = fig.add_subplot(grid[0, -1])
    lax.axis("off")
    legend = lax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, borderaxespad=0, handlelength=3)
    for text, handle in zip(legend.get_texts(), handles, strict=True):
        if isinstance(handle, Line2D) and handle.get_linestyle() == "None":
            text.set_fontweight("bold")
    return fig


def plot_nfe_quality(rows: list[dict], path: str | Path, metric: str = "mode_swd") -> None:
    """Log-log NFE vs ``metric`` (``path``, a PNG): one line per method, ours in cool colours with filled markers and
    solid lines, peers in warm colours with open markers and dashes, the legend beside the panels, the floor mean +-
    std shaded and labelled; a fitted method is placed at its amortised NFE (``nfe_amortised``: its fit's calls
    spread over the run's samples)."""
    if not rows:
        return
    from ._mpl import save_figure

    save_figure(nfe_quality_figure(rows, metric), path, dpi=100)


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
    height = 0.8 * ncol + (0.2 if titles else 0)
    fig, axes = plt.subplots(ncol, nrow, figsize=(0.8 * nrow, height), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(img[i, :, :, 0] if img.shape[-1] == 1 else img[i], cmap="gray", vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=6, pad=1)
    top = 1 - (0.15 / height if titles else 0)  # room for the first row's titles
    fig.subplots_adjust(wspace=0.05, hspace=0.3 if titles else 0.05, left=0, right=1, bottom=0, top=top)
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
