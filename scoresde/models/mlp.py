"""A time-conditioned residual MLP for low-dimensional data (2-D toy sets, small vectors).

Architecture (pre-norm residual blocks, the time embedding added inside every block as in Ho et al. 2020's
residual blocks)::

    e = MLP_t(SinusoidalEmbedding(t)) [+ Embedding(y)]               (batch, width)
    h = Linear(x)          or, with fourier_features = m > 0 (Tancik et al. 2020, random Fourier features),
    h = Linear([x, sin(2 pi x B), cos(2 pi x B)]),  B ~ N(0, fourier_scale^2) of shape (dim, m), fixed
    h = h + Linear(Dropout(SiLU(Linear(SiLU(LayerNorm(h))) + Linear(e))))     x num_blocks
    out = Linear_0(SiLU(LayerNorm(h)))                               the output layer starts at zero

Fourier features let a small MLP represent sharp, high-frequency structure of low-dimensional data (the
edges of the checkerboard's squares), which a plain MLP of the raw coordinates learns slowly (spectral bias,
Tancik et al. 2020); ``B`` is drawn at construction from the global RNG and kept as a buffer (saved with the
weights). The output has ``x``'s shape; whether it is read as ``eps``, ``x0`` or ``v`` is decided by the
parameterisation wrapper (:mod:`scoresde.param`), not by the network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .embedding import SinusoidalEmbedding, check_inputs

__all__ = ["MLP"]


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        r = self.fc1(self.act(self.norm(h))) + self.emb(e)
        return h + self.fc2(self.drop(self.act(r)))


class MLP(nn.Module):
    """Residual MLP score network, ``forward(x, t, y=None) -> Tensor`` of ``x``'s shape.

    Args:
        dim: the number of features of one sample (``x`` is ``(batch, dim)``, or ``(batch, *shape)`` with
            ``prod(shape) == dim``; it is flattened and restored).
        width: hidden width (also the width of the time embedding).
        num_blocks: residual blocks.
        dropout: dropout probability inside the blocks.
        num_classes: ``None`` for an unconditional model; else labels ``0..num_classes-1`` plus the null
            class ``num_classes`` (classifier-free guidance, Ho & Salimans 2022).
        time_scale: ``t`` is embedded as ``time_scale * t`` (1000 matches the DDPM timestep range for ``T = 1``).
        fourier_features: ``m``, the number of random frequencies of the input features (0: raw ``x`` only).
        fourier_scale: the standard deviation of the frequencies ``B`` (cycles per unit of ``x``).
    """

    def __init__(
        self,
        dim: int = 2,
        width: int = 256,
        num_blocks: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        time_scale: float = 1000.0,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
    ):
        super().__init__()
        for name, v in (("dim", dim), ("width", width), ("num_blocks", num_blocks)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MLP: {name} must be a positive integer, got {v!r}")
        if not isinstance(fourier_features, int) or fourier_features < 0:
            raise ValueError(f"MLP: fourier_features must be a non-negative integer, got {fourier_features!r}")
        if not fourier_scale > 0:
            raise ValueError(f"MLP: fourier_scale must be positive, got {fourier_scale!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {dropout}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"MLP: num_classes must be None or a positive integer, got {num_classes!r}")
        self.config = {
            "arch": "mlp",
            "dim": dim,
            "width": width,
            "num_blocks": num_blocks,
            "dropout": float(dropout),
            "num_classes": num_classes,
            "time_scale": float(time_scale),
            "fourier_features": fourier_features,
            "fourier_scale": float(fourier_scale),
        }
        self.dim, self.num_classes = dim, num_classes
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(width, scale=time_scale), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.class_embed = nn.Embedding(num_classes + 1, width) if num_classes is not None else None
        freqs = torch.randn(dim, fourier_features) * fourier_scale if fourier_features else None
        self.register_buffer("fourier", freqs)
        self.inp = nn.Linear(dim + 2 * fourier_features, width)
        self.blocks = nn.ModuleList(_Block(width, dropout) for _ in range(num_blocks))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t, y = check_inputs("MLP", x, t, y, self.num_classes)
        if math.prod(x.shape[1:]) != self.dim:
            raise ValueError(f"MLP: expected {self.dim} features per sample, got x of shape {tuple(x.shape)}")
        if t.shape[0] > 1 and bool((t == t[0]).all()):
            e = self.time_embed(t[:1])  # a sampler's shared time: embed it once, broadcast in the blocks
        else:
            e = self.time_embed(t)
        if self.class_embed is not None:
            e = e + self.class_embed(y)
        h = x.reshape(x.shape[0], self.dim)
        if self.fourier is not None:
            phase = (2 * math.pi) * (h @ self.fourier.to(h.dtype))
            h = torch.cat([h, torch.sin(phase), torch.cos(phase)], dim=1)
        h = self.inp(h)
        for block in self.blocks:
            h = block(h, e)
        return self.out(nn.functional.silu(self.out_norm(h))).reshape(x.shape)
