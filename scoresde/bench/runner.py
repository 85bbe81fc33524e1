"""The benchmark's runner: plan the grid of problems x methods x budgets, run each once, resume the rest.

Fixed-step methods get ``steps = budget // nfe_per_step``; adaptive ones run once per tolerance, stopped when they
ask for a model call beyond the largest budget (status ``over budget: > B NFE``: no budget could hold the run, and
an adaptive method left alone at a tight tolerance took most of a bench's time); peers get the budget and report
what they counted. Every run records the counted NFE, the wall time and the time spent
inside the model (:class:`TimedModel`).

Methods that are fitted before they sample (``fitted``: :func:`scoresde.fit_solver`; ``name@optimized``: the pilot
of :func:`scoresde.fit_grid`) are fitted once per problem and step count (and, for a grid, solver order) and reused
by every run that shares the fit. Their rows carry ``fit_evals`` (every model call of the fit times the samples it
was made on, teacher or pilot included, plus the fitted solver's fingerprint check at sampling) and ``nfe_amortised
= nfe + fit_evals / n``, which the summary uses; methods without a fit have ``fit_evals = 0``. Each finished run is
appended (and flushed) to ``<out>/bench_<tag>.partial.jsonl`` with its ``key``: a hash of everything that determines
the row (the problem's content hash, e.g. a checkpoint's files; the method, its options and grid; ``n``; ``seed``;
the package version). A rerun skips the rows whose key is there, so an interrupted run resumes, and redoes any row
whose inputs changed. Every argument, the plan and the output folder are checked before any work (:func:`validate`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import peers
from ..fitted import REVISION as FIT_REVISION
from ..fitted import FittedSolver, fit_solver
from ..grids import fit_grid
from ..precision import network_precision, state_dtype
from ..process_group import world
from ..sample import available_methods, sample
from ..sde import VPSDE, FlowSDE
from ..sde_names import make_sde
from ..solvers import NonFiniteError, get_solver, method_info
from .checks import check_out, fail, peer_mismatch, validate
from .config import FITTED, BenchConfig, OverBudget, TimedModel
from .problems import MEASURE_REVISION, BenchProblem, make_problem
from .report import previous_rows, write_results

__all__ = ["plan", "run_bench", "row_key"]

_PROCESS = os.urandom(8).hex()  # tells this process's unreadable plugin classes from another's


def _planned(pname: str, method: str, cfg: BenchConfig) -> list[dict]:
    """The runs of one of our methods: one per tolerance (adaptive) or per distinct step count."""
    item = dict(problem=pname, method=method, source="ours")
    if method == FITTED:
        return [
            {**item, "run": f"budget={b}", "kwargs": {"steps": b, "fit_budget": cfg.fit_budget_for(b)}}
            for b in cfg.fitted_steps()
        ]
    solver, _, grid = method.partition("@")
    info = method_info(solver)
    extra = {"grid": grid} if grid else {}
    if info["adaptive"]:  # at each tolerance, stopped once it has spent the largest budget (no budget can hold it)
        item["max_nfe"] = cfg.max_budget
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
    """Every run of the grid as ``{problem, method, source, run, kwargs}``, in execution order; an adaptive
    method's runs also carry ``max_nfe``, the largest budget, where they are stopped."""
    methods = cfg.methods or (*available_methods(), *cfg.variants)
    if cfg.peers is None:  # every installed peer of the problems' path (validate checks a given list)
        peer_names = tuple(p for p in peers.available_peers() if peers.peer_path(p) == cfg.sde)
    else:
        peer_names = cfg.peers
    runs = []
    for pname in cfg.problems:
        for method in methods:
            runs += _planned(pname, method, cfg)
        for peer in peer_names:
            for b in cfg.budgets:
                runs.append(dict(problem=pname, method=peer, source="peer", run=f"budget={b}", kwargs={"nfe": b}))
    return runs


def _version() -> str:
    """The package version, read at each call (a test stands in another one)."""
    from .. import __version__

    return __version__


