"""The fit of a :class:`~scoresde.fitted.FittedSolver` (:func:`fit_solver`): grid and weights from a teacher.

**Why this family and how it is fitted.** At 3-6 steps the error of a multistep method is dominated by where and how it
makes and weighs the few model calls it has; the final state is linear in the weights: with ``lambda = log(alpha /
sigma)``, the update of :mod:`.solver` unrolls to

    x_N = (sigma_N / sigma_0) x_0 + sigma_N sum_k e^{lambda_{k+1}} sum_j c_{k,j} m_{k-j}.

So for fixed model calls the best weights are a linear least-squares problem against the teacher's end states.
Each step's weights are fitted on teacher-forced calls (the model at the teacher's states on the grid: ``steps``
calls), and the variant (predictor only, or with UniC-style corrector weights) and the grid are chosen by the
student's own end-state error on the fitting batch (a student run: ``steps`` more calls). No gradient through the
model is taken, so any score works (exact, a network, a guided one) and the cost is model calls only, all counted
in ``fit_nfe``. The grid is first chosen among named candidates (``"logsnr"``, ``"karras"``, power laws in ``t``,
the error-equidistributing ``"optimized:p"``), then, at few steps, moved point by point by the grid search of
:mod:`.search` on the same loss.

**Measured** (``python benchmarks/fitted_families.py``; mode-conditional SWD over its two-sample floor, n = 20,000,
the default budget of 10,000 sample-evaluations, teacher and search included; the table is in the solvers guide):
on held-out members of six families of exact Gaussian mixtures the searched fit is the best method we have at 5
NFE (and below plain Euler's median at 4 NFE + 0.5 amortised for the fit), and at 10 NFE within 10% of the floor on
the 16-D and 32-D families. Before the search (December 2026, 40,000 sample-evaluations) the median over eight
held-out ``gmm-family:d=16,k=4`` members was 2.55x at 5 NFE and 1.09x at 10; the same fit at 10,000 gave the same
figures on the choosing members (2.53x against 2.47x at 5 steps on ``fam16``), so the default budget is 10,000
(0.5 model calls per sample amortised over 20,000). At 20 steps the fits were unstable, so ``steps`` is limited
to 10 (:data:`MAX_STEPS`). The grid-choice criterion (the 0.75 quantile, below) was made on ring and gmm16.

**Teacher.** ``dpm++3m`` (third order) at ``teacher_steps`` equal steps in log-SNR from the same prior draws, on
a fitting batch whose noise (``fit_seed``) is disjoint from any sampling seed; its state at a candidate grid's
times is read off its steps (exponential-integrator form, linear data prediction in between). Its data
predictions also give the ``"optimized:p"`` candidates (the error-equidistributing grid of :func:`scoresde.fit_grid`)
at no extra cost.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from ..checks import check_int
from ..grids import check_grid, equidistributed_grid, time_grid, unit_steps
from ..noise import NoiseSource
from ..param import Score
from ..run import prepare_run, record_run
from ..solvers.exponential import interp_weights, phi
from ..solvers.registry import get_solver
from .search import calls_per_sample, plan, search_grid
from .solver import FitError, FittedSolver, fingerprint

__all__ = ["fit_solver", "candidate_grid", "MAX_STEPS", "GRID_CANDIDATES", "REVISION"]

MAX_STEPS = 10
# What a fit does, by revision (the bench keys its fitted rows on it, so a changed fit is not resumed):
# 1: the named candidate grids; 2: and the grid search after them (December 2026).
REVISION = 2
MIN_BATCH = 16  # the smallest fitting batch a fit accepts (its least squares needs rows to spare)
_PROBE_N = FittedSolver.PROBE_ROWS  # the fingerprint probe's rows, in the budget too
# The fit is judged by this quantile of the per-sample squared distance to the teacher: the mean is ruled by the
# few samples that change mode, the median ignores the spread within modes that the quality metric sees.
# Measured on ring and gmm16 at 5 steps (9 grids each): the 0.75 quantile picked the best or a grid within 5%
# of the best mode-SWD ratio on both; the median picked one 1.6x worse on ring, the mean one 2.0x worse on gmm16.
QUANTILE = 0.75
ROBUST = False  # Cauchy reweighting: no measured gain, and it degenerates when most residuals vanish
GRID_CANDIDATES = (
    "logsnr",
    "karras",
    "uniform",
    "power:1.5",
    "power:2",
    "power:2.5",
    "power:3",
    "optimized:2",
    "optimized:3",
)


def _dpm_coefficients(grid_coefs, q_max: int, lower_order_final: bool) -> Tensor:
    """DPM-Solver++ (q_max M) weights ``c[k, j]`` of ``m_{k-j}`` on the grid: the fit's starting point."""
    n = len(grid_coefs) - 1
    c = torch.zeros(n, q_max, dtype=torch.float64)
    for k in range(n):
        ct, cs = grid_coefs[k], grid_coefs[k + 1]
        q = min(q_max, k + 1, n - k if lower_order_final else q_max)
        h = cs.lam - ct.lam
        g = [phi(i, h) for i in range(q)]
        rs = [(grid_coefs[k - j].lam - ct.lam) / h for j in range(1, q)]
        w = interp_weights(rs, g)
        c[k, 0] = g[0] - sum(w)
        for j, wj in enumerate(w, start=1):
            c[k, j] = wj
    return c


