"""The bench's leaf: its configuration (:class:`BenchConfig`), the quick grid, the problem names and the model
timer (:class:`TimedModel`). The problems, the runner, the checks and the report import it; it imports none of
them, so they form no cycle.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import torch

from ..fitted import GRID_CANDIDATES, MAX_STEPS, MIN_BATCH, FittedSolver, calls_per_sample, fit_solver

__all__ = [
    "BenchConfig",
    "TimedModel",
    "OverBudget",
    "min_fit_budget",
    "FITTED",
    "QUICK_METHODS",
    "QUICK_PEERS",
    "QUICK_FLOW_PEERS",
    "PATHS",
    "split_problems",
    "expand_problems",
    "family_of",
]

FITTED = "fitted"  # the method name of :func:`scoresde.fit_solver` in the bench: one fit per problem and budget
# The quick grid (``make bench``): the frontier (fitted, UniPC on its own and on the fitted grid, DPM-Solver++
# 3M, torchdiffeq's midpoint on the quadratic grid: the solvers guide's choice at 10-20 NFE on VP), the classics
# (DDPM, DDIM, torchsde's Euler-Maruyama, torchdiffeq's RK4 and dopri5, EDM's Heun), and the peers' best
# configurations: in the full grid (n = 20,000) k-diffusion's LMS was the best peer at 5 and 10 NFE on gmm16,
# gmm64 and at 5 on ring, its DPM-fast at 20 on gmm16 and gmm64, diffusers' UniPC / DPM-Solver++ (2M)
# at 10 on ring and their Karras-sigma variants at 20 and beyond; DDIM is the classic.
QUICK_METHODS = (
    FITTED,
    "unipc",
    "unipc@optimized",
    "ode-midpoint@quadratic",
    "dpm++3m",
    "dpm++2m",
    "edm-heun",
    "ddim",
    "ddpm",
    "sde-euler",
    "ode-rk4",
    "ode-dopri5",
)
QUICK_PEERS = (
    "kdiff-lms",
    "kdiff-dpm_fast",
    "diffusers-unipc",
    "diffusers-unipc-karras",
    "diffusers-dpmpp_2m-karras",
    "diffusers-ddim",
)
# On the flow path (``--sde flow``): the schedulers flow-matching models ship with, at shift 1 and SD3's 3, and
# torchdiffeq on the velocity.
QUICK_FLOW_PEERS = (
    "flow-diffusers-euler",
    "flow-diffusers-heun",
    "flow-diffusers-unipc",
    "flow-diffusers-unipc-shift3",
    "flow-diffusers-dpmpp_2m",
    "flow-torchdiffeq-midpoint",
)
PATHS = ("vp", "flow")  # --sde: the path of the exact problems, names of scoresde/sde_names.py


def min_fit_budget(steps: int) -> int:
    """The fewest sample-evaluations :func:`scoresde.fit_solver` accepts for a ``steps``-step fit with its default
    options (the bench's): a fitting batch of :data:`scoresde.fitted.MIN_BATCH` samples, each costing the teacher's
    calls plus one, and per candidate grid (:data:`scoresde.fitted.GRID_CANDIDATES`) a teacher-forced run and a
    student run per corrector variant; plus the fingerprint probe's rows (:attr:`FittedSolver.PROBE_ROWS`). At that
    budget the default grid search makes no evaluation (it needs a batch of :data:`scoresde.fitted.SEARCH_BATCH`)."""
    default = {k: v.default for k, v in inspect.signature(fit_solver).parameters.items()}
    variants = 2 if default["corrector"] is None else 1
    per_sample = calls_per_sample(steps, len(GRID_CANDIDATES), variants, default["teacher_steps"])
    return MIN_BATCH * per_sample + FittedSolver.PROBE_ROWS


def split_problems(text: str) -> tuple[str, ...]:
    """``--problems``: comma-separated names, where the ``key=value`` parts of a ``gmm-family:`` name stay with it:
    ``"ring,gmm-family:d=16,k=4,seed=100-109"`` is ``("ring", "gmm-family:d=16,k=4,seed=100-109")``."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if names and names[-1].startswith("gmm-family") and "=" in part and ":" not in part:
            names[-1] += "," + part
        else:
            names.append(part)
    return tuple(names)


def expand_problems(names) -> tuple[str, ...]:
    """Problem names with each seed range of a family (``gmm-family:d=16,k=4,seed=100-109``) spelled out, one
    member per seed, in order; other names unchanged, duplicates dropped."""
    out: list[str] = []
    for name in names:
        head, _, body = str(name).partition(":")
        parts = body.split(",") if head == "gmm-family" and body else []
        rng = [p for p in parts if p.startswith("seed=") and "-" in p[5:].lstrip("-")]
        if not rng:
            out.append(name)
            continue
        lo, _, hi = rng[0][5:].partition("-")
        if not (lo.isdigit() and hi.isdigit() and int(lo) <= int(hi)):
            raise ValueError(f"--problems: {name!r}: a seed range is seed=A-B with integers A <= B, got {rng[0]!r}")
        rest = [p for p in parts if p != rng[0]]
        out += [f"gmm-family:{','.join([*rest, f'seed={s}'])}" for s in range(int(lo), int(hi) + 1)]
    return tuple(dict.fromkeys(out))


def family_of(name: str) -> str | None:
    """The family of a member's name without its seed (``"gmm-family:d=16,k=4"``), ``None`` for other problems."""
    head, _, body = name.partition(":")
    if head != "gmm-family":
        return None
    return "gmm-family:" + ",".join(p for p in body.split(",") if p and not p.startswith("seed="))


@dataclass
class BenchConfig:
    problems: tuple[str, ...] = ("ring", "gmm16", "gmm64")
    methods: tuple[str, ...] = ()  # empty: every registered method plus `variants`; "name@grid" picks a grid
    variants: tuple[str, ...] = ("unipc@optimized", "dpm++2m@optimized", "ode-midpoint@quadratic", FITTED)
    peers: tuple[str, ...] | None = None  # None: every installed peer; () none
    budgets: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    tolerances: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    n: int = 20_000
    seed: int = 0
    floor_seeds: int = 5
    out: str = "results"
    tag: str = "full"
    device: str = "cpu"  # where our methods run (network, state, noise); peers run on the CPU
    dtype: str = "float32"  # our methods' state: float32, float64, or bfloat16 (float32 state, network autocast)
    fit_budget: int | None = None  # sample-evaluations per fit of `fitted`; None: see :meth:`fit_budget_for`
    sde: str = "vp"  # the exact problems' path: "vp" (VPSDE()) or "flow" (FlowSDE(), with the flow peers)

    def __post_init__(self):
        self.problems = expand_problems(self.problems)

    def fit_budget_for(self, steps: int) -> int:
        """The budget of the ``fitted`` fit of ``steps`` steps: ``fit_budget`` if given, else 2 model calls per bench
        sample, at most 10,000 (the fit's own default: 0.5 amortised NFE at ``n = 20,000``), raised to the least the
        fit accepts (:func:`min_fit_budget`) where ``n`` is small. Either way the fit's calls are counted in the rows
        (``fit_evals``, ``nfe_amortised``)."""
        if self.fit_budget is not None:
            return self.fit_budget
        return max(min(10_000, 2 * self.n), min_fit_budget(steps))

    def fitted_steps(self) -> list[int]:
        """The step counts ``fitted`` is fitted for: each budget the fitted family takes (2 to its ``MAX_STEPS``)."""
        return [b for b in dict.fromkeys(self.budgets) if 2 <= b <= MAX_STEPS]

    def runs_fitted(self) -> bool:
        """Whether ``fitted`` is among the methods (given, or by default among the variants)."""
        return FITTED in (self.methods or self.variants)

    @property
    def max_budget(self) -> int:
        """The largest NFE budget: where an adaptive method's run is stopped (see :class:`TimedModel`)."""
        return max(self.budgets)

    @classmethod
    def quick(cls, **kw) -> BenchConfig:
        """The main job's grid: the frontier, the classic baselines and the peers' best (:data:`QUICK_METHODS`,
        :data:`QUICK_PEERS` of those installed) on ring and gmm16, 4,000 samples, NFE 5 to 50, 3 floor seeds."""
        if "peers" not in kw:
            from .. import peers

            have = peers.available_peers()
            kw["peers"] = tuple(p for p in (QUICK_FLOW_PEERS if kw.get("sde") == "flow" else QUICK_PEERS) if p in have)
        base = dict(
            problems=("ring", "gmm16"),
            methods=QUICK_METHODS,
            budgets=(5, 10, 20, 50),
            tolerances=(1e-3,),
            n=4000,
            floor_seeds=3,
            tag="quick",
        )
        return cls(**{**base, **kw})


class OverBudget(Exception):
    """Raised by a :class:`TimedModel` asked for one call more than its ``max_calls``."""

    def __init__(self, calls: int):
        super().__init__(f"stopped after {calls} model calls")
        self.calls = calls


class TimedModel:
    """Wraps a model and accumulates the seconds spent inside it (synchronising CUDA around each call) and the
    calls made (``calls``); with ``max_calls``, the call after the last allowed one raises :class:`OverBudget`
    instead of running (the bench stops an adaptive method there: it has left every NFE budget behind)."""

    def __init__(self, model, max_calls: int | None = None):
        self.model, self.seconds, self.calls, self.max_calls = model, 0.0, 0, max_calls

    def __call__(self, x, t):
        if self.max_calls is not None and self.calls >= self.max_calls:
            raise OverBudget(self.calls)
        self.calls += 1
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        out = self.model(x, t)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        self.seconds += time.perf_counter() - t0
        return out
