"""UniPC (Zhao et al. 2023, eq. 6-9 and Alg. 2), data prediction, on the exponential-integrator form of
:mod:`.exponential`.

The update is DPM-Solver++'s with ``sum_k g_k D_k`` replaced by ``B(h) sum_m a_m (m_m - m_0) / r_m``, the ``a_m``
solving ``sum_m a_m r_m^{k-1} = k! g_k(h) / B(h)`` for ``k = 1..p`` (``B(h) = h`` for ``"bh1"``,
``B(h) = 1 - e^{-h}`` for ``"bh2"``). The predictor UniP-p uses the ``p - 1`` previous points; the corrector
UniC adds the model call at the predicted point (``r = 1``), so a step still costs one call and the order rises
from ``p`` to ``p + 1``. No corrector after the final step.

**Where the corrector runs.** The corrector of step ``k`` needs the model at the predicted point ``x_pred``,
which is also the first model call of step ``k + 1``. So step ``k`` returns ``x_pred`` as the state (with what
the correction needs as :class:`UniC`, in :class:`UniPCState`), and step ``k + 1`` starts with that model call,
corrects, and predicts. The state the loop sees after each step is therefore the point where the model is
evaluated next: a callback that replaces it (inpainting) changes what the model sees, and the method keeps its
order. The final sample is the same as with the corrector inside the step; the trajectory holds the predicted
points.

**Stochastic steps** (``eta > 0``; SA-Solver's form, Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast
Sampling of Diffusion Models", eq. 12-16, there with ``tau^2 = eta``). The reverse processes
``dx = [f - (1 + eta) / 2 g^2 score] dt + sqrt(eta) g dW`` share the marginals ``p_t`` for every ``eta >= 0`` (0: the
probability-flow ODE; 1: the reverse SDE). In the variables of :mod:`.exponential` the exact step is::

    x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s int_0^h (1 + eta) e^{-(1 + eta)(h - u)} x0 du
          + sigma_s sqrt(1 - e^{-2 eta h}) z,

and ``int_0^h (1 + eta) e^{-(1 + eta)(h - u)} u^k / k! du = h^k g_k((1 + eta) h)``: the update of the ODE with
``g_k(h)`` (and ``B(h)``) taken at ``(1 + eta) h``, the linear part damped by ``e^{-eta h}`` and one Gaussian draw per
step. The corrector reuses the predictor's draw (it corrects the same step). The noise contracts the errors of
earlier steps, the network's included, which a deterministic solver keeps (Xu et al. 2023, "Restart Sampling",
theorem 2; Karras et al. 2022, sec. 4): on a trained network the ODE plateaus at its own error, the SDE gets below it.
The price is an order-1/2 strong (order-1 weak) discretisation error of the noise, so on an exact score ``eta = 0``
is the choice; ``eta`` and the grid on networks are in the solvers guide ("Samplers for a trained network").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..checks import check_choice, check_int, check_number
from .base import MultistepState
from .exponential import ExpSolver, phi, solve_small
from .registry import register

__all__ = ["UniPC", "UniPCState", "UniC"]


@dataclass(frozen=True)
class UniC:
    """What the corrector of a step needs from it: the update's linear part ``base``, the scale ``alpha_s B(h)``
    of the weighted differences, the ratios ``rs`` and right-hand side ``rhs`` of its order conditions, the
    differences ``diffs`` of the predictor and its own data prediction ``m0``."""

    base: Tensor
    scale: float
    rs: list[float]
    rhs: list[float]
    diffs: list[Tensor]
    m0: Tensor


@dataclass(frozen=True)
class UniPCState(MultistepState):
    """UniPC's state: the history of a multistep method and the corrector the next step applies (``None`` after
    the final step, or before the first)."""

    corrector: UniC | None = None


def _coefficients(rs: list[float], rhs: list[float]) -> list[float]:
    """``a`` with ``sum_m a_m r_m^{k-1} = rhs_k`` for ``k = 1..len(rs)``.

    A square system makes ``B(h)`` cancel from the update; as in Zhao et al. (2023, Alg. 2 and their code), a
    single point takes the ``h -> 0`` limit ``a = 1/2`` of ``g_1(h) / B(h)`` instead, which is where ``bh1`` and
    ``bh2`` differ (both keep the order: the difference is ``O(h)`` relative).
    """
    if len(rs) == 1:
        return [0.5]
    return solve_small([[r ** (i - 1) for r in rs] for i in range(1, len(rs) + 1)], rhs[: len(rs)]) if rs else []


def _combine(base, scale: float, coefs: list[float], diffs: list):
    for aj, dj in zip(coefs, diffs, strict=True):
        base = base + (scale * aj) * dj
    return base


@register
class UniPC(ExpSolver):
    """UniPC: multistep UniP-p predictor with the UniC corrector, order p + 1 at one call per step (Zhao et al. 2023).

    Options: ``order`` ``p`` in 1..3 (default 2: third order), ``variant`` ``"bh1"`` (``B(h) = h``) or
    ``"bh2"`` (``B(h) = 1 - e^{-h}``, the default: it measured best on the gmm16 benchmark at 5-20 NFE),
    ``lower_order_final``, ``eta >= 0`` (default 0: the probability-flow ODE; ``> 0``: stochastic steps, one noise
    draw each, see the module docstring), ``eta_sigma_max > 0`` (default infinite: the steps that start at a noise
    level ``sigma / alpha`` above it are the ODE's, so the noise is added only at the lower levels). The configured
    solver's ``order`` is ``p + 1`` (3 for the default) for ``eta = 0``.

    Default grid ``"quadratic"`` (the former default was ``"logsnr"``), chosen on families of mixtures with
    ``dpm++2m``'s: the measurement is in :class:`~scoresde.solvers.dpm.DPMSolverPP2M`'s docstring and
    ``benchmarks/default_grids.py``. With ``eta > 0`` the default grid is ``"logsnr"`` (on the trained networks of
    the solvers guide it was better at 20 and 50 NFE for every ``eta`` tried).
    """

    name = "unipc"
    default_grid = "quadratic"
    state_type = UniPCState

    def __init__(
        self,
        order: int = 2,
        variant: str = "bh2",
        lower_order_final: bool | None = None,
        eta: float = 0.0,
        eta_sigma_max: float = math.inf,
    ):
        super().__init__(lower_order_final)
        self.max_order = check_int("unipc", "order", order, ge=1, le=3)
        self.variant = check_choice("unipc", "variant", variant, ("bh1", "bh2"))
        self.eta = check_number("unipc", "eta", eta, ge=0)
        self.eta_sigma_max = check_number("unipc", "eta_sigma_max", eta_sigma_max, gt=0, finite=False)
        self.draws_per_step = 1 if self.eta > 0 else 0
        if self.eta > 0:
            self.default_grid = "logsnr"  # class docstring

    @property
    def order(self) -> int:
        """UniP-p with UniC: ``p + 1``."""
        return self.max_order + 1

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def step(self, ctx, k, x, state):
        ct, cs = ctx.coefs[k], ctx.coefs[k + 1]
        m = ctx.ev.x0(x, ct)
        uc = state.corrector
        if uc is not None:  # UniC for the previous step, with this call at its predicted point
            x = _combine(uc.base, uc.scale, _coefficients(uc.rs + [1.0], uc.rhs), uc.diffs + [m - uc.m0])
            x = ctx.ev.check(x, ct.t, "UniC")
        h = cs.lam - ct.lam
        hist = (*state.history, (ct.lam, m))[-self.max_order :]
        q = self.step_order(ctx, k)
        past = hist[-q:-1][::-1]
        rs = [(lam_j - ct.lam) / h for lam_j, _ in past]
        eta = self.eta if ct.sigma / ct.alpha <= self.eta_sigma_max else 0.0  # noise only at the lower noise levels
        he = (1 + eta) * h  # g_k and B at (1 + eta) h: the stochastic step's integrals (module docstring)
        big_b = he if self.variant == "bh1" else -math.expm1(-he)
        rhs = [math.factorial(i) * phi(i, he) / big_b for i in range(1, q + 1)]
        base = (cs.sigma / ct.sigma * math.exp(-eta * h)) * x + (cs.alpha * phi(0, he)) * m
        if eta > 0:
            base = base + (cs.sigma * math.sqrt(-math.expm1(-2 * eta * h))) * ctx.randn(k, 0, x)
        diffs = [(mj - m) / r for r, (_, mj) in zip(rs, past, strict=True)]
        # UniP-q: the q - 1 previous points satisfy the first q - 1 order conditions.
        x_pred = _combine(base, cs.alpha * big_b, _coefficients(rs, rhs), diffs)
        last = k == ctx.n_steps - 1  # no corrector after the final step: it would cost one more call
        corrector = None if last else UniC(base, cs.alpha * big_b, rs, rhs, diffs, m)
        return x_pred, UniPCState(m, hist, corrector)
