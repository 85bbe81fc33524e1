"""The probability-flow ODE integrated by torchdiffeq (the only solver module that imports it).

Song et al. 2021, eq. 13: ``dx/dt = f(t) x - 1/2 g(t)^2 score(x, t)``; with ``score = -eps / sigma`` this is
``dx/dt = f(t) x + g(t)^2 / (2 sigma(t)) eps(x, t)``, integrated from ``T`` down to ``t_min``.

Fixed-grid methods (``euler``, ``midpoint``, ``rk4``) step exactly on the sampler's time grid (torchdiffeq
steps between consecutive output times when no ``step_size`` is given). Adaptive methods (``dopri5``,
``bosh3``, ``adaptive_heun``, ``fehlberg2``) take ``rtol``/``atol`` and are told to land on ``t_min``
(``step_t``), so they never evaluate the score below it; their NFE is counted, not estimated.
"""

from __future__ import annotations

import torch
import torchdiffeq

from ..checks import check_int, check_number
from .base import EngineSolver, NonFiniteError, SolverResult, integrate
from .registry import register

__all__ = ["ProbabilityFlowODE"]


def _pf_ode(ctx, locate_step: bool):
    """The PF-ODE right-hand side; with ``locate_step`` (one ``odeint`` call over the whole grid) a non-finite value
    is given the grid step its time lies in, otherwise the stepping loop adds the step."""
    ev, grid = ctx.ev, ctx.grid
    desc = grid.flip(0)  # increasing, for searchsorted
    n = grid.numel()
    # torchdiffeq hands rhs its time in the state's dtype; on a device (where the grid itself is in that dtype) a
    # rounded grid time is mapped back to the float64 time of the coefficient table. On the CPU the times are left
    # as they come (a float32 state there always met float32-rounded times; its samples stay as they were).
    snap: dict[float, float] = {}

    def rhs(t, x):
        tf = float(t)
        if t.dtype != torch.float64 and x.device.type != "cpu":
            if not snap:
                snap.update((float(torch.tensor(v, dtype=t.dtype)), v) for v in ctx.times)
            tf = snap.get(tf, tf)
        c = ctx.at(tf)
        try:
            return c.pf_drift(x, ev.eps(x, c))
        except NonFiniteError as e:
            if locate_step and ev.n_steps is not None:
                # Step k covers [grid[k+1], grid[k]]; an evaluation at a grid point counts towards the step it starts.
                e.locate(min(max(n - 1 - int(torch.searchsorted(desc, tf, right=False)), 0), n - 2), n - 1)
                raise
            raise

    return rhs


class ProbabilityFlowODE(EngineSolver):
    """Base of the torchdiffeq methods; subclasses set ``method`` and the declared attributes.

    A fixed-grid method without a callback is one ``odeint`` call over the grid; with one, :func:`.base.integrate`
    calls :meth:`step`, one ``odeint`` per interval (the same arithmetic, so the same samples).
    """

    kind = "ode"
    method: str

    def _odeint(self, ctx, x, ts, locate_step: bool):
        kw = self._odeint_kwargs(ctx.grid)
        if x.device.type != "cpu":  # times on a device follow the state's dtype (Apple MPS has no float64)
            ts = ts.to(device=x.device, dtype=x.dtype)
            if "options" in kw:
                kw["options"]["dtype"] = x.dtype
        try:
            return torchdiffeq.odeint(_pf_ode(ctx, locate_step), x, ts, method=self.method, **kw)
        except AssertionError as e:  # torchdiffeq reports step-size underflow with assert
            raise NonFiniteError(f"{self.name}: torchdiffeq failed ({e}) at {ctx.ev.where(float('nan'))}") from e

    def step(self, ctx, k, x, state):
        return self._odeint(ctx, x, ctx.grid[k : k + 2], locate_step=False)[-1], state

    def solve(self, ctx, x, *, callback=None, return_trajectory=False):
        if callback is not None:
            if self.adaptive:
                raise ValueError(f"{self.name} chooses its own steps: it takes no per-step callback")
            return integrate(self, ctx, x, callback=callback, return_trajectory=return_trajectory)
        grid = ctx.grid
        ts = grid if return_trajectory or not self.adaptive else grid[[0, -1]]
        ys = self._odeint(ctx, x, ts, locate_step=True)
        return SolverResult(ys[-1], ts, ys if return_trajectory else None)

    def _odeint_kwargs(self, grid) -> dict:
        return {}


def _fixed(method_: str, order_: int, nfe: int):
    @register
    class Fixed(ProbabilityFlowODE):
        __doc__ = f"Fixed-grid ``{method_}`` (order {order_}, {nfe} model call(s) per step) on the PF-ODE."
        name = f"ode-{method_}"
        method, order, nfe_per_step = method_, order_, nfe

    Fixed.__name__ = Fixed.__qualname__ = f"ODE{method_.title()}"
    return Fixed


def _adaptive(method_: str, order_: int):
    @register
    class Adaptive(ProbabilityFlowODE):
        __doc__ = f"Adaptive ``{method_}`` (order {order_}) on the PF-ODE with error control ``rtol``, ``atol``."
        name = f"ode-{method_}"
        method, order, nfe_per_step = method_, order_, None
        adaptive = True

        def __init__(self, rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 10_000):
            self.rtol = check_number(self.name, "rtol", rtol, gt=0)
            self.atol = check_number(self.name, "atol", atol, gt=0)
            self.max_steps = check_int(self.name, "max_steps", max_steps, ge=1)

        def _odeint_kwargs(self, grid):
            # step_t makes the solver land on t_min exactly instead of stepping past it; a given first step
            # skips torchdiffeq's initial-step heuristic, which probes the score far outside [t_min, T].
            span = float(grid[0] - grid[-1])
            options = {"step_t": grid[[-1]], "max_num_steps": self.max_steps, "first_step": 1e-2 * span}
            return {"rtol": self.rtol, "atol": self.atol, "options": options}

    Adaptive.__name__ = Adaptive.__qualname__ = f"ODE{method_.title().replace('_', '')}"
    return Adaptive


ODEEuler = _fixed("euler", 1, 1)
ODEMidpoint = _fixed("midpoint", 2, 2)
ODERk4 = _fixed("rk4", 4, 4)
ODEDopri5 = _adaptive("dopri5", 5)
ODEBosh3 = _adaptive("bosh3", 3)
ODEAdaptiveHeun = _adaptive("adaptive_heun", 2)
ODEFehlberg2 = _adaptive("fehlberg2", 2)