def _host(x: Tensor) -> Tensor:
    """The fit's arithmetic (states, data predictions, least squares) is float64 on the CPU: the fitting batch is
    small, and devices without float64 (Apple's MPS) never see it; the model runs in the batch's dtype and device."""
    return x.detach().to("cpu", torch.float64)


def _lstsq(target: Tensor, feats: list[Tensor], prior: Tensor, ridge: float, robust: bool | None = None) -> Tensor:
    """``argmin_c sum_i w_i ||target_i - sum_j c_j feats_ij||^2 + ridge ||F|| ||c - prior||^2`` over samples ``i``.

    ``robust``: after a plain solve, one reweighting with Cauchy weights ``w_i = 1 / (1 + r_i^2 / median r^2)``
    of each sample's residual, so the few samples that change mode within a step do not set the weights for
    all the others (the quality metric is measured within modes)."""
    robust = ROBUST if robust is None else robust
    n = target.shape[0]
    f = torch.stack([v.reshape(n, -1) for v in feats], -1)  # (samples, dims, params)
    y = target.reshape(n, -1)
    w = torch.ones(n, dtype=torch.float64)
    for it in range(2 if robust else 1):
        a = torch.einsum("i,idp,idq->pq", w, f, f)
        scale = float(a.diagonal().mean()) if a.numel() else 1.0
        a = a + ridge * scale * torch.eye(a.shape[0], dtype=torch.float64)
        b = torch.einsum("i,idp,id->p", w, f, y) + ridge * scale * prior
        c = torch.linalg.solve(a, b)
        if it == 0 and robust:
            r2 = (y - f @ c).pow(2).sum(1)
            w = 1.0 / (1.0 + r2 / r2.median().clamp_min(1e-300))
    return c


def candidate_grid(sde, steps: int, name: str) -> Tensor:
    """A named grid of :func:`scoresde.time_grid`, or ``"power:P"``: ``t_i = t_min + (T - t_min) (1 - i / N)^P``
    (``P = 2`` is the quadratic grid; larger ``P`` puts more steps near the data)."""
    if name.startswith("power:"):
        p = float(name[6:])
        if not (math.isfinite(p) and p > 0):
            raise ValueError(f"grid {name!r}: the power must be a finite number > 0")
        u = unit_steps(steps)
        grid = sde.t_min + (sde.T - sde.t_min) * (1 - u) ** p
        grid[0], grid[-1] = sde.T, sde.t_min
        return check_grid(sde, grid)
    return time_grid(sde, steps, name)


class _Teacher:
    """A third-order solve on ``steps`` equal steps in log-SNR (``dpm++3m``), its states and data predictions kept,
    with the state at any time in between from the exponential-integrator form and linear ``x0`` (second order in
    the teacher's step)."""

    def __init__(self, score, x_T, steps: int):
        run = prepare_run(score, time_grid(score.sde, steps, "logsnr"), name="fit_solver (teacher)", x=x_T)
        rec = record_run(get_solver("dpm++3m").make(lower_order_final=False), run, states=True, keep=_host)
        self.tab, self.xs, self.ms = rec.coefs, [_host(x) for x in rec.states], rec.denoised
        self.lam = torch.tensor([c.lam for c in rec.coefs], dtype=torch.float64)
        self.end = self.xs[-1]

    def state(self, c) -> Tensor:
        """The teacher's state at the time of coefficients ``c``."""
        i = int(torch.searchsorted(self.lam, torch.tensor(c.lam, dtype=torch.float64), right=True)) - 1
        i = min(max(i, 0), len(self.tab) - 2)
        ci = self.tab[i]
        h = c.lam - ci.lam
        if h == 0.0:
            return self.xs[i]
        slope = (self.ms[i + 1] - self.ms[i]) / (self.tab[i + 1].lam - ci.lam)
        return (c.sigma / ci.sigma) * self.xs[i] + c.alpha * (phi(0, h) * self.ms[i] + (phi(1, h) * h) * slope)


