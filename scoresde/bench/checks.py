"""The bench's checks, made before any run or file (:func:`validate`): every argument names its flag and the
accepted values in a ``ValueError``; :func:`peer_mismatch` says why a peer cannot run on a problem's path."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from .. import peers
from ..fitted import MIN_BATCH
from ..precision import DTYPES, check_dtype_device
from ..sample import available_methods
from ..sde_names import make_sde
from ..util import unwritable
from .config import FITTED, PATHS, BenchConfig, min_fit_budget
from .problems import BenchProblem

__all__ = ["validate", "fail", "check_out", "peer_mismatch"]


def fail(flag: str, message: str):
    raise ValueError(f"{flag}: {message}")


def _check_methods(cfg: BenchConfig) -> None:
    from ..grids import GRIDS

    known, grids = available_methods(), (*GRIDS, "optimized")
    for method in cfg.methods or cfg.variants:
        if method == FITTED:
            continue
        solver, at, grid = method.partition("@")
        if solver not in known:
            fail(
                "--methods",
                f"unknown method {solver!r}; accepted: {', '.join(known)}, {FITTED} (see `scoresde methods`)",
            )
        if at and grid not in grids:
            fail("--methods", f"unknown grid {grid!r} in {method!r}; accepted: name@{', name@'.join(grids)}")


def _check_peers(cfg: BenchConfig) -> None:
    if cfg.peers is None:
        return
    have = peers.available_peers()
    missing = getattr(peers, "unavailable", None)
    why = ""
    if callable(missing) and missing():
        why = "; not installed: " + "; ".join(f"{k} ({v})" for k, v in missing().items())
    for name in cfg.peers:
        if name not in have:
            fail("--peers", f"unknown or uninstalled peer {name!r}; accepted: {', '.join(have) or 'none'}{why}")


def check_out(out: Path) -> None:
    """Create ``out`` and prove a file can be written there (before any run, not after the last)."""
    problem = unwritable(out)
    if problem:
        fail("--out", f"cannot write results to {str(out)!r}: {problem}")


def validate(cfg: BenchConfig) -> None:
    """Every argument of ``cfg``; raises ``ValueError`` naming the flag and the accepted values. No side effects."""
    if not cfg.problems:
        fail("--problems", "no problem given; accepted: ring, gmm16, gmm64, learned:DIR")
    if not cfg.budgets or not all(isinstance(b, int) and b >= 1 for b in cfg.budgets):
        fail("--nfe", f"NFE budgets must be integers >= 1, got {', '.join(map(str, cfg.budgets)) or 'none'}")
    if not all(math.isfinite(t) and t > 0 for t in cfg.tolerances):
        fail("--tol", f"tolerances must be finite numbers > 0, got {', '.join(map(str, cfg.tolerances))}")
    if not isinstance(cfg.n, int) or cfg.n < 2:
        fail("--n", f"samples per run must be an integer >= 2 (the metrics compare sample sets), got {cfg.n}")
    if cfg.fit_budget is not None and (not isinstance(cfg.fit_budget, int) or cfg.fit_budget < 1):
        fail("--fit-budget", f"must be an integer >= 1 (sample-evaluations per fit), got {cfg.fit_budget!r}")
    _check_fit_budget(cfg)
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        fail("--seed", f"the seed must be an integer >= 0, got {cfg.seed}")
    if cfg.floor_seeds < 1:
        fail("floor_seeds", f"must be >= 1, got {cfg.floor_seeds}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.tag or ""):
        fail("tag", f"must be letters, digits, '_', '-' or '.', got {cfg.tag!r}")
    if cfg.sde not in PATHS:
        fail("--sde", f"unknown path {cfg.sde!r}; accepted: {', '.join(PATHS)}")
    _check_methods(cfg)
    _check_peers(cfg)
    for name in cfg.peers or ():
        if peers.peer_path(name) != cfg.sde:
            fail("--peers", f"{name!r} samples the {peers.peer_path(name)} path, not --sde {cfg.sde}")
    _check_device(cfg)


def _check_fit_budget(cfg: BenchConfig) -> None:
    """A given ``--fit-budget`` too small for a planned ``fitted`` fit is refused now, not found out at its run."""
    if cfg.fit_budget is None or not cfg.runs_fitted():
        return
    short = [(s, min_fit_budget(s)) for s in cfg.fitted_steps() if cfg.fit_budget < min_fit_budget(s)]
    if short:
        steps, need = short[-1]
        fail(
            "--fit-budget",
            f"{cfg.fit_budget} sample-evaluations are too few for the `fitted` fit of {steps} steps: it needs at "
            f"least {need} (a fitting batch of {MIN_BATCH}); raise it, or leave it out for the default "
            f"(2 per sample of --n, at least what the fit needs)",
        )


def _check_device(cfg: BenchConfig) -> None:
    if cfg.dtype not in DTYPES:
        fail("--dtype", f"unknown dtype {cfg.dtype!r}; accepted: {', '.join(DTYPES)}")
    try:
        dev = torch.device(cfg.device)
    except (RuntimeError, ValueError):
        fail("--device", f"not a device: {cfg.device!r}")
    if dev.type == "mps" and cfg.dtype == "float64":
        fail("--dtype", "Apple MPS has no float64; use float32 (the default)")
    check_dtype_device(cfg.dtype, dev)  # warns about bfloat16 on a CPU without bfloat16 kernels
    if dev.type != "cpu" and (cfg.peers is None or cfg.peers):
        fail("--peers", f"the peers run on the CPU only; with --device {cfg.device} pass --peers ''")


def peer_mismatch(name: str, problem: BenchProblem) -> str | None:
    """Why peer ``name`` cannot run on ``problem`` (it is on another path than the peer's), or ``None``."""
    flow = peers.peer_path(name) == "flow"
    if repr(problem.sde) == repr(make_sde("flow" if flow else "vp")):
        return None
    want = "the flow path (--sde flow)" if flow else "the linear VP SDE"
    return f"{name} runs on {want} only; {problem.name} is on {problem.sde!r}"