def row_key(item: dict, problem: BenchProblem, cfg: BenchConfig) -> str:
    """What determines a row, hashed: the problem's content, the method with its options and grid, the run,
    the sample size, the seed, the package version and the revision of the measurement. Any change gives
    another key, so the row is redone."""
    what = {
        "problem": problem.identity,
        "source": item["source"],
        "method": item["method"],
        "run": item["run"],
        "kwargs": item["kwargs"],
        "n": cfg.n,
        "seed": cfg.seed,
        "version": _version(),
        "measure": MEASURE_REVISION,
        "device": torch.device(cfg.device).type,
        "dtype": cfg.dtype,
    }
    if item["source"] == "ours" and (code := _plugin_code(item["method"])) is not None:
        what["code"] = code  # a solver registered from outside the package: the version does not cover its code
    if item["method"] == FITTED:  # what the fit does (its budget is in kwargs): a changed fit is refitted
        what["fit"] = FIT_REVISION
    if "max_nfe" in item:  # an adaptive run's stop: other budgets may stop it elsewhere (other rows keep their keys)
        what["max_nfe"] = item["max_nfe"]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=repr).encode()).hexdigest()[:32]


def _plugin_code(method: str) -> str | None:
    """For a solver registered from outside the package (a ``--plugin``), the hash of its module's source (of its
    class where the module has no file), so that editing it redoes its rows; ``None`` for the package's own
    methods, whose code the version covers. A class without readable source is keyed to this process: never resumed."""
    name = method.partition("@")[0]
    if name == FITTED:
        return None
    cls = get_solver(name)
    if cls.__module__.partition(".")[0] == __name__.partition(".")[0]:
        return None
    for obj in (sys.modules.get(cls.__module__), cls):
        try:
            return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]
        except (OSError, TypeError):
            continue
    return f"unread:{_PROCESS}:{id(cls)}"


def _partials(out_dir: Path, tag: str) -> list[Path]:
    """The partial files of a bench: one process's ``bench_<tag>.partial.jsonl`` and each torchrun rank's
    ``bench_<tag>.partial.rank<R>.jsonl`` (so a run may resume on another number of processes)."""
    one = out_dir / f"bench_{tag}.partial.jsonl"
    return [one] * one.exists() + sorted(out_dir.glob(f"bench_{tag}.partial.rank*.jsonl"))


def _finished(partials: list[Path]) -> dict[str, dict]:
    """The runs already in the partial files, by their :func:`row_key` (rows of older versions have none)."""
    done = {}
    for partial in partials:
        for line in partial.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that run is redone
            if isinstance(row, dict) and "key" in row:
                done[row["key"]] = row
    return done


def _assign(items: list[dict], todo: list[int], size: int) -> dict[int, int]:
    """The rank that runs each pending item: whole (problem, method) groups round-robin in plan order, so the runs
    that share a fit are on one process and each fit is made once."""
    groups: dict[tuple, int] = {}
    for i in todo:
        groups.setdefault((items[i]["problem"], items[i]["method"]), len(groups))
    return {i: groups[(items[i]["problem"], items[i]["method"])] % size for i in todo}


def _score(item: dict, problem: BenchProblem, timer: TimedModel):
    """The problem's score for this run, every model call timed: on its SDE, or the peers' extended one."""
    if item["source"] != "peer":
        return problem.score(problem.sde, timer)
    why = peer_mismatch(item["method"], problem)
    if why:
        raise ValueError(why)
    if peers.peer_path(item["method"]) == "flow":  # from pure noise, driven by the exact velocity
        return problem.velocity_score(FlowSDE(T=peers.FLOW_PEER_T), timer)
    return problem.score(VPSDE(T=peers.PEER_T), timer)  # diffusers' chain ends at t = 1.0034 on this schedule


@dataclass
class _Fit:
    """A fitted solver or grid, kept for every run that shares it, with what it cost."""

    value: object  # a FittedSolver or a FittedGrid
    evals: int  # model calls times the samples they were made on
    seconds: float


