"""Per-sample noise: the same sample gets the same noise in any batch layout, at native RNG speed.

A sampler that draws ``torch.randn(batch, ...)`` gives sample ``i`` noise that depends on how many samples
came before it in the batch, so results change with the batch size and with sharding over processes.
EDM keeps one ``torch.Generator`` per sample (a Python loop per draw). Here the global sample indices are
cut into fixed blocks of ``B`` rows (``B`` depends only on the per-sample size); block ``b`` of stream
``k`` is one ``torch.randn(B, ...)`` from a generator seeded by a SplitMix64 hash (Steele, Lea & Flood
2014) of ``(seed, b, k)``. A batch draws the blocks it overlaps and keeps its rows, so row ``i`` depends
only on ``(seed, offset + i, stream)``; the cost is native ``randn`` plus at most two partly used blocks.

Draws are made in float32 (four times cheaper than float64 on a CPU) and then cast, so a float64 run gets
float32-rounded normals, which changes nothing statistically. They are made on the device the noise is asked for:
on the CPU with CPU generators (the reference; the golden outputs pin it), on a GPU with that device's generator
(CUDA's Philox, seeded per block in the same way), so nothing is drawn on the host and copied at every step. The
per-sample identity holds on every device (sample ``i`` is the same in any batch and on any number of processes of
that device type), but a CUDA or MPS generator gives other normals than the CPU's from the same seed, as PyTorch
documents: a run's device type is part of what determines its samples.

``stream`` numbers separate the prior draw from the noise of each step; ``offset`` is the global index of the
batch's first sample (a process of a distributed run passes its shard's start). Stream :data:`LABEL_STREAM` (-1,
which no sampler uses) draws each sample's label for a labelled model sampled from its label frequencies
(:func:`scoresde.train.draw_labels`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["NoiseSource", "LABEL_STREAM"]

LABEL_STREAM = -1

_MASK62 = (1 << 62) - 1
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_BLOCK_ELEMENTS = 1 << 16  # rows per block: min(1024, 65536 // per-sample size), at least 1


def _mix64(z: int) -> int:
    """SplitMix64's finaliser (Stafford's Mix13) on Python ints: a bijection of 64-bit words."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def block_rows(per_sample: int) -> int:
    """Rows per noise block for samples of ``per_sample`` elements (a function of the shape only)."""
    return max(1, min(1024, _BLOCK_ELEMENTS // max(per_sample, 1)))


class NoiseSource:
    """Standard normal noise, one independent stream per (sample, stream number).

    Args:
        seed: any integer (taken modulo 2^62); ``NoiseSource.from_generator(g)`` draws one from a generator.
        offset: global index of this batch's first sample.
    """

    def __init__(self, seed: int, offset: int = 0):
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.seed = int(seed) & _MASK62
        self.offset = int(offset)
        self._root = _mix64((self.seed + 1) * _GOLDEN & _MASK64)

    @classmethod
    def from_generator(cls, generator: torch.Generator | None, offset: int = 0) -> NoiseSource:
        """A source seeded by one draw from ``generator`` (the global RNG when ``None``)."""
        seed = torch.randint(0, 2**62, (), generator=generator, device=generator.device if generator else "cpu")
        return cls(int(seed), offset)

    def _block_seed(self, block: int, stream: int) -> int:
        h = _mix64((self._root + (block + 1) * _GOLDEN) & _MASK64)
        return _mix64((h + (int(stream) + 1) * 0xD1B54A32D192ED03) & _MASK64) >> 1  # 63 bits for manual_seed

    def randn(self, shape: tuple[int, ...], stream: int, dtype=torch.float32, device=None) -> Tensor:
        """Standard normals of ``shape = (batch, *rest)``; row ``i`` depends only on (seed, offset + i, stream)."""
        shape = tuple(shape)
        if len(shape) < 1:
            raise ValueError("shape must include the batch dimension")
        batch, per = shape[0], math.prod(shape[1:])
        rows = block_rows(per)
        first, last = self.offset // rows, (self.offset + batch - 1) // rows
        device = torch.device("cpu" if device is None else device)
        on = None if device.type == "cpu" else device  # CPU draws keep their original (golden) code path
        g = torch.Generator() if on is None else torch.Generator(device=on)  # reseeded for every block
        parts = []
        for b in range(first, last + 1):
            g.manual_seed(self._block_seed(b, stream))
            parts.append(torch.randn(rows, per, generator=g, dtype=torch.float32, device=on))
        z = torch.cat(parts) if len(parts) > 1 else parts[0]
        start = self.offset - first * rows
        return z[start : start + batch].reshape(shape).to(dtype=dtype, device=device)
