"""Exponential integrators of the probability-flow ODE in log-SNR time: DPM-Solver++, DPM-Solver-2S/3S, UniPC,
and the stochastic DPM-Solver++ (2M) SDE.

**The exponential-integrator form.** Write ``lambda = log(alpha / sigma)`` (half the log-SNR of
:meth:`scoresde.sde.SDE.log_snr`; increasing as ``t`` decreases) and ``x0(x, lambda)`` for the data
prediction. The probability-flow ODE (Song et al. 2021, eq. 13) is linear in ``x`` apart from ``x0``, and
variation of constants gives the exact step ``t -> s`` with ``h = lambda_s - lambda_t > 0``
(Lu et al. 2022b, DPM-Solver++, eq. 8)::

    x_s = (sigma_s / sigma_t) x_t + alpha_s int_0^h e^{-(h - u)} x0(lambda_t + u) du.

Expanding ``x0`` in a Taylor series at ``lambda_t``, with ``D_k = h^k d^k x0 / d lambda^k``::

    x_s = (sigma_s / sigma_t) x_t + alpha_s sum_k g_k(h) D_k + O(h^{p+1}),
    g_k(h) = h^{-k} int_0^h e^{-(h-u)} u^k / k! du = sum_{j>=0} (-1)^j h^{j+1} / (j+k+1)!,

so ``g_0 = 1 - e^{-h}``, ``g_1 = (h + expm1(-h)) / h``, ``g_2 = (h^2/2 - h - expm1(-h)) / h^2``
(:func:`phi`). The methods differ only in how they estimate ``D_1, D_2`` from model calls:

- **DPM-Solver++ (2M, 3M)** (Lu et al. 2022b, Alg. 2 and its third-order extension): from the data
  predictions of the previous ``q - 1`` steps, by polynomial interpolation in ``lambda`` at the ratios
  ``r_j = (lambda_{-j} - lambda_t) / h < 0`` (the Taylor/"phi" form of the update; the paper's Alg. 2 uses
  ``g_0 / 2`` in place of ``g_1``, also second order). One model call per step.
- **DPM-Solver-2S / 3S, data prediction** (Lu et al. 2022a, DPM-Solver, Alg. 1 and 2, transferred to data
  prediction as in Lu et al. 2022b, sec. 4): intermediate points at ``lambda_t + r h`` inside the step.
  2S: ``r = 1/2``, ``D_1 = (m_1 - m_0) / r``. 3S: ``r_1 = 1/3, r_2 = 2/3``; the final update uses only
  ``g_1 (m_2 - m_0) / r_2``: since ``r_2 = 2/3``, ``g_1 (m_2 - m_0) / r_2 = g_1 D_1 + g_1 r_2 D_2 / 2 + ...``
  and ``h g_1 r_2 / 2 = h^2 / 6 + O(h^3) = h g_2 + O(h^2)``, the second-derivative term is matched to
  third order (Lu et al. 2022a, Thm. 3.2). 2 / 3 model calls per step; a budget that is not a multiple of
  the step cost is rounded down (``steps = budget // nfe_per_step``), never exceeded.
- **UniPC** (Zhao et al. 2023, eq. 6-9 and Alg. 2, data prediction): the same update with
  ``sum_k g_k D_k`` replaced by ``B(h) sum_m a_m (m_m - m_0) / r_m``, the ``a_m`` solving
  ``sum_m a_m r_m^{k-1} = k! g_k(h) / B(h)`` for ``k = 1..p`` (``B(h) = h`` for ``"bh1"``,
  ``B(h) = 1 - e^{-h}`` for ``"bh2"``). The predictor UniP-p uses the ``p - 1`` previous points; the
  corrector UniC adds the model call at the predicted point (``r = 1``), which the next step reuses, so a step
  still costs one call and the order rises from ``p`` to ``p + 1``. No corrector after the final step.
- **DPM-Solver++ (2M) SDE** (Lu et al. 2022b, sec. 5 and App. (SDE-DPM-Solver++)): the reverse SDE in the
  same variables has the exact solution ``x_s = (sigma_s/sigma_t) e^{-h} x_t + alpha_s int_0^h 2 e^{-2(h-u)}
  x0 du + sigma_s sqrt(1 - e^{-2h}) z``; with ``int_0^h 2 e^{-2(h-u)} u^k/k! du = h^k g_k(2h)`` the update is
  ``x_s = (sigma_s/sigma_t) e^{-h} x_t + alpha_s (g_0(2h) m_0 + g_1(2h) D_1) + sigma_s sqrt(-expm1(-2h)) z``.
  Its first-order step is DDPM's posterior (DDIM with ``eta = 1``).

Every method here defaults to the ``"logsnr"`` grid (``default_grid``, what ``sample(grid=None)`` uses); the
``"optimized"`` grid (:func:`scoresde.grids.optimized_grid`) measures better for ``unipc``, ``dpm++2m`` and
``dpm2s`` at 10-20 NFE but costs a pilot of model calls outside the sample's NFE, so it is opt-in
(``grid="optimized"``).

Multistep methods warm up with lower orders (the first step is first order) and, with
``lower_order_final`` (default: when there are fewer than 15 steps, as in Lu et al. 2022b, sec. 6), step
``k`` of ``N`` uses at most order ``N - k``, which keeps few-step sampling stable near ``t_min``. All step
coefficients are float64 Python floats; ``g_k`` use their power series for ``h < 1`` (no cancellation as
``h -> 0``, the precision pitfall of many-step multistep solvers) and the recursion
``h^k g_k = h^k / k! - h^{k-1} g_{k-1}`` above. Valid for every SDE here (VE: ``alpha = 1``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Evaluator, Solver, SolverResult, check_finite_state, coefs
from .registry import register

__all__ = ["DPMSolverPP2M", "DPMSolverPP3M", "DPMSolver2S", "DPMSolver3S", "UniPC", "DPMSolverPP2MSDE", "phi"]


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


def _lam(sde, t: float) -> tuple[float, float, float]:
    """``(alpha, sigma, lambda = log(alpha / sigma))`` at ``t`` as float64 Python floats."""
    a, s = coefs(sde, t)
    return a, s, math.log(a) - math.log(s)


def _t_at(sde, lam: float) -> float:
    """The time at which ``log(alpha / sigma) = lam`` (through the SDE's inverse of the log-SNR)."""
    return float(sde.t_from_log_snr(torch.tensor(2.0 * lam, dtype=torch.float64)))


def _solve(rows: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve a small float64 linear system (at most 3 x 3) given as Python lists."""
    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(rhs, dtype=torch.float64)
    return torch.linalg.solve(a, b).tolist()


def _interp_weights(rs: list[float], g: list[float]) -> list[float]:
    """Weights ``w`` with ``sum_k g_k D_k = sum_j w_j (m_j - m_0)`` when ``D`` interpolates ``m`` at ratios ``rs``.

    ``m_j - m_0 = sum_{k>=1} r_j^k / k! D_k`` (the Taylor polynomial through the points), so
    ``D = V^{-1} (m - m_0)`` with ``V[j][k] = r_j^k / k!`` and ``w = V^{-T} g``.
    """
    q = len(rs)
    if q == 0:
        return []
    rows = [[rs[j] ** (k + 1) / math.factorial(k + 1) for j in range(q)] for k in range(q)]  # V^T
    return _solve(rows, g[1 : q + 1])


def _resolve_lof(lower_order_final: bool | None, steps: int) -> bool:
    return steps < 15 if lower_order_final is None else lower_order_final


def _check_lof(name: str, lower_order_final) -> bool | None:
    if lower_order_final is not None and not isinstance(lower_order_final, bool):
        raise ValueError(f"{name}: lower_order_final must be True, False or None (auto), got {lower_order_final!r}")
    return lower_order_final


class _ExpSolver(Solver):
    """Shared loop: one state, a history of data predictions at past ``lambda``, trajectory and checks."""

    kind = "ode"
    nfe_per_step = 1
    default_grid = "logsnr"
    max_order: int = 1

    def __init__(self, lower_order_final: bool | None = None):
        self.lower_order_final = _check_lof(self.name, lower_order_final)

    def step_order(self, k: int, n: int, lof: bool) -> int:
        """Order used at step ``k`` of ``n``: warm-up ``k + 1``, and ``n - k`` near the end if ``lof``."""
        q = min(self.max_order, k + 1)
        return min(q, n - k) if lof else q

    def solve(self, ev, x, grid, noise, return_trajectory):
        ts = grid.tolist()
        n = len(ts) - 1
        lof = _resolve_lof(self.lower_order_final, n)
        traj = [x] if return_trajectory else None
        hist: list[tuple[float, Tensor]] = []  # (lambda, x0) of past steps, most recent last
        for k in range(n):
            ev.step = k
            x = self.step(ev, x, ts[k], ts[k + 1], k, self.step_order(k, n, lof), hist, noise)
            x = check_finite_state(ev, x, ts[k + 1])
            if traj is not None:
                traj.append(x)
        return SolverResult(x, grid, torch.stack(traj) if traj is not None else None)

    def step(self, ev: Evaluator, x: Tensor, t: float, s: float, k: int, q: int, hist: list, noise) -> Tensor:
        raise NotImplementedError


class _DPMSolverPPMultistep(_ExpSolver):
    """DPM-Solver++ multistep of order ``max_order`` in data prediction (Lu et al. 2022b)."""

    def step(self, ev, x, t, s, k, q, hist, noise):
        _, s_t, lam_t = _lam(ev.sde, t)
        a_s, s_s, lam_s = _lam(ev.sde, s)
        h = lam_s - lam_t
        m0 = ev.x0(x, t)
        hist.append((lam_t, m0))
        del hist[: -self.max_order]
        past = hist[-q:-1][::-1]  # q - 1 previous points, most recent first
        g = [phi(i, h) for i in range(q)]
        w = _interp_weights([(lam_j - lam_t) / h for lam_j, _ in past], g)
        out = (s_s / s_t) * x + (a_s * g[0]) * m0
        for wj, (_, mj) in zip(w, past, strict=True):
            out = out + (a_s * wj) * (mj - m0)
        return out


@register
class DPMSolverPP2M(_DPMSolverPPMultistep):
    """DPM-Solver++ (2M): second-order multistep exponential integrator in data prediction (Lu et al. 2022b)."""

    name = "dpm++2m"
    order = 2
    max_order = 2


@register
class DPMSolverPP3M(_DPMSolverPPMultistep):
    """DPM-Solver++ (3M): third-order multistep exponential integrator in data prediction (Lu et al. 2022b)."""

    name = "dpm++3m"
    order = 3
    max_order = 3


class _Singlestep(Solver):
    kind = "ode"
    default_grid = "logsnr"

    def solve(self, ev, x, grid, noise, return_trajectory):
        ts = grid.tolist()
        traj = [x] if return_trajectory else None
        for k in range(len(ts) - 1):
            ev.step = k
            x = check_finite_state(ev, self.step(ev, x, ts[k], ts[k + 1]), ts[k + 1])
            if traj is not None:
                traj.append(x)
        return SolverResult(x, grid, torch.stack(traj) if traj is not None else None)

    @staticmethod
    def _stage(ev, lam_t, h, r):
        """The time ``u`` at ``lambda_t + r h``, its coefficients and the exact ratio ``(lambda_u - lambda_t)/h``."""
        u = _t_at(ev.sde, lam_t + r * h)
        a_u, s_u, lam_u = _lam(ev.sde, u)
        return u, a_u, s_u, (lam_u - lam_t) / h


@register
class DPMSolver2S(_Singlestep):
    """DPM-Solver-2S in data prediction: two model calls per step, second order (Lu et al. 2022a/b)."""

    name = "dpm2s"
    order = 2
    nfe_per_step = 2

    def step(self, ev, x, t, s):
        _, s_t, lam_t = _lam(ev.sde, t)
        a_s, s_s, lam_s = _lam(ev.sde, s)
        h = lam_s - lam_t
        m0 = ev.x0(x, t)
        u, a_u, s_u, r = self._stage(ev, lam_t, h, 0.5)
        m1 = ev.x0((s_u / s_t) * x + (a_u * phi(0, r * h)) * m0, u)
        return (s_s / s_t) * x + (a_s * phi(0, h)) * m0 + (a_s * phi(1, h) / r) * (m1 - m0)


@register
class DPMSolver3S(_Singlestep):
    """DPM-Solver-3S in data prediction: three model calls per step, third order (Lu et al. 2022a, Alg. 2)."""

    name = "dpm3s"
    order = 3
    nfe_per_step = 3

    def step(self, ev, x, t, s):
        _, s_t, lam_t = _lam(ev.sde, t)
        a_s, s_s, lam_s = _lam(ev.sde, s)
        h = lam_s - lam_t
        m0 = ev.x0(x, t)
        u1, a_1, s_1, r1 = self._stage(ev, lam_t, h, 1 / 3)
        m1 = ev.x0((s_1 / s_t) * x + (a_1 * phi(0, r1 * h)) * m0, u1)
        u2, a_2, s_2, r2 = self._stage(ev, lam_t, h, 2 / 3)
        x2 = (s_2 / s_t) * x + (a_2 * phi(0, r2 * h)) * m0 + (a_2 * phi(1, r2 * h) * r2 / r1) * (m1 - m0)
        m2 = ev.x0(x2, u2)
        return (s_s / s_t) * x + (a_s * phi(0, h)) * m0 + (a_s * phi(1, h) / r2) * (m2 - m0)


@register
class UniPC(_ExpSolver):
    """UniPC: multistep UniP-p predictor with the UniC corrector, order p + 1 at one call per step (Zhao et al. 2023).

    Options: ``order`` ``p`` in 1..3 (default 2: third order), ``variant`` ``"bh1"`` (``B(h) = h``) or
    ``"bh2"`` (``B(h) = 1 - e^{-h}``, the default: it measured best on the gmm16 benchmark at 5-20 NFE),
    ``lower_order_final``. The declared ``order`` (3) is the default's.
    """

    name = "unipc"
    order = 3

    def __init__(self, order: int = 2, variant: str = "bh2", lower_order_final: bool | None = None):
        if isinstance(order, bool) or order not in (1, 2, 3):
            raise ValueError(f"unipc: order must be 1, 2 or 3, got {order!r}")
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"unipc: variant must be 'bh1' or 'bh2', got {variant!r}")
        super().__init__(lower_order_final)
        self.max_order, self.variant = order, variant

    @staticmethod
    def _coefficients(rs: list[float], rhs: list[float]) -> list[float]:
        """``a`` with ``sum_m a_m r_m^{k-1} = rhs_k`` for ``k = 1..len(rs)``.

        A square system makes ``B(h)`` cancel from the update; as in Zhao et al. (2023, Alg. 2 and their
        code), a single point takes the ``h -> 0`` limit ``a = 1/2`` of ``g_1(h) / B(h)`` instead, which is
        where ``bh1`` and ``bh2`` differ (both keep the order: the difference is ``O(h)`` relative).
        """
        if len(rs) == 1:
            return [0.5]
        return _solve([[r ** (i - 1) for r in rs] for i in range(1, len(rs) + 1)], rhs[: len(rs)]) if rs else []

    def solve(self, ev, x, grid, noise, return_trajectory):
        ts = grid.tolist()
        n = len(ts) - 1
        lof = _resolve_lof(self.lower_order_final, n)
        traj = [x] if return_trajectory else None
        hist: list[tuple[float, Tensor]] = []
        ev.step = 0
        m = ev.x0(x, ts[0])
        for k in range(n):
            ev.step = k
            t, s = ts[k], ts[k + 1]
            _, s_t, lam_t = _lam(ev.sde, t)
            a_s, s_s, lam_s = _lam(ev.sde, s)
            h = lam_s - lam_t
            hist.append((lam_t, m))
            del hist[: -self.max_order]
            q = self.step_order(k, n, lof)
            m0, past = hist[-1][1], hist[-q:-1][::-1]
            rs = [(lam_j - lam_t) / h for lam_j, _ in past]
            big_b = h if self.variant == "bh1" else -math.expm1(-h)
            rhs = [math.factorial(i) * phi(i, h) / big_b for i in range(1, q + 1)]
            base = (s_s / s_t) * x + (a_s * phi(0, h)) * m0
            d1 = [(mj - m0) / r for r, (_, mj) in zip(rs, past, strict=True)]
            # UniP-q: the q - 1 previous points satisfy the first q - 1 order conditions.
            a_p = self._coefficients(rs, rhs)
            x_pred = base
            for aj, dj in zip(a_p, d1, strict=True):
                x_pred = x_pred + (a_s * big_b * aj) * dj
            if k == n - 1:  # no corrector after the final step: it would cost one more call
                x = x_pred
            else:
                ev.step = k + 1  # this call is the next step's model evaluation
                m = ev.x0(check_finite_state(ev, x_pred, s), s)
                ev.step = k
                # UniC-q: add the new point (r = 1) and satisfy q conditions.
                a_c = self._coefficients(rs + [1.0], rhs)
                x = base
                for aj, dj in zip(a_c, d1 + [m - m0], strict=True):
                    x = x + (a_s * big_b * aj) * dj
            x = check_finite_state(ev, x, s)
            if traj is not None:
                traj.append(x)
        return SolverResult(x, grid, torch.stack(traj) if traj is not None else None)


@register
class DPMSolverPP2MSDE(_ExpSolver):
    """DPM-Solver++ (2M) SDE: the exact-linear-part integrator of the reverse SDE (Lu et al. 2022b, sec. 5)."""

    name = "dpm++2m-sde"
    kind = "sde"
    order = 1
    max_order = 2

    def step(self, ev, x, t, s, k, q, hist, noise):
        _, s_t, lam_t = _lam(ev.sde, t)
        a_s, s_s, lam_s = _lam(ev.sde, s)
        h = lam_s - lam_t
        m0 = ev.x0(x, t)
        hist.append((lam_t, m0))
        del hist[: -self.max_order]
        out = (s_s / s_t * math.exp(-h)) * x + (a_s * phi(0, 2 * h)) * m0
        if q > 1:
            lam_1, m1 = hist[-2]
            # D_1 = h x0' ~ (m_1 - m_0) / r with r = (lambda_1 - lambda_t) / h < 0; int 2e^{-2(h-u)} u du = h g_1(2h).
            out = out + (a_s * phi(1, 2 * h) * h / (lam_1 - lam_t)) * (m1 - m0)
        z = noise.randn(x.shape, stream=k + 1, dtype=x.dtype, device=x.device)
        return out + (s_s * math.sqrt(-math.expm1(-2 * h))) * z
