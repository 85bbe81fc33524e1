"""Fitted few-step solvers: a time grid and per-step multistep coefficients fitted once to a teacher, kept as a value.

**The family.** A multistep exponential integrator in data prediction (the form of :mod:`scoresde.solvers.dpm`):
step ``k`` from ``t_k`` to ``t_{k+1}`` makes one model call ``m_k = x0(x_k, t_k)`` and updates

    x_{k+1} = (sigma_{k+1} / sigma_k) x_k + alpha_{k+1} sum_{j=0}^{q-1} c_{k,j} m_{k-j},

the linear part exact and the ``q <= 3`` coefficients of each step free. DPM-Solver++ (2M/3M) is one point of
this family (``c`` from polynomial interpolation in ``lambda``); the fit starts there. Every step keeps
``sum_j c_{k,j} = g_0(h_k) = 1 - e^{-h_k}``, so a constant data prediction is still integrated exactly (the
consistency condition of any such solver), and the free parameters are the weights of the differences
``m_{k-j} - m_k``. This is the coefficient part of S4S (2025) and of DPM-Solver-v3's empirical statistics (Zheng
et al. 2023) in its simplest form: per-step scalars, no per-dimension statistics, so a fit needs few samples.

**The file format.** :meth:`FittedSolver.save` writes ``fitted.safetensors`` (the grid, the weights, the corrector
weights and the fingerprint probe) and ``fitted.json`` (what it was fitted for, the fit's cost, the tensors' SHA-256);
:func:`load_fitted` reads them back and refuses a damaged or replaced file. The fit itself is :mod:`.fit`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..noise import NoiseSource
from ..param import Score
from ..solvers.base import GridSolver, State

__all__ = ["FittedSolver", "FittedState", "FittedCorrector", "load_fitted", "fingerprint", "FitError"]

FORMAT = "scoresde.fitted/1"
_PROBE_SEED, _PROBE_T, _PROBE_N = 7_000_001, 0.5, 8


class FitError(ValueError):
    """A fitted solver was used where it does not apply, or its file is damaged."""


def fingerprint(score: Score, dims: tuple[int, ...], dtype: torch.dtype | None = None, device=None) -> Tensor:
    """What the score returns on a fixed probe (``x0`` of 8 fixed points at ``t = 0.5 T``), float64, one model call.

    Stored with a fitted solver: :meth:`FittedSolver.check` compares it with the score it is used with, so a
    model changed after the fit (retrained, other weights, another problem) is told apart from the same model on
    another device or dtype (the comparison allows float32 rounding).
    """
    sde = score.sde
    x = sde.prior_std() * NoiseSource(_PROBE_SEED).randn((_PROBE_N, *dims), stream=0, dtype=torch.float64)
    t = _PROBE_T * sde.T
    with torch.no_grad():
        if dtype is None and device is None:  # the model's own, where it has parameters; float64 on the CPU else
            p = next((p for p in getattr(score.model, "parameters", lambda: iter(()))()), None)
            if p is not None and p.is_floating_point():
                dtype, device = p.dtype, p.device
        x = x.to(dtype=dtype or torch.float64, device=device)
        return score.x0(x, t).detach().to("cpu", torch.float64).flatten(1)


@dataclass(frozen=True)
class FittedCorrector:
    """What the corrector of step ``k`` needs at step ``k + 1``: the state ``x`` the step started from and the
    coefficients ``c`` of its start time."""

    x: Tensor
    c: object


@dataclass(frozen=True)
class FittedState(State):
    """The fitted solver's state: ``history`` holds the data predictions of past steps, most recent last (the last
    ``q``; the base :class:`~scoresde.solvers.MultistepState` pairs them with their ``lambda``, which these fixed
    weights do not need), and the corrector the next step applies, if the solver has one."""

    history: tuple[Tensor, ...] = ()
    corrector: FittedCorrector | None = None


@dataclass
class FittedSolver(GridSolver):
    """A grid and per-step multistep coefficients fitted to a score (:func:`fit_solver`); pass it as ``method``.

    Attributes:
        grid: the times, float64, decreasing from ``T`` to ``t_min``.
        coefs: ``(steps, q)`` weights ``c[k, j]`` of ``m_{k-j}`` (zero where a step has fewer past calls).
        meta: what it was fitted for and what the fit cost: ``sde``, ``dims``, ``fit_nfe`` (model calls per
            fitting sample, teacher included), ``fit_evals`` (sample-evaluations in total), the losses, the
            teacher and the score's fingerprint.
    """

    grid: Tensor = None
    coefs: Tensor = None
    meta: dict = field(default_factory=dict)
    probe: Tensor | None = None
    corrector: Tensor | None = None

    name = "fitted"
    kind = "ode"
    order = 2
    nfe_per_step = 1
    own_grid = True
    state_type = FittedState
    PROBE_ROWS = _PROBE_N  # the rows of the one model call :meth:`check` makes

    def __post_init__(self):
        self.grid = check_grid_tensor(self.grid)
        self.coefs = torch.as_tensor(self.coefs, dtype=torch.float64).cpu()
        if self.coefs.ndim != 2 or self.coefs.shape[0] != self.steps or not torch.isfinite(self.coefs).all():
            raise FitError(f"coefficients must be finite, of shape ({self.steps}, q); got {tuple(self.coefs.shape)}")
        self._c = self.coefs.tolist()
        self._d = None
        if self.corrector is not None:
            self.corrector = torch.as_tensor(self.corrector, dtype=torch.float64).cpu()
            q = self.coefs.shape[1]
            if self.corrector.shape != (max(self.steps - 1, 0), q + 1) or not torch.isfinite(self.corrector).all():
                raise FitError(f"corrector weights must be finite, of shape ({self.steps - 1}, {q + 1})")
            self._d = self.corrector.tolist()

    @property
    def steps(self) -> int:
        return self.grid.numel() - 1

    @property
    def fit_nfe(self) -> int:
        """Model calls of the fit per fitting sample (teacher included); ``fit_evals`` is the total."""
        return int(self.meta.get("fit_nfe", 0))

    @property
    def fit_evals(self) -> int:
        return int(self.meta.get("fit_evals", 0))

    @property
    def default_grid(self):  # noqa: D102 - sample() takes the fitted grid
        return self.grid

    def __repr__(self) -> str:
        return f"FittedSolver(steps={self.steps}, q={self.coefs.shape[1]}, sde={self.meta.get('sde')})"

    # --- the solver --------------------------------------------------------------------------------
    def step(self, ctx, k, x, state):
        ct, cs = ctx.coefs[k], ctx.coefs[k + 1]
        m0 = ctx.ev.x0(x, ct)
        q = self.coefs.shape[1]
        past = state.history[::-1]  # most recent first, as the weights c[k, j] of m_{k-j} are
        fc = state.corrector
        if fc is not None:  # the corrector of step k - 1, with this call at its predicted point
            x = _combine((ct.sigma / fc.c.sigma) * fc.x, ct.alpha, self._d[k - 1], (m0, *past))
            x = ctx.ev.check(x, ct.t, "the corrector")
        ms = (m0, *past)[:q]
        out = _combine((cs.sigma / ct.sigma) * x, cs.alpha, self._c[k], ms)
        corrector = FittedCorrector(x, ct) if self._d is not None and k < self.steps - 1 else None
        return out, FittedState(m0, ms[::-1], corrector)

    # --- what it applies to --------------------------------------------------------------------------
    def check(
        self, score: Score, shape: tuple[int, ...] | None = None, grid: Tensor | None = None, dtype=None, device=None
    ) -> int:
        """Refuse a score on another SDE, a sample shape or grid it was not fitted for, or a changed model (probed
        in ``dtype`` on ``device``, those of the sampling run; default: the model's parameters').

        Returns the model calls the check made: 1 (the probe, on :attr:`PROBE_ROWS` rows), or 0 for a solver saved
        without a probe. :func:`~scoresde.sample` reports it as ``Samples.check_nfe``."""
        if repr(score.sde) != self.meta.get("sde"):
            raise FitError(f"this solver was fitted for {self.meta.get('sde')}, not for {score.sde!r}")
        dims = tuple(self.meta.get("dims", ()))
        if shape is not None and tuple(shape[1:]) != dims:
            raise FitError(
                f"this solver was fitted for samples of shape (batch, {', '.join(map(str, dims))}), not {tuple(shape)}"
            )
        if grid is not None and not torch.equal(torch.as_tensor(grid, dtype=torch.float64).cpu(), self.grid):
            raise FitError("a fitted solver runs on its own grid; do not pass grid, t_min or T")
        if self.probe is not None:
            now = fingerprint(score, dims, dtype, device)
            if now.shape != self.probe.shape or not torch.allclose(now, self.probe, rtol=1e-4, atol=1e-5):
                diff = float((now - self.probe).abs().max()) if now.shape == self.probe.shape else math.inf
                raise FitError(
                    f"the score differs from the one this solver was fitted to (fingerprint {self.meta.get('score')};"
                    f" max difference on the probe {diff:.3g}): refit with sd.fit_solver"
                )
            return 1
        return 0

    # --- files -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/fitted.safetensors`` and ``path/fitted.json`` (atomically); returns the folder."""
        from safetensors.torch import save as st_save

        from ..util import atomic_write_bytes, atomic_write_text

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"grid": self.grid.contiguous(), "coefs": self.coefs.contiguous()}
        if self.probe is not None:
            tensors["probe"] = self.probe.contiguous()
        if self.corrector is not None:
            tensors["corrector"] = self.corrector.contiguous()
        blob = st_save(tensors)
        meta = {"format": FORMAT, "tensors_sha256": hashlib.sha256(blob).hexdigest(), **self.meta}
        atomic_write_bytes(path / "fitted.safetensors", blob)
        atomic_write_text(path / "fitted.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
        return path


def _combine(base: Tensor, alpha: float, weights: list[float], ms) -> Tensor:
    for w, m in zip(weights, ms, strict=False):
        if w != 0.0:
            base = base + (alpha * w) * m
    return base


def check_grid_tensor(grid) -> Tensor:
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if grid.ndim != 1 or grid.numel() < 2 or not (grid[1:] < grid[:-1]).all():
        raise FitError("a fitted grid must be 1-D, strictly decreasing, with at least 2 points")
    return grid


def load_fitted(path: str | Path) -> FittedSolver:
    """Read a :class:`FittedSolver` written by :meth:`FittedSolver.save` (checked against its recorded hash)."""
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        meta = json.loads((path / "fitted.json").read_text())
        blob = (path / "fitted.safetensors").read_bytes()
    except FileNotFoundError as e:
        raise FitError(f"no fitted solver at {path}: {e.filename} is missing") from None
    except json.JSONDecodeError as e:
        raise FitError(f"{path / 'fitted.json'} is not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise FitError(f"{path}: unknown format {meta.get('format')!r} (expected {FORMAT!r})")
    if hashlib.sha256(blob).hexdigest() != meta.get("tensors_sha256"):
        raise FitError(f"{path / 'fitted.safetensors'} does not match the hash in fitted.json (damaged or replaced)")
    tensors = st_load(blob)
    meta = {k: v for k, v in meta.items() if k not in ("format", "tensors_sha256")}
    return FittedSolver(tensors["grid"], tensors["coefs"], meta, tensors.get("probe"), tensors.get("corrector"))
