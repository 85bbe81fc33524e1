"""Time and class embeddings shared by the score networks.

The time ``t`` in ``[0, T]`` is encoded with the sinusoidal positional encoding of Vaswani et al. 2017
(section 3.5), applied to ``scale * t`` as in Ho et al. 2020 (who embed the integer timestep ``0..999``)::

    emb(t) = [cos(scale t w_0), ..., cos(scale t w_{h-1}), sin(scale t w_0), ..., sin(scale t w_{h-1})],
    w_k = max_period^(-k / h),   h = dim // 2,

padded with one zero when ``dim`` is odd. The frequencies run geometrically from 1 to ``1 / max_period``, so
with ``scale = 1000`` the embedding resolves time differences from about ``1e-3`` (one DDPM step) up to ``T``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "check_inputs", "count_parameters"]


class SinusoidalEmbedding(nn.Module):
    """``t`` of shape ``(batch,)`` -> ``(batch, dim)`` sinusoidal features (see the module docstring), in ``t``'s
    floating dtype; the phases are computed in float64."""

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"SinusoidalEmbedding: dim must be an integer >= 2, got {dim!r}")
        if not (scale > 0 and max_period > 1):
            raise ValueError(f"SinusoidalEmbedding: need scale > 0 and max_period > 1, got {scale}, {max_period}")
        self.dim, self.scale, self.max_period = dim, float(scale), float(max_period)

    def forward(self, t: Tensor) -> Tensor:
        if t.ndim != 1:
            raise ValueError(f"SinusoidalEmbedding expects t of shape (batch,), got {tuple(t.shape)}")
        # frequencies and phases in float64 on the CPU (scale * t reaches 1000), the features in t's dtype; on a device
        # in float32 (Apple's MPS has no float64; a device tensor follows the state's dtype)
        half = self.dim // 2
        wide = torch.float64 if t.device.type == "cpu" else torch.float32
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=wide, device=t.device) / half)
        args = (self.scale * t.to(wide))[:, None] * freqs[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
        emb = emb.to(t.dtype if t.is_floating_point() else torch.get_default_dtype())
        if self.dim % 2:
            emb = nn.functional.pad(emb, (0, 1))
        return emb

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}, max_period={self.max_period}"


def check_inputs(
    name: str, x: Tensor, t: Tensor, y: Tensor | None, num_classes: int | None
) -> tuple[Tensor, Tensor | None]:
    """Validate a network's ``(x, t, y)`` against the model contract and normalise them.

    ``t`` may be a scalar (broadcast to the batch) or of shape ``(batch,)``. For a class-conditional model
    (``num_classes`` set) ``y=None`` becomes the null class ``num_classes`` for every sample (classifier-free
    guidance, Ho & Salimans 2022); labels must be integers in ``[0, num_classes]``. An unconditional model
    accepts only ``y=None``. Returns ``(t, y)`` with ``t`` in ``x``'s floating dtype of shape ``(batch,)``.
    """
    if x.ndim < 2:
        raise ValueError(f"{name}: x must have a leading batch dimension and data dims, got shape {tuple(x.shape)}")
    batch = x.shape[0]
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,) or not t.is_floating_point():
        raise ValueError(f"{name}: t must be a float tensor of shape (batch,) = ({batch},), got {tuple(t.shape)}")
    t = t.to(x.dtype)
    if num_classes is None:
        if y is not None:
            raise ValueError(f"{name}: this model is unconditional (num_classes=None) and takes only y=None")
        return t, None
    if y is None:
        return t, torch.full((batch,), num_classes, dtype=torch.long, device=x.device)
    if not isinstance(y, Tensor) or y.shape != (batch,) or y.is_floating_point() or y.is_complex():
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name}: y must be an integer tensor of shape ({batch},), got {got}")
    if bool(((y < 0) | (y > num_classes)).any()):
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}] ({num_classes} = null class), "
            f"got range [{int(y.min())}, {int(y.max())}]"
        )
    return t, y.to(device=x.device, dtype=torch.long)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of (trainable, by default) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
