"""matplotlib, imported on first use: the Agg backend unless a notebook's inline backend is already chosen."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ..util import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` with a non-interactive backend (Agg), keeping Jupyter's inline backend if it is set."""
    import matplotlib

    backend = os.environ.get("MPLBACKEND", "")
    if "inline" not in backend and "ipympl" not in backend and "widget" not in backend:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: float | None = None, close: bool = True) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, PNG by default) atomically; close it unless told not to."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi or fig.dpi, bbox_inches="tight")
    if close:
        pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
