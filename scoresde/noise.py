"""Per-sample, counter-based Gaussian noise: the same sample gets the same noise in any batch layout.

A sampler that draws ``torch.randn(batch, ...)`` gives sample ``i`` noise that depends on how many samples
came before it in the batch, so results change with the batch size and with sharding over processes.
EDM keeps one ``torch.Generator`` per sample (a Python loop per draw); we instead compute every noise value
as a pure function of ``(seed, sample index, stream, element)``: the SplitMix64 output function (Steele,
Lea & Flood 2014, "Fast splittable pseudorandom number generators") applied to a per-sample key,
vectorised in int64 arithmetic (multiplication wraps modulo 2^64), and Box-Muller on 53-bit uniforms.

``NoiseSource(seed, offset)`` is what samplers take; ``stream`` numbers separate the prior draw from the
noise of each step, and ``offset`` is the global index of the first sample of this batch (a process of a
distributed run passes its shard's start).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["NoiseSource"]

_MASK62 = (1 << 62) - 1


def _i64(c: int) -> int:
    """An unsigned 64-bit constant as the signed int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN_U = 0x9E3779B97F4A7C15
_GOLDEN = _i64(_GOLDEN_U)
_M1 = _i64(0xBF58476D1CE4E5B9)
_M2 = _i64(0x94D049BB133111EB)


def _srl(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bits."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix64(z: Tensor) -> Tensor:
    """SplitMix64's finaliser (Stafford's Mix13): a bijection of 64-bit words with full avalanche."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


class NoiseSource:
    """Counter-based standard normal noise, one independent stream per sample.

    Args:
        seed: any integer; ``NoiseSource.from_generator(g)`` draws one from a ``torch.Generator``.
        offset: global index of this batch's first sample.
    """

    def __init__(self, seed: int, offset: int = 0):
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.seed = int(seed) & _MASK62
        self.offset = int(offset)

    @classmethod
    def from_generator(cls, generator: torch.Generator | None, offset: int = 0) -> NoiseSource:
        """A source seeded by one draw from ``generator`` (the global RNG when ``None``)."""
        seed = torch.randint(0, 2**62, (), generator=generator, device=generator.device if generator else "cpu")
        return cls(int(seed), offset)

    def _keys(self, batch: int, device) -> Tensor:
        # Sample i's key is output i + 1 of a SplitMix64 stream whose state starts at mix(seed): keys are
        # distinct across samples and not symmetric in (seed, index).
        idx = torch.arange(self.offset, self.offset + batch, dtype=torch.int64, device=device)
        seed_word = torch.tensor(_i64((self.seed + 1) * _GOLDEN_U % (1 << 64)), dtype=torch.int64, device=device)
        return _mix64(_mix64(seed_word) + (idx + 1) * _GOLDEN)

    def uniform53(self, shape: tuple[int, ...], stream: int, device=None) -> Tensor:
        """Uniforms on ``(0, 1]`` in float64 with 53 random bits, shape ``(batch, *rest)``."""
        batch, per = shape[0], math.prod(shape[1:])
        keys = self._keys(batch, device).unsqueeze(1)
        # Counter of element j in this stream: SplitMix64's state advances by the golden gamma per output.
        ctr = torch.arange(per, dtype=torch.int64, device=device) + (int(stream) * (1 << 32) + 1)
        bits = _srl(_mix64(keys + ctr.unsqueeze(0) * _GOLDEN), 11)
        return ((bits + 1).double() * 2.0**-53).reshape(shape)

    def randn(self, shape: tuple[int, ...], stream: int, dtype=torch.float32, device=None) -> Tensor:
        """Standard normals of ``shape = (batch, *rest)``; row ``i`` depends only on (seed, offset + i, stream)."""
        shape = tuple(shape)
        if len(shape) < 1:
            raise ValueError("shape must include the batch dimension")
        per = math.prod(shape[1:])
        half = (per + 1) // 2
        u = self.uniform53((shape[0], 2 * half), stream, device)
        r = (-2 * u[:, :half].log()).sqrt()
        theta = (2 * math.pi) * u[:, half:]
        z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=1)[:, :per]
        return z.reshape(shape).to(dtype)
