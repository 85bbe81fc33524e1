"""Conditioning a sampler on observed values: inpainting with a mask (replacement and RePaint resampling).

Given data ``y`` observed where ``mask == 1``, sample the rest from ``p(x_0 | x_0[mask] = y[mask])``.

- **Replacement** (Song et al. 2021, *Score-Based Generative Modeling through SDEs*, Appendix I.2, the
  "imputation" sampler; also Song & Ermon 2019): after each solver step ``t -> s`` on the whole state,
  the known entries are overwritten by a fresh forward-noised copy of the data,
  ``x_s[mask] = alpha_s y[mask] + sigma_s z``, so they follow the exact marginal ``p_s`` of the data
  while the unknown entries are integrated by the chosen solver.
- **Resampling** (Lugmayr et al. 2022, *RePaint*, Alg. 1): the replacement step ignores how the known
  entries would have moved the unknown ones, so the unknown region harmonises poorly at few steps. RePaint
  repeats each step ``resample`` times: after the step and the replacement, the state is noised back from
  ``s`` to ``t`` with the forward kernel ``x_t = alpha_{t|s} x_s + sigma_{t|s} z`` (:meth:`SDE.transition`)
  and the step is taken again. ``resample=1`` is plain replacement.

Any single-step method of :func:`scoresde.available_methods` works (the solver is run one grid step at a
time); a multistep method restarts at each step, so it runs at its first-order start-up step. Adaptive
methods are refused. At the end the known entries are the data themselves, exactly.

Noise: stream ``0`` is the prior, ``1`` the known entries at ``T``; step ``k``, repetition ``r`` uses a
block of 64 streams starting at ``2 + 64 (k R + r)`` (the known-region draw at offset 0, the solver's own
streams at 1-31, the jump-back draw at offset 32), so sample ``i`` depends only on its seed and index, not on the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .noise import NoiseSource
from .param import Score
from .sample import Samples, noise_source, resolve_grid
from .sde import SDE
from .solvers import Evaluator, get_solver

__all__ = ["inpaint", "make_mask", "MASKS"]

MASKS = ("left", "right", "top", "bottom", "center", "random:P", "dims:I,J,...")

_STREAMS_PER_STEP = 64
_KNOWN, _JUMP = 0, 32


class _ShiftedNoise:
    """A view of a :class:`NoiseSource` whose stream ``j`` is the parent's stream ``base + j``."""

    def __init__(self, parent: NoiseSource, base: int):
        self.parent, self.base = parent, base

    def randn(self, shape, stream: int, dtype=torch.float32, device=None) -> Tensor:
        if not 0 < stream < _JUMP:
            raise RuntimeError(f"inpainting reserves {_JUMP - 1} noise streams per step; the solver asked for {stream}")
        return self.parent.randn(shape, self.base + stream, dtype=dtype, device=device)


