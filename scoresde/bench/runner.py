"""The benchmark's runner: plan the grid of problems x methods x budgets, run each once, resume the rest.

Fixed-step methods get ``steps = budget // nfe_per_step``; adaptive ones run once per tolerance; peers get the
budget and report what they counted. Every run records the counted NFE, the wall time and the time spent
inside the model (:class:`TimedModel`). Each finished run is appended (and flushed) to
``<out>/bench_<tag>.partial.jsonl``; a rerun with the same ``n`` and ``seed`` skips what is there, so an
interrupted run resumes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import peers
from ..sample import available_methods, sample
from ..sde import VPSDE
from ..solvers import NonFiniteError, method_info
from .problems import BenchProblem, make_problem
from .report import write_results

__all__ = ["BenchConfig", "TimedModel", "plan", "run_bench"]


@dataclass
class BenchConfig:
    problems: tuple[str, ...] = ("ring", "gmm16", "gmm64")
    methods: tuple[str, ...] = ()  # empty: every registered method plus `variants`; "name@grid" picks a grid
    variants: tuple[str, ...] = ("unipc@optimized", "dpm++2m@optimized")
    peers: tuple[str, ...] | None = None  # None: every installed peer; () none
    budgets: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    tolerances: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    n: int = 20_000
    seed: int = 0
    floor_seeds: int = 5
    out: str = "results"
    tag: str = "full"

    @classmethod
    def quick(cls, **kw) -> BenchConfig:
        base = dict(
            problems=("ring", "gmm16"), budgets=(5, 10, 20, 50, 100), tolerances=(1e-2, 1e-4), n=4000, tag="quick"
        )
        return cls(**{**base, **kw})


class TimedModel:
    """Wraps a model and accumulates the seconds spent inside it (synchronising CUDA around each call)."""

    def __init__(self, model):
        self.model, self.seconds = model, 0.0

    def __call__(self, x, t):
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        out = self.model(x, t)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        self.seconds += time.perf_counter() - t0
        return out


def _planned(pname: str, method: str, cfg: BenchConfig) -> list[dict]:
    """The runs of one of our methods: one per tolerance (adaptive) or per distinct step count."""
    solver, _, grid = method.partition("@")
    info = method_info(solver)
    extra = {"grid": grid} if grid else {}
    item = dict(problem=pname, method=method, source="ours")
    if info["adaptive"]:
        tols = cfg.tolerances
        return [{**item, "run": f"tol={tol:g}", "kwargs": {"rtol": tol, "atol": tol, **extra}} for tol in tols]
    runs, seen = [], set()
    for b in cfg.budgets:
        steps = b // info["nfe_per_step"]
        if steps >= 1 and steps not in seen:
            seen.add(steps)
            runs.append({**item, "run": f"budget={b}", "kwargs": {"steps": steps, **extra}})
    return runs


def plan(cfg: BenchConfig) -> list[dict]:
    """Every run of the grid as ``{problem, method, source, run, kwargs}``, in execution order."""
    methods = cfg.methods or (*available_methods(), *cfg.variants)
    peer_names = tuple(peers.available_peers()) if cfg.peers is None else cfg.peers
    runs = []
    for pname in cfg.problems:
        for method in methods:
            runs += _planned(pname, method, cfg)
        for peer in peer_names:
            for b in cfg.budgets:
                runs.append(dict(problem=pname, method=peer, source="peer", run=f"budget={b}", kwargs={"nfe": b}))
    return runs


def _key(row: dict, cfg: BenchConfig) -> tuple:
    """What identifies a run across reruns: its problem, method and run, and the sample size and seed."""
    return (row["problem"], row["method"], row["run"], cfg.n, cfg.seed)


def _finished(partial: Path, cfg: BenchConfig) -> dict[tuple, dict]:
    """The runs already in the partial file for this ``n`` and ``seed``, by :func:`_key`."""
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that run is redone
            if row.get("n") == cfg.n and row.get("seed") == cfg.seed:
                done[_key(row, cfg)] = row
    return done


def _score(item: dict, problem: BenchProblem, timer: TimedModel):
    """The problem's score for this run, every model call timed: on its SDE, or the peers' extended one."""
    if item["source"] != "peer":
        return problem.score(problem.sde, timer)
    if repr(problem.sde) != repr(VPSDE()):
        raise ValueError(f"peers run on the linear VP SDE only; {problem.name} was trained on {problem.sde!r}")
    return problem.score(VPSDE(T=peers.PEER_T), timer)  # diffusers' chain ends at t = 1.0034 on this schedule


def _sample(item: dict, problem: BenchProblem, score, cfg: BenchConfig):
    """``(x, nfe, t_end, status)`` of one run; ``x`` is ``None`` when it diverged."""
    sde, shape = problem.sde, problem.shape(cfg.n)
    try:
        if item["source"] == "ours":
            method = item["method"].partition("@")[0]
            out = sample(score, sde, shape, method=method, seed=cfg.seed, **item["kwargs"])
            return out.x, out.nfe, sde.t_min, "ok"
        res = peers.peer_sample(item["method"], score, score.sde, shape, nfe=item["kwargs"]["nfe"], seed=cfg.seed)
        return res.x, res.nfe, res.t_end, res.status
    except NonFiniteError as e:
        return None, score.nfe, sde.t_min, f"diverged: {e}"


def _run_one(item: dict, problem: BenchProblem, cfg: BenchConfig) -> dict:
    """Run one item of the plan and measure its samples: one row of the results (floors not included)."""
    timer = TimedModel(None)
    score = _score(item, problem, timer)
    t0 = time.perf_counter()
    x, nfe, t_end, status = _sample(item, problem, score, cfg)
    wall = time.perf_counter() - t0
    ok = x is not None and status == "ok" and bool(torch.isfinite(x).all())
    if x is not None and status == "ok" and not ok:
        status = "diverged: non-finite samples"
    q = problem.quality(x, problem.sde, t_end, cfg.seed + 7) if ok else dict.fromkeys(problem.metrics, math.nan)
    return {
        "problem": problem.name,
        "primary": problem.primary,
        "dim": problem.dim,
        "method": item["method"],
        "source": item["source"],
        "run": item["run"],
        "steps": item["kwargs"].get("steps", ""),
        "nfe": nfe,
        "t_end": t_end,
        "wall_s": round(wall, 4),
        "model_s": round(timer.seconds, 4),
        **q,
        "status": status,
    }


def run_bench(cfg: BenchConfig, progress: bool = True, log=None) -> list[dict]:
    """Run (or resume) the grid; returns one dict per run and writes the result files."""
    from tqdm.auto import tqdm

    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f"bench_{cfg.tag}.partial.jsonl"
    done = _finished(partial, cfg)
    problems: dict[str, BenchProblem] = {}
    floors: dict[tuple, dict] = {}
    rows = []
    with open(partial, "a") as fh:
        bar = tqdm(plan(cfg), desc="bench", unit="run", disable=not progress, dynamic_ncols=True)
        for item in bar:
            bar.set_postfix_str(f"{item['problem']} {item['method']} {item['run']}", refresh=False)
            if item["problem"] not in problems:
                problems[item["problem"]] = make_problem(item["problem"])
            prob = problems[item["problem"]]
            item = {**item, "problem": prob.name}
            row = done.get(_key(item, cfg))
            if row is None:
                row = {**_run_one(item, prob, cfg), "n": cfg.n, "seed": cfg.seed}
                fh.write(json.dumps(row) + "\n")
                fh.flush()
            fkey = (prob.name, round(float(row["t_end"]), 12))
            if fkey not in floors:
                floors[fkey] = prob.floors(prob.sde, row["t_end"], cfg.n, cfg.floor_seeds)
            row = {**row, **floors[fkey]}
            rows.append(row)
            if log is not None:
                log(row)
    write_results(rows, cfg)
    return rows
