"""Non-leaking geometric augmentation of image batches for training (Karras et al. 2022, EDM, appendix F.2).

A small data set is memorised: the digits network's denoising error on its 1,437 training images falls far
below that on the test images at low noise (``benchmarks/memorization.py``). Augmenting the training images
enlarges the set, but a diffusion model trained on augmented images samples augmented images too (the
augmentations "leak"). EDM's remedy: tell the network what was done to each image, as a vector of
augmentation labels it is conditioned on, and sample with the labels zero (no augmentation). The network then
learns the augmented images as other, labelled, distributions sharing its features, and the zero-label one is
the data's own law.

:func:`augment_images` applies, each independently with probability ``p`` per image:

- a flip of the columns (``x -> x[..., ::-1]``),
- a rotation by ``k`` quarter turns, ``k`` uniform in {1, 2, 3} (square images only),
- an integer translation by ``(dx, dy)``, each uniform in ``{-s, ..., s}`` with ``s = max(1, round(W / 8))``
  (EDM's ``translate_frac`` 0.125), not both zero, the vacated pixels filled by reflection (as EDM pads),

in that order, and returns the labels ``[flip, sin(k pi / 2), cos(k pi / 2) - 1, dx / W, dy / H]`` (all zero
when nothing was applied: :data:`AUGMENT_DIM` = 5). A U-Net built with ``augment_dim=AUGMENT_DIM`` takes them
as its fourth argument; every sampler calls it without, which is the zero label.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["AUGMENT_DIM", "augment_images"]

AUGMENT_DIM = 5


def _reflect(i: Tensor, n: int) -> Tensor:
    """Indices ``i`` in ``[-(n - 1), 2 (n - 1)]`` reflected into ``[0, n - 1]`` (edge not repeated)."""
    i = torch.where(i < 0, -i, i)
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def augment_images(x: Tensor, p: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(augmented x, labels (batch, AUGMENT_DIM))`` for images ``x`` of shape ``(batch, C, H, W)`` (module
    docstring). Every draw comes from ``generator`` (on ``x``'s device), a fixed number per call, so a run that
    draws from it resumes bit for bit. ``p = 0`` returns ``x`` itself and zero labels."""
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"augment_images: x must be a floating tensor of shape (batch, C, H, W), got {got}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"augment_images: p must be a probability in [0, 1], got {p!r}")
    B, _, H, W = x.shape
    labels = x.new_zeros((B, AUGMENT_DIM))
    if p == 0:
        return x, labels
    if H != W:
        raise ValueError(f"augment_images: the quarter turns need square images, got H x W = {H} x {W}")
    if H < 2:
        raise ValueError(f"augment_images: images must be at least 2 x 2 pixels, got {H} x {W}")
    dev = x.device

    def chosen() -> Tensor:
        return torch.rand(B, generator=generator, device=dev) < p

    flip = chosen()
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    turn = chosen()
    k = torch.where(turn, torch.randint(1, 4, (B,), generator=generator, device=dev), 0)
    for q in (1, 2, 3):
        x = torch.where((k == q)[:, None, None, None], torch.rot90(x, q, dims=(-2, -1)), x)
    s = max(1, round(W / 8))
    shift = chosen()
    # (dx, dy) uniform over the (2s + 1)^2 - 1 non-zero offsets: draw an index that skips the zero one
    m = torch.randint(0, (2 * s + 1) ** 2 - 1, (B,), generator=generator, device=dev)
    m = m + (m >= ((2 * s + 1) ** 2 - 1) // 2).long()
    dx = torch.where(shift, m % (2 * s + 1) - s, 0)
    dy = torch.where(shift, m // (2 * s + 1) - s, 0)
    cols = _reflect(torch.arange(W, device=dev)[None, :] - dx[:, None], W)  # (B, W): out[..., j] = x[..., j - dx]
    rows = _reflect(torch.arange(H, device=dev)[None, :] - dy[:, None], H)
    x = x.gather(-1, cols[:, None, None, :].expand(x.shape))
    x = x.gather(-2, rows[:, None, :, None].expand(x.shape))
    angle = k.to(torch.float64) * (math.pi / 2)
    labels[:, 0] = flip.to(x.dtype)
    labels[:, 1] = torch.sin(angle).round().to(x.dtype)
    labels[:, 2] = (torch.cos(angle).round() - 1).to(x.dtype)
    labels[:, 3] = dx.to(x.dtype) / W
    labels[:, 4] = dy.to(x.dtype) / H
    return x, labels
