"""The reverse-time SDE integrated by torchsde (the only module that imports it).

Anderson 1982 / Song et al. 2021, eq. 6: ``dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar`` run from
``T`` down to ``t_min``; with ``score = -eps / sigma`` the drift is ``f x + g^2 / sigma eps``.

torchsde wants strictly increasing times and a 2-D state. One adapter meets that contract:

- **Time.** Step ``k`` of the sampler's grid ``t_0 > t_1 > ... > t_K`` becomes the unit interval
  ``u in [k, k+1]`` with ``t(u) = t_k + (u - k) h_k``, ``h_k = t_{k+1} - t_k < 0``. In ``u`` the SDE reads
  ``dx = [f x + g^2/sigma eps] h_k du + g sqrt(|h_k|) dB_u``; torchsde integrates ``u`` from 0 to K with
  ``dt = 1``, so every step lands exactly on the grid (integers are exact in floating point) and a
  non-uniform grid costs nothing. Which interval a stage belongs to is taken from the Brownian query that
  opens each step (torchsde draws the increment before evaluating the drift; a stage at ``u = k + 1`` belongs to
  step ``k``, not ``k + 1``, so ``u`` alone cannot tell). The Brownian motion writes it into a cursor that is made
  fresh for each ``sdeint`` call, with the adapter that reads it: nothing outlives the call.
- **State.** ``x`` is flattened to ``(batch, d)`` and viewed back for the score.
- **Noise.** The Brownian motion is a grid Brownian motion whose increments (and, for SRK, space-time
  Levy areas ``H ~ N(0, 1/12)`` independent of ``W``) come from the per-sample noise source, so a sample's
  path does not depend on the batch it is in. The noise is additive (``g`` depends on ``t`` only), so
  Ito and Stratonovich SDEs coincide and Stratonovich methods (Heun, midpoint) are valid too; Milstein's
  correction vanishes (it would equal Euler–Maruyama), so it is not offered.
- **NFE.** ``sdeint`` evaluates the drift once at ``(u_0, y_0)`` to check shapes; a one-entry cache on
  ``(u, y)`` answers the solver's own first evaluation at that point (and SRK's repeated evaluation of its
  first stage), so every model call does work and the count is exact.
"""

from __future__ import annotations

import math

import torch
import torchsde
from torchsde import BaseBrownian

from .base import EngineSolver, NonFiniteError, SolverResult, integrate
from .registry import register

__all__ = ["ReverseSDE"]


class _GridBrownian(BaseBrownian):
    """Brownian motion on the integer grid ``u = 0..K``: step ``k`` draws the increment (draw 0) and, for SRK,
    the space-time Levy area (draw 1) from the run's per-sample noise."""

    def __init__(self, cursor, ctx, shape, dtype, device, levy_area: bool):
        self._cursor, self._ctx = cursor, ctx
        self._shape, self._dtype, self._device = torch.Size(shape), dtype, device
        self._levy = levy_area

    def _draw(self, k: int, j: int):
        return self._ctx.noise.randn(self._shape, stream=self._ctx.stream(k, j), dtype=self._dtype, device=self._device)

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        ta, tb = float(ta), float(tb)
        k = round(ta)
        if tb - ta != 1.0 or ta != k:
            raise RuntimeError(f"grid Brownian motion queried on [{ta}, {tb}], not a unit grid interval")
        self._cursor.k = k
        w = self._draw(k, 0)
        if not return_U:
            return w
        h = self._draw(k, 1) / math.sqrt(12)
        return w, 0.5 * w + h  # U = int_k^{k+1} (W_u - W_k) du = W/2 + H for a unit interval

    def __repr__(self):
        return f"_GridBrownian(shape={tuple(self._shape)})"

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @property
    def shape(self):
        return self._shape

    @property
    def levy_area_approximation(self):
        return "space-time" if self._levy else "none"


class _Cursor:
    """The grid interval one ``sdeint`` call is in: set by its Brownian motion, read by its adapter."""

    k: int = 0