def _bounded(new: list[float], prior: list[float]) -> bool:
    """An ill-conditioned step (near-equal model calls) can give huge weights that cancel on the fitting batch and
    blow up elsewhere: a fitted weight may differ from its prior by at most ``4 (1 + |prior|)``."""
    return all(math.isfinite(v) and abs(v - p) <= 4 * (1 + abs(p)) for v, p in zip(new, prior, strict=True))


def _local_fit(states, forced, tab, q, c_dpm, ridge) -> Tensor:
    """Per-step weights that best reproduce each teacher step ``x_k -> x_{k+1}`` from the teacher-forced calls."""
    c = c_dpm.clone()
    for k in range(len(forced)):
        ct, cs = tab[k], tab[k + 1]
        g0 = phi(0, cs.lam - ct.lam)
        resid = states[cs.t] - (cs.sigma / ct.sigma) * states[ct.t] - (cs.alpha * g0) * forced[k]
        js = range(1, min(q, k + 1))
        if not js:
            continue
        feats = [cs.alpha * (forced[k - j] - forced[k]) for j in js]
        prior = torch.tensor([float(c_dpm[k, j]) for j in js], dtype=torch.float64)
        sol = _lstsq(resid, feats, prior, ridge).tolist()
        if not _bounded(sol, prior.tolist()):
            continue  # keep DPM-Solver++'s weights on this step
        for j, v in zip(js, sol, strict=True):
            c[k, j] = v
        c[k, 0] = g0 - float(c[k, 1:].sum())
    return c


def _corrector_fit(states, forced, tab, q, ridge) -> Tensor:
    """Per-step corrector weights of ``m_{k+1}, m_k, ..., m_{k-q+1}`` that best reproduce each teacher step."""
    n = len(forced)
    d = torch.zeros(max(n - 1, 0), q + 1, dtype=torch.float64)
    for k in range(n - 1):
        ct, cs = tab[k], tab[k + 1]
        g0 = phi(0, cs.lam - ct.lam)
        resid = states[cs.t] - (cs.sigma / ct.sigma) * states[ct.t] - (cs.alpha * g0) * forced[k]
        others = [forced[k + 1]] + [forced[k - j] for j in range(1, min(q, k + 1))]  # slots 0 and 2..
        feats = [cs.alpha * (m - forced[k]) for m in others]
        sol = _lstsq(resid, feats, torch.zeros(len(feats), dtype=torch.float64), ridge).tolist()
        if not _bounded(sol, [0.0] * len(sol)):
            sol = [0.0] * len(sol)  # no correction on this step
        d[k, 0] = sol[0]  # m_{k+1}
        for j, v in enumerate(sol[1:], start=2):  # m_{k-j+1}
            d[k, j] = v
        d[k, 1] = g0 - float(d[k, 0] + d[k, 2:].sum())  # m_k: the weights sum to g_0
    return d