class _Fits:
    """The fits of one bench invocation, made when a run first needs them (a resumed run needs none)."""

    def __init__(self, cfg: BenchConfig | None = None):
        self.made: dict[tuple, _Fit] = {}
        self.cfg = cfg or BenchConfig()

    def get(self, item: dict, problem: BenchProblem) -> _Fit | None:
        method, kw = item["method"], item["kwargs"]
        solver, _, grid = method.partition("@")
        if method == FITTED:
            key = (problem.identity, FITTED, kw["steps"], kw["fit_budget"])
        elif grid == "optimized":
            order = max(1, min(3, int(method_info(solver)["order"])))
            key = (problem.identity, "grid", kw["steps"], order)
        else:
            return None
        if key not in self.made:
            score, dims = problem.score(problem.sde), tuple(problem.shape(1)[1:])
            t0 = time.perf_counter()
            where = dict(dtype=state_dtype(self.cfg.dtype), device=self.cfg.device)
            with network_precision(self.cfg.dtype, self.cfg.device):
                if method == FITTED:
                    value = fit_solver(score, kw["steps"], dims, budget=kw["fit_budget"], **where)
                    evals = value.fit_evals
                else:
                    value = fit_grid(score, kw["steps"], dims, key[3], **where)
                    evals = value.fit_nfe * value.options["n_pilot"]
            self.made[key] = _Fit(value, evals, time.perf_counter() - t0)
        return self.made[key]


def _sample(item: dict, problem: BenchProblem, score, cfg: BenchConfig, fit: _Fit | None):
    """``(x, nfe, check_evals, t_end, status)`` of one run; ``x`` is ``None`` when it diverged. ``check_evals``:
    the sample-evaluations a fitted solver's fingerprint check made before sampling (its probe rows)."""
    sde, shape = problem.sde, problem.shape(cfg.n)
    try:
        if item["source"] == "ours":
            kw = dict(item["kwargs"], seed=cfg.seed, dtype=state_dtype(cfg.dtype), device=cfg.device)
            with network_precision(cfg.dtype, cfg.device):
                if item["method"] == FITTED:
                    out = sample(score, sde, shape, method=fit.value, **{k: kw[k] for k in ("seed", "dtype", "device")})
                else:
                    if fit is not None:
                        kw["grid"] = fit.value
                    out = sample(score, sde, shape, method=item["method"].partition("@")[0], **kw)
            check_evals = out.check_nfe * FittedSolver.PROBE_ROWS
            return out.x.cpu(), out.nfe, check_evals, sde.t_min, "ok"
        res = peers.peer_sample(item["method"], score, score.sde, shape, nfe=item["kwargs"]["nfe"], seed=cfg.seed)
        return res.x, res.nfe, 0, res.t_end, res.status
    except NonFiniteError as e:
        return None, score.nfe, 0, sde.t_min, f"diverged: {e}"
    except OverBudget as e:  # an adaptive method still short of t_min after the largest budget's calls
        return None, e.calls, 0, sde.t_min, f"over budget: > {e.calls} NFE (largest --nfe)"


def _run_one(item: dict, problem: BenchProblem, cfg: BenchConfig, fits: _Fits) -> dict:
    """Run one item of the plan and measure its samples: one row of the results (floors not included)."""
    timer = TimedModel(None, item.get("max_nfe"))
    t0 = time.perf_counter()
    try:
        fit = fits.get(item, problem) if item["source"] == "ours" else None
    except ValueError as err:  # a fit that cannot be made (e.g. a budget too small for its batch) is a failed row
        fit, (x, nfe, check_evals, t_end, status) = None, (None, 0, 0, problem.sde.t_min, f"fit failed: {err}")
    else:
        score = _score(item, problem, timer)
        t0 = time.perf_counter()
        x, nfe, check_evals, t_end, status = _sample(item, problem, score, cfg, fit)
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
        "fit_evals": (fit.evals if fit else 0) + check_evals,
        "nfe_amortised": round(nfe + ((fit.evals if fit else 0) + check_evals) / cfg.n, 2),
        "t_end": t_end,
        "wall_s": round(wall, 4),
        "model_s": round(timer.seconds, 4),
        "fit_s": round(fit.seconds, 4) if fit else 0.0,
        **q,
        "status": status,
    }