class _Adapter(torch.nn.Module):
    """The reverse SDE in grid time ``u`` on a flattened state, for torchsde (one per ``sdeint`` call)."""

    noise_type = "additive"

    def __init__(self, ctx, shape, sde_type, cursor: _Cursor):
        super().__init__()
        self.ctx, self.shape, self.sde_type, self.cursor = ctx, shape, sde_type, cursor
        self._cache = None  # (u, y, value): one entry

    def _coefs(self, u: float):
        k, ts = self.cursor.k, self.ctx.times
        h = ts[k + 1] - ts[k]
        return self.ctx.at(ts[k] + (u - k) * h), h

    def f(self, u, y):
        u = float(u)
        c = self._cache
        if c is not None and c[0] == u and c[1] is y and c[2] == y._version:
            return c[3]
        ct, h = self._coefs(u)
        x = y.view(self.shape)
        try:
            out = ct.reverse_drift(x, self.ctx.ev.eps(x, ct), scale=h).flatten(1)
        except NonFiniteError as e:
            e.locate(self.cursor.k, self.ctx.n_steps)
            raise
        self._cache = (u, y, y._version, out)
        return out

    def g_prod(self, u, y, v):
        ct, h = self._coefs(float(u))
        return ct.g * math.sqrt(-h) * v


class ReverseSDE(EngineSolver):
    """Base of the torchsde methods; subclasses set ``method``, ``sde_type`` and the declared attributes.

    Without a callback the whole grid is one ``sdeint`` call; with one, :func:`.base.integrate` calls
    :meth:`step`, one ``sdeint`` per grid interval on the same Brownian motion (the same samples).
    """

    kind = "sde"
    method: str
    sde_type = "ito"
    levy_area = False
    draws_per_step = 2

    def _sdeint(self, ctx, x, us):
        shape = x.shape
        y0 = x.reshape(shape[0], -1)
        cursor = _Cursor()
        adapter = _Adapter(ctx, shape, self.sde_type, cursor)
        bm = _GridBrownian(cursor, ctx, y0.shape, y0.dtype, y0.device, self.levy_area)
        us = torch.tensor(us, dtype=y0.dtype, device=y0.device)
        # sdeint's shape check draws a probe vector from the global RNG; keep the caller's stream untouched.
        with torch.random.fork_rng(devices=[]):
            return torchsde.sdeint(adapter, y0, us, bm=bm, method=self.method, dt=1.0, adaptive=False)

    def step(self, ctx, k, x, state):
        return self._sdeint(ctx, x, [float(k), float(k + 1)])[-1].view(x.shape), state

    def solve(self, ctx, x, *, callback=None, return_trajectory=False):
        if callback is not None:
            return integrate(self, ctx, x, callback=callback, return_trajectory=return_trajectory)
        n = ctx.n_steps
        us = [float(u) for u in range(n + 1)] if return_trajectory else [0.0, float(n)]
        ys = self._sdeint(ctx, x, us)
        traj = ys.view(len(us), *x.shape) if return_trajectory else None
        return SolverResult(ys[-1].view(x.shape), ctx.grid, traj)


def _torchsde_method(method_: str, sde_type_: str, strong: float, weak: float, nfe: int, levy_area_: bool = False):
    @register
    class Method(ReverseSDE):
        __doc__ = (
            f"torchsde ``{method_}`` on the reverse SDE: strong order {strong}, weak order {weak} "
            f"for additive noise, {nfe} model call(s) per step."
        )
        name = f"sde-{method_}"
        method, sde_type, levy_area = method_, sde_type_, levy_area_
        order, weak_order, nfe_per_step = strong, weak, nfe

    Method.__name__ = Method.__qualname__ = f"SDE{method_.title()}"
    return Method


# Orders for additive noise: Euler-Maruyama (Kloeden & Platen 1992, sec. 10.2 and 14.1), SRA1 (Roessler
# 2010: strong 1.5, weak 2), the Stratonovich Heun and midpoint methods (strong 1; weak 1 claimed only).
SDEEuler = _torchsde_method("euler", "ito", 1.0, 1.0, 1)
SDESrk = _torchsde_method("srk", "ito", 1.5, 2.0, 2, levy_area_=True)
SDEHeun = _torchsde_method("heun", "stratonovich", 1.0, 1.0, 2)
SDEMidpoint = _torchsde_method("midpoint", "stratonovich", 1.0, 1.0, 2)
