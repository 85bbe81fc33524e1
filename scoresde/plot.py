"""Plots: NFE against sample quality, per problem, with the two-sample floor as a band."""

from __future__ import annotations

import io
import math
from pathlib import Path

from .util import atomic_write_bytes

__all__ = ["plot_nfe_quality"]


def plot_nfe_quality(rows: list[dict], path: str | Path, metric: str = "mode_swd") -> None:
    """Log-log NFE vs ``metric``: one line per method (ours solid, peers dashed), floor mean +- std shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    if not problems:
        return
    fig, axes = plt.subplots(1, len(problems), figsize=(6.5 * len(problems), 5), squeeze=False)
    for ax, pname in zip(axes[0], problems, strict=True):
        sub = [r for r in rows if r["problem"] == pname]
        cmap = plt.get_cmap("tab20")
        for i, method in enumerate(dict.fromkeys(r["method"] for r in sub)):
            pts = sorted((r["nfe"], r[metric]) for r in sub if r["method"] == method and not math.isnan(r[metric]))
            if not pts:
                continue
            peer = sub[[r["method"] for r in sub].index(method)]["source"] == "peer"
            style = dict(ls="--" if peer else "-", marker="os^vDP"[i % 6], ms=3.5, lw=1.2, color=cmap(i % 20))
            ax.plot(*zip(*pts, strict=True), label=method, **style)
        f, fs = sub[0][f"{metric}_floor"], sub[0][f"{metric}_floor_std"]
        ax.axhspan(max(f - fs, f * 1e-3), f + fs, color="0.8", zorder=0, label="two-sample floor")
        ax.axhline(f, color="0.5", lw=0.8, zorder=0)
        ax.set(xscale="log", yscale="log", xlabel="NFE (counted model calls)", ylabel=metric.replace("_", " "))
        ax.set_title(f"{pname} (d = {sub[0]['dim']}, n = {sub[0]['n']})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