def run_bench(cfg: BenchConfig, progress: bool = True, log=None, on_start=None, note=None) -> list[dict]:
    """Run (or resume) the grid; returns one dict per run of this configuration and writes the result files.

    Everything is checked first (:func:`validate`, every problem loaded, a non-empty plan, a writable
    ``cfg.out``): a bad argument raises ``ValueError`` before a run starts or a file is touched. Then
    ``on_start()`` is called (the command line prints its header there, so an argument error comes before it).
    The tables merge with the rows already in ``<out>/bench_<tag>.json`` (see
    :func:`~scoresde.bench.report.write_results`).

    A run that gives no samples (its ``status`` is not ``ok``: a fit that failed, a divergence, an adaptive run
    stopped at the largest budget) is said as it happens: ``note(line)`` with ``"<problem> <method> <run>:
    <status>"`` (default: the line on stderr, above the progress bar).

    Under ``torchrun`` (an initialised process group, see :func:`scoresde.distributed.init_from_env`) the pending
    runs are shared out by (problem, method) groups, each rank appends its rows to its own
    ``bench_<tag>.partial.rank<R>.jsonl``, and rank 0 gathers them, measures the floors and writes the results;
    the other ranks return ``[]``. Every row is what one process computes: each run is seeded on its own.
    """
    from tqdm.auto import tqdm

    validate(cfg)
    sde = make_sde(cfg.sde) if cfg.sde != "vp" else None
    problems: dict[str, BenchProblem] = {name: make_problem(name, sde) for name in dict.fromkeys(cfg.problems)}
    items = plan(cfg)
    for item in items:
        why = peer_mismatch(item["method"], problems[item["problem"]]) if item["source"] == "peer" else None
        if why:
            fail("--peers", f"{why} (pass --peers '')")
    if not items:
        fail("--nfe", f"nothing to run: no method fits the budgets {cfg.budgets} (a step costs more NFE)")
    out_dir = Path(cfg.out)
    previous_rows(out_dir / f"bench_{cfg.tag}.json")  # a damaged result file is refused now, not after the runs
    check_out(out_dir)  # provably writable (the probe leaves nothing behind)
    for prob in problems.values():
        prob.place(cfg.device, state_dtype(cfg.dtype))
    if on_start is not None:
        on_start()
    if note is None:
        note = lambda line: tqdm.write(line, file=sys.stderr)  # noqa: E731
    rank, size = world()
    done = _finished(_partials(out_dir, cfg.tag)) if rank == 0 else {}
    finished = set(done)
    if size > 1:  # rank 0's view of what is done, for all: a rank that read the partial files after another had
        box = [finished]  # begun appending to its own would share out a different list of runs
        torch.distributed.broadcast_object_list(box, src=0)
        finished = box[0]
    keys = [row_key(item, problems[item["problem"]], cfg) for item in items]
    todo = [i for i, key in enumerate(keys) if key not in finished]
    owner = _assign(items, todo, size)
    mine = [i for i in todo if owner[i] == rank]
    partial = out_dir / (f"bench_{cfg.tag}.partial.jsonl" if size == 1 else f"bench_{cfg.tag}.partial.rank{rank}.jsonl")
    fits = _Fits(cfg)
    new: dict[str, dict] = {}
    out_dir.mkdir(parents=True, exist_ok=True)  # checked writable before any run; made only once runs begin
    with open(partial, "a") as fh:
        bar = tqdm(mine, desc="bench", unit="run", disable=not progress or rank != 0, dynamic_ncols=True)
        for i in bar:
            item, prob = items[i], problems[items[i]["problem"]]
            bar.set_postfix_str(f"{item['problem']} {item['method']} {item['run']}", refresh=False)
            extra = {"n": cfg.n, "seed": cfg.seed, "version": _version(), "problem_id": prob.identity}
            row = {**_run_one({**item, "problem": prob.name}, prob, cfg, fits), **extra, "key": keys[i]}
            if row["status"] != "ok":
                note(f"{row['problem']} {row['method']} {row['run']}: {row['status']}")
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            new[keys[i]] = row
    if size > 1:  # every rank's new rows to rank 0, which alone measures the floors and writes the results
        parts: list | None = [None] * size if rank == 0 else None
        torch.distributed.gather_object(new, parts, dst=0)
        if rank != 0:
            return []
        for part in parts:
            new.update(part)
    done.update(new)
    floors: dict[tuple, dict] = {}
    rows = []
    for item, key in zip(items, keys, strict=True):
        prob, row = problems[item["problem"]], done[key]
        fkey = (prob.identity, round(float(row["t_end"]), 12))
        if fkey not in floors:
            floors[fkey] = prob.floors(prob.sde, row["t_end"], cfg.n, cfg.floor_seeds)
        row = {**row, **floors[fkey]}
        rows.append(row)
        if log is not None:
            log(row)
    write_results(rows, cfg)
    return rows
