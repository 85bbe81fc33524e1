"""The histogram-TV floor of a 2-D toy set, shared by the scripts that score 2-D samples (learned.py,
flow_vs_vp.py, recipe_e2e.py, restart_probe.py)."""

from __future__ import annotations

import torch

import scoresde as sd


def tv_floor(data: str, n: int, pairs: int, first_seed: int = 50_001) -> tuple[float, float]:
    """Mean and standard deviation of the histogram TV between ``pairs`` pairs of fresh exact sets of ``n`` points
    of ``data``, pair ``k`` drawn with seeds ``first_seed + 2 k`` and ``first_seed + 2 k + 1`` (seeds no training
    draw uses)."""
    vals = [
        sd.metrics.histogram_tv(
            sd.data.toy_2d(data, n, seed=first_seed + 2 * k), sd.data.toy_2d(data, n, seed=first_seed + 2 * k + 1)
        )
        for k in range(pairs)
    ]
    v = torch.tensor(vals, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if pairs > 1 else 0.0