def _check_fit_arguments(steps, order, grids) -> tuple[list[str], list[int]]:
    """Refuse a step count, order or candidate list :func:`fit_solver` does not fit; returns the named candidates
    and the orders of the ``"optimized:p"`` ones."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
        raise ValueError(
            f"fit_solver: steps must be an int in [2, {MAX_STEPS}], got {steps!r} (the fitted family is for few steps: "
            "at 20 steps its fits on the 40,000-evaluation budget were unstable, and unipc on grid='optimized' is "
            "within 2-4% of the floor there)"
        )
    if order not in (1, 2, 3):
        raise ValueError(f"fit_solver: order must be 1, 2 or 3, got {order!r}")
    if not grids:
        raise ValueError("fit_solver: give at least one candidate grid")
    named = [g for g in grids if not g.startswith("optimized:")]
    orders = [int(g.split(":", 1)[1]) for g in grids if g.startswith("optimized:")]
    if any(p not in (1, 2, 3) for p in orders):
        raise ValueError(f"fit_solver: optimized candidates are 'optimized:1' to 'optimized:3', got {grids}")
    return named, orders


def _model_layout(score, dtype, device):
    """The fitting batch's dtype and device: as given, else those of the model's parameters (float64 on the CPU
    for a model without parameters)."""
    param = next((p for p in getattr(score.model, "parameters", lambda: iter(()))()), None)
    if dtype is None:
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float64
    if device is None and param is not None:
        device = param.device
    return dtype, device


def _fit_weights(score, teacher: _Teacher, grid: Tensor, x_T: Tensor, order: int, ridge: float, steps: int):
    """The predictor and corrector weights on ``grid`` that best reproduce the teacher's steps, from the data
    predictions at the teacher's states at the grid's times (teacher forcing: one model call per step)."""
    forcing = prepare_run(score, grid, name="fit_solver (teacher-forced)", x=x_T)
    ev, tab = forcing.ev, forcing.ctx.coefs
    states = {c.t: teacher.state(c) for c in tab}
    with torch.no_grad():
        forced = [_host(ev.x0(states[c.t].to(x_T.device, x_T.dtype), c)) for c in tab[:-1]]
    c_dpm = _dpm_coefficients(tab, order, lower_order_final=steps < 15)
    return _local_fit(states, forced, tab, order, c_dpm, ridge), _corrector_fit(states, forced, tab, order, ridge)


def fit_solver(
    score: Score,
    steps: int,
    dims: tuple[int, ...],
    *,
    order: int = 3,
    corrector: bool | None = None,
    grids: tuple[str, ...] = GRID_CANDIDATES,
    search: int | None = None,
    budget: int = 10_000,
    ridge: float = 1e-3,
    teacher_steps: int = 64,
    fit_seed: int = 2**61 + 12_345,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> FittedSolver:
    """Fit a :class:`FittedSolver` of ``steps`` model calls to ``score`` (see the module docstring).

    Args:
        score: the score to sample; its ``sde`` is recorded and checked at use.
        steps: model calls per sample of the fitted solver (one per step).
        dims: the per-sample shape.
        order: history length ``q`` (1 to 3) of the multistep family.
        corrector: fit UniPC-style corrector weights too (``True``), not (``False``), or both and keep the better
            (``None``, the default).
        grids: the candidate grids (names of :func:`scoresde.time_grid`, ``"power:P"`` (see :func:`candidate_grid`)
            or ``"optimized:p"``, fitted from the teacher's calls); the one whose fitted solver ends closest to the
            teacher (the 0.75 quantile of the squared distance over the fitting batch) is kept.
        search: evaluations of the grid search that then moves the kept grid's points one at a time in log-SNR
            (each costs ``2 steps`` calls per fitting sample); ``None`` (default): up to :data:`SEARCH` where
            ``steps <= SEARCH_MAX_STEPS`` and the budget keeps a batch of :data:`SEARCH_BATCH`, else none (see
            :func:`~scoresde.fitted.search.plan`); ``0``:
            no search.
        budget: model calls times samples the whole fit may spend, teacher included; it sets the fitting batch.
        ridge: pull towards the DPM-Solver++ weights, relative to the mean curvature of each least squares.
        teacher_steps: steps of the third-order ``dpm++3m`` teacher, equal in log-SNR.
        fit_seed: the fitting batch's noise (kept apart from sampling seeds).
        dtype, device: of the fitting batch (default: those of the model's parameters, else float64 on the CPU).

    Returns:
        the fitted solver; ``fit_nfe`` (per fitting sample) and ``fit_evals`` (total) count every model call.
    """
    sde = score.sde
    named, orders = _check_fit_arguments(steps, order, grids)
    dims = tuple(int(d) for d in dims)
    candidates = {name: candidate_grid(sde, steps, name) for name in named}
    variants = (False, True) if corrector is None else (bool(corrector),)
    if search is not None:
        check_int("fit_solver", "search", search, ge=0)
    batch, search = plan(budget, steps, calls_per_sample(steps, len(grids), len(variants), teacher_steps), search)
    if batch < MIN_BATCH:
        raise ValueError(
            f"fit_solver: a budget of {budget} sample-evaluations gives a fitting batch of {batch} (< {MIN_BATCH}) for "
            f"{len(grids)} candidate grid(s) of {steps} steps, a {teacher_steps}-step teacher and {search} grid-search "
            "evaluation(s); raise it"
        )
    dtype, device = _model_layout(score, dtype, device)
    nfe0 = score.nfe
    x_T = sde.prior_std() * NoiseSource(fit_seed).randn((batch, *dims), stream=0, dtype=dtype, device=device)
    teacher = _Teacher(score, x_T, teacher_steps)
    for p in orders:  # the error-equidistributing grid of :func:`scoresde.fit_grid`, from the teacher's calls
        grid = equidistributed_grid(
            sde, teacher.lam, [m.flatten(1) for m in teacher.ms], p, steps, 0.1, sde.T, sde.t_min
        )
        candidates[f"optimized:{p}"] = check_grid(sde, grid)

    fitting = _Fitting(score, teacher, x_T, order, ridge, steps)
    best, report = fitting.choose(candidates, variants)
    start = best
    if search:
        best, made = search_grid(sde, fitting.evaluator(best), best[1], best, search)
        report["search"] = {"from": start[0], "to": best[0], "evaluations": made}
    fit_nfe = score.nfe - nfe0
    probe = fingerprint(score, dims, dtype, device)
    loss, grid, (name, c, d) = best
    meta = {
        "sde": repr(sde),
        "dims": list(dims),
        "steps": steps,
        "order": order,
        "corrector": d is not None,
        "grid_name": name if best is start else f"{name}, searched",
        **_cost(fit_nfe, batch, fit_seed, teacher_steps),
        "fit_q75_sq_err": report,
        "score": hashlib.sha256(probe.numpy().tobytes()).hexdigest()[:16],
    }
    return FittedSolver(grid, c, meta, probe, d)


class _Fitting:
    """The fit's work on one fitting batch: the weights on a grid (teacher-forced least squares) and the fitted loss,
    the 0.75 quantile over the batch of the squared distance of the student's end state to the teacher's."""

    def __init__(self, score, teacher: _Teacher, x_T: Tensor, order: int, ridge: float, steps: int):
        self.score, self.teacher, self.x_T = score, teacher, x_T
        self.order, self.ridge, self.steps = order, ridge, steps

    def weights(self, grid: Tensor) -> tuple[Tensor, Tensor]:
        return _fit_weights(self.score, self.teacher, grid, self.x_T, self.order, self.ridge, self.steps)

    def loss(self, grid: Tensor, c: Tensor, d: Tensor | None) -> float:
        student = FittedSolver(grid, c, {}, None, d)
        run = prepare_run(self.score, grid, solver=student, name="fit", x=self.x_T)
        x_end = record_run(student, run, final=False).x
        loss = float((_host(x_end) - self.teacher.end).flatten(1).pow(2).sum(1).quantile(QUANTILE))
        return loss if math.isfinite(loss) else math.inf

    def choose(self, candidates: dict, variants) -> tuple[tuple, dict]:
        """The best ``(loss, grid, (name, c, d))`` over the candidate grids and corrector variants, and every loss."""
        best, report = None, {}
        for name, grid in candidates.items():
            c, d = self.weights(grid)
            for with_corrector in variants:
                dd = d if with_corrector else None
                loss = self.loss(grid, c, dd)
                report[f"{name}{'+corrector' if with_corrector else ''}"] = loss if math.isfinite(loss) else None
                if math.isfinite(loss) and (best is None or loss < best[0]):
                    best = (loss, grid, (name, c, dd))
        if best is None:
            raise FitError(f"fit_solver: no candidate grid gave a finite fitted solver of {self.steps} steps: {report}")
        return best, report

    def evaluator(self, best: tuple):
        """``evaluate(grid) -> (loss, (name, c, d))`` for :func:`search_grid`: the kept candidate's variant."""
        name, with_corrector = best[2][0], best[2][2] is not None

        def evaluate(grid):
            c, d = self.weights(grid)
            d = d if with_corrector else None
            return self.loss(grid, c, d), (name, c, d)

        return evaluate


def _cost(fit_nfe: int, batch: int, fit_seed: int, teacher_steps: int) -> dict:
    """What the fit cost and how it was made, for the solver's ``meta``."""
    return {
        "fit_nfe": fit_nfe,
        "fit_evals": fit_nfe * batch + _PROBE_N,  # every call on the fitting batch, one on the probe's 8 rows
        "fit_batch": batch,
        "fit_seed": fit_seed,
        "teacher": f"dpm++3m, {teacher_steps} steps on the logsnr grid",
    }