def _check_mask(mask: Tensor, x_known: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
    try:
        m = torch.broadcast_to(mask, x_known.shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the data's shape {tuple(x_known.shape)}"
        ) from None
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must be boolean or hold only 0 and 1 (1 marks a known entry)")
        m = m != 0
    return m


def make_mask(kind: str, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """A boolean mask of ``shape = (C, H, W)`` (images) or ``(d,)`` that is ``True`` on the *known* entries.

    ``"left"``/``"right"``/``"top"``/``"bottom"``: that half of the image is known; ``"center"``: all but the
    central square of half the side is known; ``"random:P"``: each pixel known with probability ``P`` (seeded,
    shared by the channels); ``"dims:I,J"``: the listed flat indices are known (any shape).
    """
    shape = tuple(int(s) for s in shape)
    if kind.startswith("dims:"):
        idx = [int(i) for i in kind[5:].split(",") if i]
        m = torch.zeros(math.prod(shape), dtype=torch.bool)
        if not idx or min(idx) < 0 or max(idx) >= m.numel():
            raise ValueError(f"mask {kind!r}: indices must lie in [0, {m.numel()})")
        m[idx] = True
        return m.reshape(shape)
    if len(shape) != 3:
        raise ValueError(f"mask {kind!r} is for images of shape (C, H, W), got {shape}; use 'dims:I,J,...'")
    c, h, w = shape
    m = torch.zeros(h, w, dtype=torch.bool)
    if kind == "left":
        m[:, : w // 2] = True
    elif kind == "right":
        m[:, w // 2 :] = True
    elif kind == "top":
        m[: h // 2] = True
    elif kind == "bottom":
        m[h // 2 :] = True
    elif kind == "center":
        m[:] = True
        m[h // 4 : h // 4 + (h + 1) // 2, w // 4 : w // 4 + (w + 1) // 2] = False
    elif kind.startswith("random:"):
        p = float(kind[7:])
        if not 0 <= p <= 1:
            raise ValueError(f"mask {kind!r}: P must lie in [0, 1]")
        m = torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) < p
    else:
        raise ValueError(f"unknown mask {kind!r}; known: {', '.join(MASKS)}")
    return m.expand(c, h, w).clone()


def inpaint(
    score: Score,
    x_known: Tensor,
    mask: Tensor,
    method: str = "ddpm",
    steps: int = 100,
    *,
    resample: int = 1,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    sample_offset: int = 0,
    grid: str | Tensor | None = None,
    t_min: float | None = None,
    denoise: bool = False,
    return_trajectory: bool = False,
    **options,
) -> Samples:
    """Fill in the entries of ``x_known`` where ``mask`` is 0, by the replacement method (with RePaint).

    Args:
        score: the score (its ``sde`` is the process sampled).
        x_known: ``(batch, ...)`` data; only the entries where ``mask`` is 1 are read.
        mask: bool or 0/1 tensor broadcastable to ``x_known``; 1 marks a known entry.
        method, steps, grid, t_min, options: as in :func:`scoresde.sample` (single-step methods; ``grid=None``
            is the method's own default grid).
        resample: RePaint's number of passes per step (``1``: plain replacement). NFE grows by this factor.
        generator, seed, sample_offset: the randomness, per sample as in :func:`scoresde.sample`.
        denoise: finish with one Tweedie step on the unknown entries (one more model call).
        return_trajectory: keep the state after every step (after replacement).

    Returns:
        :class:`~scoresde.Samples` whose ``x`` equals ``x_known`` exactly where the mask is 1.
    """
    if not isinstance(score, Score):
        raise TypeError(f"score must be a scoresde Score, got {type(score).__name__}")
    if not isinstance(x_known, Tensor) or x_known.ndim < 2:
        raise ValueError("x_known must be a tensor of shape (batch, ...) with at least one data dimension")
    if not torch.isfinite(x_known).all():
        raise ValueError("x_known contains non-finite values (mark unknown entries with the mask, not with NaN)")
    mask = _check_mask(mask, x_known)
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample must be an integer >= 1, got {resample!r}")
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    solver = get_solver(method).make(**options)
    if solver.adaptive:
        raise ValueError(f"inpainting runs the solver one grid step at a time; {method!r} is adaptive")
    sde: SDE = score.sde
    if isinstance(grid, str) and grid == "optimized":
        raise ValueError("inpainting takes a named or explicit grid; build an optimized one with sd.optimized_grid")
    dtype, device = x_known.dtype, x_known.device
    ts = resolve_grid(solver, score, steps, grid, t_min, None, x_known.shape[1:], dtype, device)
    sde.prime(ts)
    noise = noise_source(generator, seed, sample_offset)
    y = x_known
    x = sde.prior_std() * noise.randn(x_known.shape, stream=0, dtype=dtype, device=device)
    # Start consistent with the data: known entries drawn from p_T of the data.
    a_T, s_T = sde.scalar_coefs(float(ts[0]))[:2]
    x = torch.where(mask, a_T * y + s_T * noise.randn(y.shape, stream=1, dtype=dtype, device=device), x)

    ev = Evaluator(score, method, len(ts) - 1)
    times = ts.tolist()
    traj = [x] if return_trajectory else None
    with torch.no_grad():
        for k in range(len(times) - 1):
            t, s = times[k], times[k + 1]
            a_s, s_s = sde.scalar_coefs(s)[:2]
            a_ts, s_ts = (float(v) for v in sde.transition(s, t))
            for r in range(resample):
                base = 2 + _STREAMS_PER_STEP * (k * resample + r)
                ev.step = k
                x = solver.solve(ev, x, ts[k : k + 2], _ShiftedNoise(noise, base), False).x
                known = a_s * y + s_s * noise.randn(y.shape, stream=base + _KNOWN, dtype=dtype, device=device)
                x = torch.where(mask, known, x)
                if r < resample - 1:  # RePaint: noise back from s to t and take the step again
                    z = noise.randn(y.shape, stream=base + _JUMP, dtype=dtype, device=device)
                    x = a_ts * x + s_ts * z
            if traj is not None:
                traj.append(x)
        if denoise:
            ev.step = None
            x = ev.x0(x, times[-1])
    x = torch.where(mask, y, x)
    if traj is not None:
        traj[-1] = x
    if not math.isfinite(float(x.sum())):
        raise FloatingPointError("inpainting produced non-finite samples")
    return Samples(x=x, nfe=ev.nfe, times=ts, trajectory=torch.stack(traj) if traj else None, method=method)
