"""Sample-quality metrics, pure torch.

- :func:`sliced_wasserstein`: the sliced 2-Wasserstein distance, ``sqrt(mean_theta W2^2(theta^T x, theta^T y))``
  over fixed random unit directions, each 1-D W2 exact from sorted samples (Bonneel et al. 2015).
- :func:`mode_conditional_swd`: for a mixture, the SWD between the samples assigned to component ``k``
  (most responsible component) and the same number of exact draws of component ``k``, averaged with the
  true weights; less dominated by the multinomial noise of the per-mode counts than the global SWD.
- :func:`floor`: a metric between two independent exact sample sets of the same size, mean and std over
  seeds: the value a perfect sampler gets.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["sliced_wasserstein", "mode_conditional_swd", "floor"]


def _directions(dim: int, n: int, seed: int, device) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(dim, n, generator=g, dtype=torch.float64)
    return (theta / theta.norm(dim=0, keepdim=True)).to(device)


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced W2 between two equally sized sample sets ``x, y`` of shape ``(n, *dims)`` (flattened).

    The directions are fixed by ``seed``, so comparisons across methods use the same slices.
    """
    x, y = x.flatten(1).double(), y.flatten(1).double()
    if x.shape != y.shape:
        raise ValueError(
            f"sliced_wasserstein needs sample sets of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] < 2:
        raise ValueError("sliced_wasserstein needs at least 2 samples")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return float("nan")
    theta = _directions(x.shape[1], n_projections, seed, x.device)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y.to(x.device) @ theta, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def mode_conditional_swd(x: Tensor, mixture, generator: torch.Generator | None = None, **swd_kw) -> tuple[float, float]:
    """``(sum_k w_k SWD(x[assigned to k], exact draws of k), max_k |assigned fraction_k - w_k|)``.

    ``mixture`` provides ``weights``, ``responsibilities(x)`` and ``sample_component(k, n, generator)``
    (a :class:`scoresde.GaussianMixture`). Components with fewer than 2 assigned samples contribute ``nan``
    unless their weight is 0.
    """
    x = x.flatten(1).double()
    if not torch.isfinite(x).all():
        return float("nan"), float("nan")
    labels = mixture.responsibilities(x).argmax(1)
    weights = torch.as_tensor(mixture.weights, dtype=torch.float64)
    counts = torch.bincount(labels, minlength=len(weights)).double()
    weight_err = float((counts / counts.sum() - weights).abs().max())
    total = 0.0
    for k, w in enumerate(weights.tolist()):
        n_k = int(counts[k])
        if w == 0:
            continue
        if n_k < 2:
            return float("nan"), weight_err
        ref = mixture.sample_component(k, n_k, generator=generator)
        total += w * sliced_wasserstein(x[labels == k], ref, **swd_kw)
    return total, weight_err


def floor(
    draw: Callable[[torch.Generator], Tensor], metric: Callable[[Tensor, Tensor], float], seeds=range(5)
) -> tuple[float, float]:
    """Mean and standard deviation of ``metric(draw(g1), draw(g2))`` over independent pairs of exact draws."""
    vals = []
    for s in seeds:
        g = torch.Generator().manual_seed(10_007 * (s + 1))
        vals.append(metric(draw(g), draw(g)))
    v = torch.tensor(vals, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(vals) > 1 else 0.0
