"""The one door from a solver to the score (:class:`Evaluator`) and the error it raises (:class:`NonFiniteError`).

Nothing here knows the step a run is at: an evaluator names the time and the model call of a bad value, and
whoever knows the step (the stepping loop, an engine's right-hand side from ``t``) adds it to the error it catches
with :meth:`NonFiniteError.locate`. An evaluator is built per run and is never written to during one; the loop
takes a :meth:`Evaluator.view` with its own checking rule instead of changing the run's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor

from ..param import Score
from ..sde import SDE, Coefs

__all__ = ["Evaluator", "NonFiniteError", "CHECKS"]

CHECKS = ("step", "call", "end")


class NonFiniteError(FloatingPointError):
    """The score (or the state) became NaN or infinite during sampling; the message names the step and time.

    ``NonFiniteError(head, where)`` reads ``"<head> at <where>"``; :meth:`locate` puts ``"step k of n, "`` in front
    of ``where`` once (the innermost run that knows the step names it).
    """

    def __init__(self, head: str, where: str = ""):
        super().__init__(f"{head} at {where}" if where else head)
        self.head, self.where, self.step = head, where, None

    def locate(self, k: int, n_steps: int | None) -> NonFiniteError:
        """This error with ``"step k + 1 of n_steps"`` added (0-based ``k``), unless a step is named already."""
        if self.step is None and self.where:
            self.step = k
            of = f" of {n_steps}" if n_steps else ""
            self.args = (f"{self.head} at step {k + 1}{of}, {self.where}",)
        return self


class Evaluator:
    """The only door from a solver to the score: one model call per method call, counted and checked.

    ``n_steps`` is the run's number of grid steps (``None`` for adaptive methods), for the engines that derive the
    step of a bad value from its time. ``inputs(x, c)``, if given, maps every state before the model sees it
    (inpainting puts the known entries on their path at the evaluation's time, so that stages inside a step see
    them too).

    ``check`` says how often values are tested for NaN/inf; each test is one host synchronisation (the device
    waits for the host to read a flag), so on a GPU it is a cost per test, not per element:

    - ``"step"`` (default): the stepping loop tests the state once after each step (at most one synchronisation per
      step); model outputs and a step's inner stages are not tested one by one. Solvers that run on an engine
      (torchdiffeq, torchsde) or choose their own steps have no step boundary of ours and test every model call.
    - ``"call"``: every model output, every inner stage and the state after every step (the most precise report:
      the first model call that went wrong).
    - ``"end"``: only the samples at the end (:func:`~scoresde.sample` tests them); no synchronisation in the loop.

    ``check_calls`` (whether model outputs and inner stages are tested) follows ``check``; the stepping loop runs
    on a :meth:`view` that narrows it for ``"step"``.
    """

    def __init__(
        self,
        score: Score,
        method: str,
        n_steps: int | None = None,
        inputs: Callable[[Tensor, Coefs], Tensor] | None = None,
        check: str = "step",
    ):
        if check not in CHECKS:
            raise ValueError(f"check must be one of {', '.join(map(repr, CHECKS))}, got {check!r}")
        self.score, self.method, self.n_steps, self.inputs = score, method, n_steps, inputs
        self.check_mode = check
        self.check_calls = check != "end"
        self._calls = [0]  # this run's model calls, shared with its views (one list per run)

    def view(self, *, check_calls: bool) -> Evaluator:
        """The same evaluator (same score, same count) testing model calls or not: what the stepping loop runs on."""
        if check_calls == self.check_calls:
            return self
        ev = copy.copy(self)
        ev.check_calls = check_calls
        return ev

    @property
    def sde(self) -> SDE:
        return self.score.sde

    @property
    def nfe(self) -> int:
        """Model calls made through this evaluator (and its views) so far: what the score's own counter moved by
        during each of its calls, so another run on the same score (inside a callback) is not counted here."""
        return self._calls[0]

    def where(self, t: float) -> str:
        return f"t = {t:.6g}, model evaluation {self.nfe}"

    def check(self, value: Tensor, t: float, what: str = "the score", *, always: bool = False) -> Tensor:
        """``value`` itself; raises :class:`NonFiniteError` if it holds NaN/inf and is tested (``check_calls``, or
        ``always``)."""
        if not (always or self.check_calls):
            return value
        # One reduction instead of an elementwise mask: NaN and inf propagate into the sum; a sum that
        # overflows from finite values is told apart by the exact check.
        if not torch.isfinite(value.sum()) and not torch.isfinite(value).all():
            raise NonFiniteError(f"{self.method}: {what} returned non-finite values (NaN/inf)", self.where(t))
        return value

    def eps(self, x: Tensor, c: Coefs) -> Tensor:
        x = x if self.inputs is None else self.inputs(x, c)
        n0 = self.score.nfe
        eps = self.score.eps(x, c.t, c)
        self._calls[0] += self.score.nfe - n0
        return self.check(eps, c.t)

    def x0(self, x: Tensor, c: Coefs) -> Tensor:
        x = x if self.inputs is None else self.inputs(x, c)
        n0 = self.score.nfe
        x0 = self.score.x0(x, c.t, c)
        self._calls[0] += self.score.nfe - n0
        return self.check(x0, c.t)

    def eps_and_x0(self, x: Tensor, c: Coefs) -> tuple[Tensor, Tensor]:
        x = x if self.inputs is None else self.inputs(x, c)
        n0 = self.score.nfe
        eps, x0 = self.score.eps_and_x0(x, c.t, c)
        self._calls[0] += self.score.nfe - n0
        return self.check(eps, c.t), self.check(x0, c.t)
