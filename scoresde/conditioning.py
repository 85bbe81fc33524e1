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

Both are a callback on the ordinary stepping loop (:func:`scoresde.solvers.integrate`): every fixed-grid method
of :func:`scoresde.available_methods` works, a multistep method keeps its history, and a ``NonFiniteError``
names the real step. Adaptive methods are refused. At the end the known entries are the data themselves, exactly.

**Inside a step.** The replacement after a step leaves the known entries at ``alpha_t y + sigma_t z`` for some
standard normal ``z`` (the fresh draw, or after RePaint's jump back the noise it implies). Every model evaluation
inside the next step sees them moved along that path, ``alpha_u y + sigma_u z`` at its own time ``u`` (the
evaluator's ``inputs`` map), not the solver's own update of them. An update is coordinate-wise apart from the
model, so the unknown entries are integrated by the method itself, applied to their equation given the known
path: every fixed-grid method keeps its order.

**The known entries' path.** ``known_path="fresh"`` (the default, Song et al.) draws a fresh ``z`` after every
step. ``known_path="fixed"`` draws one ``z`` per sample for the whole run, so the known entries follow one smooth
path ``alpha_t y + sigma_t z``; the unknown entries then solve an ordinary differential equation driven by it, and
a deterministic method converges to its solution at its own order (tested against a high-accuracy solution of
that equation: second order for ``dpm++2m``, ``edm-heun``, ``dpm2s``, ``ode-midpoint``, third for ``unipc``,
fourth for ``ode-rk4``).

Noise: stream ``0`` is the prior; the solver's draws are those of :func:`scoresde.sample`; the known entries'
draws and RePaint's jump-back draws have streams of their own (``_PATH`` and ``_JUMP`` plus ``k R + r`` for step
``k``, pass ``r``), so sample ``i`` depends only on its seed and index, not on the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .checks import check_one_source
from .grids import resolve_grid, solver_steps
from .param import Score
from .run import noise_source, prepare_run, solver_for
from .sample import Samples
from .sde import SDE
from .solvers import integrate

__all__ = ["inpaint", "make_mask", "MASKS", "KNOWN_PATHS"]

MASKS = ("left", "right", "top", "bottom", "center", "random:P", "dims:I,J,...")
KNOWN_PATHS = ("fresh", "fixed")
_PATH, _JUMP = 1 << 50, 1 << 51  # noise streams of the known entries and of RePaint's jump back


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


def _check_arguments(score, x_known, mask, resample, known_path) -> Tensor:
    """The arguments of :func:`inpaint` that need no solver; returns the mask, boolean, of ``x_known``'s shape."""
    if not isinstance(score, Score):
        raise TypeError(f"score must be a scoresde Score, got {type(score).__name__}")
    if not isinstance(x_known, Tensor) or x_known.ndim < 2:
        raise ValueError("x_known must be a tensor of shape (batch, ...) with at least one data dimension")
    if not torch.isfinite(x_known).all():
        raise ValueError("x_known contains non-finite values (mark unknown entries with the mask, not with NaN)")
    mask = _check_mask(mask, x_known)
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample must be an integer >= 1, got {resample!r}")
    if known_path not in KNOWN_PATHS:
        raise ValueError(f"known_path must be one of {', '.join(map(repr, KNOWN_PATHS))}; got {known_path!r}")
    return mask


class _KnownPath:
    """The known entries of one inpainting run: where the model sees them (:meth:`on_path`, the evaluator's
    ``inputs``) and the callback that puts them back after every step (:meth:`replace`, with RePaint's jump back).
    ``z`` is their noise at the start of the current step; made per run, read only by it."""

    def __init__(self, sde: SDE, y: Tensor, mask: Tensor, noise, resample: int, known_path: str):
        self.sde, self.y, self.mask, self.noise, self.R, self.fixed = (
            sde,
            y,
            mask,
            noise,
            resample,
            known_path == "fixed",
        )
        self.z_path = self.z = self.draw(_PATH)
        self.coefs = ()  # the run's coefficient table, set once the run is prepared

    def draw(self, stream: int) -> Tensor:
        return self.noise.randn(self.y.shape, stream=stream, dtype=self.y.dtype, device=self.y.device)

    def on_path(self, x: Tensor, c) -> Tensor:
        return torch.where(self.mask, c.alpha * self.y + c.sigma * self.z, x)

    def replace(self, info) -> Tensor:
        k, r, R = info.k, info.repeat, self.R
        ct, cs = self.coefs[k], self.coefs[k + 1]
        z = self.z_path if self.fixed else self.draw(_PATH + 1 + k * R + r)
        self.z = z
        x = self.on_path(info.x, cs)
        if r + 1 < R:  # RePaint: noise back from s to t and take the step again
            a_ts, s_ts = (float(v) for v in self.sde.transition(info.s, info.t))
            jump = self.draw(_JUMP + k * R + r)
            x = a_ts * x + s_ts * jump
            self.z = (a_ts * cs.sigma * z + s_ts * jump) / ct.sigma  # known: alpha_t y + sigma_t z
        return x


def inpaint(
    score: Score,
    x_known: Tensor,
    mask: Tensor,
    method: str = "ddpm",
    steps: int | None = None,
    *,
    resample: int = 1,
    known_path: str = "fresh",
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
        method, steps, grid, t_min, options: as in :func:`scoresde.sample` (fixed-grid methods; ``grid=None``
            is the method's own default grid).
        resample: RePaint's number of passes per step (``1``: plain replacement). NFE grows by this factor.
        known_path: ``"fresh"`` noise for the known entries after every step, or one ``"fixed"`` draw for the run.
        generator, seed, sample_offset: the randomness, per sample as in :func:`scoresde.sample`.
        denoise: finish with one Tweedie step on the unknown entries (one more model call).
        return_trajectory: keep the state after every step (after replacement).

    Returns:
        :class:`~scoresde.Samples` whose ``x`` equals ``x_known`` exactly where the mask is 1.
    """
    mask = _check_arguments(score, x_known, mask, resample, known_path)
    check_one_source(generator, seed)
    solver = solver_for(method, options)
    # a fitted solver: its own SDE, shape, grid and score
    check_nfe = solver.check(score, tuple(x_known.shape), grid, x_known.dtype, x_known.device)
    if solver.adaptive:
        raise ValueError(f"inpainting replaces the known entries after every grid step; {method!r} is adaptive")
    sde: SDE = score.sde
    if isinstance(grid, str) and grid == "optimized":
        raise ValueError("inpainting takes a named, explicit or fitted grid; fit one with sd.fit_grid")
    dtype, device, shape = x_known.dtype, x_known.device, x_known.shape
    steps = solver_steps(solver, steps, default=100)
    ts, _ = resolve_grid(solver, score, steps, grid, t_min, None, shape[1:], dtype, device)
    noise = noise_source(generator, seed, sample_offset)
    known = _KnownPath(sde, x_known, mask, noise, resample, known_path)
    run = prepare_run(
        score, ts, solver=solver, shape=shape, noise=noise, dtype=dtype, device=device, inputs=known.on_path
    )
    ev, ctx = run.ev, run.ctx
    known.coefs = ctx.coefs
    with torch.no_grad():
        res = integrate(
            solver, ctx, run.x, callback=known.replace, repeats=resample, return_trajectory=return_trajectory
        )
        x = ev.x0(res.x, ctx.coefs[-1]) if denoise else res.x
    x = torch.where(mask, x_known, x)
    traj = res.trajectory
    if traj is not None:
        traj[-1] = x
    if not math.isfinite(float(x.sum())):
        raise FloatingPointError("inpainting produced non-finite samples")
    name = method if isinstance(method, str) else solver.name
    return Samples(x=x, nfe=ev.nfe, times=ts, trajectory=traj, method=name, check_nfe=check_nfe)
