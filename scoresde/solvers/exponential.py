"""What the exponential integrators share: the ``g_k`` coefficients, interpolation weights, warm-up orders.

**The exponential-integrator form.** Write ``lambda = log(alpha / sigma)`` (half the log-SNR of
:meth:`scoresde.sde.SDE.log_snr`; increasing as ``t`` decreases) and ``x0(x, lambda)`` for the data
prediction. The probability-flow ODE (Song et al. 2021, eq. 13) is linear in ``x`` apart from ``x0``, and
variation of constants gives the exact step ``t -> s`` with ``h = lambda_s - lambda_t > 0``
(Lu et al. 2022b, DPM-Solver++, eq. 8)::

    x_s = (sigma_s / sigma_t) x_t + alpha_s int_0^h e^{-(h - u)} x0(lambda_t + u) du.

Expanding ``x0`` in a Taylor series at ``lambda_t``, with ``D_k = h^k d^k x0 / d lambda^k``::

    x_s = (sigma_s / sigma_t) x_t + alpha_s sum_k g_k(h) D_k + O(h^{p+1}),
    g_k(h) = h^{-k} int_0^h e^{-(h-u)} u^k / k! du = sum_{j>=0} (-1)^j h^{j+1} / (j+k+1)!,

so ``g_0 = 1 - e^{-h}``, ``g_1 = (h + expm1(-h)) / h``, ``g_2 = (h^2/2 - h - expm1(-h)) / h^2`` (:func:`phi`).
The methods (:mod:`.dpm`, :mod:`.unipc`) differ only in how they estimate ``D_1, D_2`` from model calls.

The ODE multistep methods (``dpm++2m``, ``dpm++3m``, ``unipc``) default to the ``"quadratic"`` grid, chosen on
families of mixtures (their docstrings, ``benchmarks/default_grids.py``); the others here to ``"logsnr"``. Multistep
methods warm up with lower orders (the first step is first order) and, with ``lower_order_final`` (default: when
there are fewer than 15 steps, as in Lu et al. 2022b, sec. 6), step ``k`` of ``N`` uses at most order ``N - k``,
which keeps few-step sampling stable near ``t_min``. All step coefficients are float64 Python floats; ``g_k`` use
their power series for ``h < 1`` (no cancellation as ``h -> 0``, the precision pitfall of many-step multistep
solvers) and the recursion ``h^k g_k = h^k / k! - h^{k-1} g_{k-1}`` above. Valid for every SDE here (VE: ``alpha =
1``).
"""

from __future__ import annotations

import math

import torch

from .base import GridSolver

__all__ = ["phi", "interp_weights", "solve_small", "ExpSolver"]


def phi(k: int, h: float) -> float:
    """``g_k(h) = h^{-k} int_0^h e^{-(h-u)} u^k / k! du`` in float64, accurate for every ``h > 0``."""
    if h < 1.0:  # alternating series, terms decrease from the first: 30 terms reach double precision for h < 1
        total, term = 0.0, h / math.factorial(k + 1)
        for j in range(30):
            total += term
            term *= -h / (j + k + 2)
        return total
    g = -math.expm1(-h)  # g_0; h^k g_k = h^k / k! - h^{k-1} g_{k-1}  (integration by parts)
    for i in range(1, k + 1):
        g = 1.0 / math.factorial(i) - g / h
    return g


def solve_small(rows: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve a small float64 linear system (at most 3 x 3) given as Python lists."""
    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(rhs, dtype=torch.float64)
    return torch.linalg.solve(a, b).tolist()


def interp_weights(rs: list[float], g: list[float]) -> list[float]:
    """Weights ``w`` with ``sum_k g_k D_k = sum_j w_j (m_j - m_0)`` when ``D`` interpolates ``m`` at ratios ``rs``.

    ``m_j - m_0 = sum_{k>=1} r_j^k / k! D_k`` (the Taylor polynomial through the points), so
    ``D = V^{-1} (m - m_0)`` with ``V[j][k] = r_j^k / k!`` and ``w = V^{-T} g``.
    """
    q = len(rs)
    if q == 0:
        return []
    rows = [[rs[j] ** (k + 1) / math.factorial(k + 1) for j in range(q)] for k in range(q)]  # V^T
    return solve_small(rows, g[1 : q + 1])


MAX_STEP_RATIO = 1 + math.sqrt(2)  # the largest log-SNR step ratio taken at full multistep order (step_order)


class ExpSolver(GridSolver):
    """An exponential integrator in log-SNR time: ODE kind, one call per step, the ``"logsnr"`` grid by default,
    and the multistep warm-up / ``lower_order_final`` rule of :meth:`step_order`."""

    kind = "ode"
    nfe_per_step = 1
    default_grid = "logsnr"
    max_order: int = 1

    def __init__(self, lower_order_final: bool | None = None):
        if lower_order_final is not None and not isinstance(lower_order_final, bool):
            raise ValueError(
                f"{self.name}: lower_order_final must be True, False or None (auto), got {lower_order_final!r}"
            )
        self.lower_order_final = lower_order_final

    def step_order(self, ctx, k: int) -> int:
        """Order used at step ``k`` of the run: warm-up ``k + 1``, and ``n - k`` near the end if lower-order final
        (``lower_order_final=None``, the default: below 15 steps, as Lu et al. 2022b advise).

        With the default, a step whose log-SNR length exceeds ``1 + sqrt(2)`` times the previous one's is taken at
        first order: past that ratio a variable-step two-step method is no longer zero-stable (Grigorieff 1983),
        and the extrapolation weight ``h / (2 h_prev)`` of the 2M step amplifies the last difference. Equal
        log-SNR steps never meet it; a uniform grid in ``t`` ends with one (on the flow path at
        20 steps the last step is 5.5 times the one before), where full order cost up to 5x the error.
        """
        n = ctx.n_steps
        lof = n < 15 if self.lower_order_final is None else self.lower_order_final
        q = min(self.max_order, k + 1)
        q = min(q, n - k) if lof else q
        if q > 1 and self.lower_order_final is None:
            c = ctx.coefs
            if c[k + 1].lam - c[k].lam > MAX_STEP_RATIO * (c[k].lam - c[k - 1].lam):
                q = 1
        return q
