"""The step-count vs quality benchmark (behind ``scoresde bench``): problems x methods x NFE budgets.

For each problem, method and budget, draw ``n`` samples from the prior at ``T`` down to the method's final
time and compare them with exact draws of the law it targets there (``p_{t_min}`` for ours; a peer may end
elsewhere, e.g. at its discrete ``alpha_bar_0``, and is compared with the exact law at that time):

- ``mode_swd``: mode-conditional sliced W2, the primary figure (see :mod:`scoresde.metrics`);
- ``weight_err``, ``mean_err``, ``cov_err``: the worst mode's weight, mean and relative covariance error;
- ``swd`` (global sliced W2) and ``mmd`` (unbiased RBF MMD^2), secondary;

each beside its floor: mean and std over seeds of the same statistic between exact sample sets of the
same size. Fixed-step methods get ``steps = budget // nfe_per_step``; adaptive ones run once per tolerance;
peers (``pip install scoresde[peers]``) get the budget and report what they counted. Every run records the
counted NFE, the wall time and the time spent inside the model.

Each finished run is appended (and flushed) to ``<out>/bench_<tag>.partial.jsonl``; a rerun with the same
configuration skips what is there, so an interrupted run resumes. The final CSV, JSON, Markdown table and
PNG are written atomically.

The score source is a parameter: :class:`ExactProblem` wraps a built-in mixture; a learned model plugs in
as another object with the same three methods (``score``, ``target``, ``dim``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import data as data_mod
from . import peers
from .metrics import assign_modes, mmd_rbf, mode_conditional_swd, mode_diagnostics, sliced_wasserstein
from .param import EpsilonScore
from .problems import GaussianMixture, get_problem
from .sample import available_methods, sample
from .sde import SDE, VPSDE
from .solvers import NonFiniteError, method_info
from .util import atomic_write_text

__all__ = ["BenchConfig", "ExactProblem", "TimedModel", "run_bench", "format_table", "summary_table"]

METRICS = ("mode_swd", "weight_err", "mean_err", "cov_err", "swd", "mmd")
FLOORED = ("mode_swd", "swd", "mmd")


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


class ExactProblem:
    """A built-in Gaussian mixture with its exact score: the instrument that separates solver error."""

    def __init__(self, name: str, mixture: GaussianMixture | None = None):
        self.name = name
        self.mixture = get_problem(name) if mixture is None else mixture
        self.dim = self.mixture.dim

    def score(self, sde: SDE, timer: TimedModel | None = None) -> EpsilonScore:
        """The exact score; with ``timer``, every model call is timed by it."""
        model = self.mixture.eps_model(sde)
        if timer is not None:
            timer.model, model = model, timer
        return EpsilonScore(model, sde)

    primary = "mode_swd"

    def target(self, sde: SDE, t: float) -> GaussianMixture:
        return self.mixture if t <= 0 else self.mixture.marginal(sde, t)

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, self.dim)

    def quality(self, x: torch.Tensor, sde: SDE, t_end: float, seed: int) -> dict:
        return quality(x, self.target(sde, t_end), seed)

    def floors(self, sde: SDE, t_end: float, n: int, seeds: int) -> dict:
        return floors(self.target(sde, t_end), n, seeds)


class LearnedProblem:
    """A trained checkpoint (``scoresde train``) scored against fresh data of its dataset, noised to ``t_end``.

    The law a sampler targets at ``t_end`` is the data's marginal ``p_{t_end}``; the reference draws are data
    pushed through the closed-form forward kernel to ``t_end`` with a seeded generator. 2-D sets: ``swd``
    (primary) and ``mmd`` against fresh draws of the toy generator (new seeds, never the training draw), with
    their floor between two fresh sets of the same size. Digits: ``fd``, the Frechet distance of the
    package's digit-classifier features to the test split (:mod:`scoresde.models.classifier`); its floor is
    the FD of the test split to the train split (both noised the same way), so ``n`` should be the train
    split's size, 1,437. Class-conditional models are sampled unconditionally (the null class).
    """

    def __init__(self, directory: str):
        from .train import load_score

        self.directory = directory
        _, self.sde, self.config, self.model = load_score(directory)
        self.name = f"learned:{Path(directory).name}"
        self.data = self.config.data
        self.sample_shape = data_mod.dataset_info(self.data)["shape"]
        self.dim = math.prod(self.sample_shape)
        self.primary = "fd" if self.data == "digits" else "swd"

    def score(self, sde: SDE, timer: TimedModel | None = None):
        from .train import make_score

        model = self.model
        if timer is not None:
            timer.model, model = model, timer
        return make_score(model, sde, self.config.prediction)

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, *self.sample_shape)

    def _reference(self, sde: SDE, t_end: float, n: int, seed: int, split: str = "test") -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if self.data == "digits":
            x = data_mod.digits(split, seed=self.config.data_seed)[0].double()
        else:  # fresh draws, on seeds the training data (seed 2 * data_seed) never uses
            x = data_mod.toy_2d(self.data, n, seed=2 * (10_000 + seed) + 1).double()
        if t_end <= 0:
            return x
        a, s = sde.scalar_coefs(t_end)[:2]
        return a * x + s * torch.randn(x.shape, generator=g, dtype=x.dtype)

    def quality(self, x: torch.Tensor, sde: SDE, t_end: float, seed: int) -> dict:
        x = x.double()
        if self.data == "digits":
            from .models.classifier import digit_fd

            return {"fd": digit_fd(x.float(), self._reference(sde, t_end, x.shape[0], seed).float())}
        ref = self._reference(sde, t_end, x.shape[0], seed)
        return {"swd": sliced_wasserstein(x, ref), "mmd": mmd_rbf(x, ref, max_n=2000, seed=seed)}

    def floors(self, sde: SDE, t_end: float, n: int, seeds: int) -> dict:
        if self.data == "digits":
            from .models.classifier import digit_fd

            vals = [
                digit_fd(
                    self._reference(sde, t_end, n, 3_000 + s, "train").float(),
                    self._reference(sde, t_end, n, 4_000 + s).float(),
                )
                for s in range(seeds)
            ]
            v = torch.tensor(vals, dtype=torch.float64)
            return {"fd_floor": float(v.mean()), "fd_floor_std": float(v.std()) if seeds > 1 else 0.0}
        rows = [self.quality(self._reference(sde, t_end, n, 5_000 + s), sde, t_end, 6_000 + s) for s in range(seeds)]
        out = {}
        for key in ("swd", "mmd"):
            v = torch.tensor([r[key] for r in rows], dtype=torch.float64)
            out[f"{key}_floor"], out[f"{key}_floor_std"] = float(v.mean()), float(v.std())
        return out


def make_problem(name: str):
    """``"ring"``, ``"gmm16"``, ``"gmm64"``: an :class:`ExactProblem`; ``"learned:DIR"``: a :class:`LearnedProblem`."""
    if name.startswith("learned:"):
        return LearnedProblem(name.split(":", 1)[1])
    return ExactProblem(name)


def quality(x: torch.Tensor, target: GaussianMixture, seed: int) -> dict:
    """Every metric of ``x`` against the exact law ``target``; reference draws from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    labels = assign_modes(x, target)  # the exact mixture evaluation, shared by both per-mode metrics
    mode_swd, _ = mode_conditional_swd(x, target, g, labels=labels)
    diag = mode_diagnostics(x, target, labels=labels)
    ref = target.sample(x.shape[0], generator=g)
    return {
        "mode_swd": mode_swd,
        "weight_err": diag["max_weight_err"],
        "mean_err": diag["max_mean_err"],
        "cov_err": diag["max_cov_err"],
        "swd": sliced_wasserstein(x, ref),
        "mmd": mmd_rbf(x, ref, max_n=2000, seed=seed),
    }


def floors(target: GaussianMixture, n: int, seeds: int) -> dict:
    """Mean and std of every floored metric between independent exact sample sets of size ``n``."""
    rows = [
        quality(target.sample(n, generator=torch.Generator().manual_seed(1_000 + s)), target, 2_000 + s)
        for s in range(seeds)
    ]
    out = {}
    for key in FLOORED:
        v = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        out[f"{key}_floor"], out[f"{key}_floor_std"] = float(v.mean()), float(v.std())
    return out


def plan(cfg: BenchConfig) -> list[dict]:
    """Every run of the grid as ``{problem, method, source, run, kwargs}``, in execution order."""
    methods = cfg.methods or (*available_methods(), *cfg.variants)
    peer_names = tuple(peers.available_peers()) if cfg.peers is None else cfg.peers
    runs = []
    for pname in cfg.problems:
        for method in methods:
            solver, _, grid = method.partition("@")
            info = method_info(solver)
            extra = {"grid": grid} if grid else {}
            if info["adaptive"]:
                for tol in cfg.tolerances:
                    runs.append(
                        dict(
                            problem=pname,
                            method=method,
                            source="ours",
                            run=f"tol={tol:g}",
                            kwargs={"rtol": tol, "atol": tol, **extra},
                        )
                    )
                continue
            seen = set()
            for b in cfg.budgets:
                steps = b // info["nfe_per_step"]
                if steps >= 1 and steps not in seen:
                    seen.add(steps)
                    runs.append(
                        dict(
                            problem=pname,
                            method=method,
                            source="ours",
                            run=f"budget={b}",
                            kwargs={"steps": steps, **extra},
                        )
                    )
        for peer in peer_names:
            for b in cfg.budgets:
                runs.append(dict(problem=pname, method=peer, source="peer", run=f"budget={b}", kwargs={"nfe": b}))
    return runs


def _key(row: dict, cfg: BenchConfig) -> tuple:
    return (row["problem"], row["method"], row["run"], cfg.n, cfg.seed)


def _run_one(item: dict, problem, sde: SDE, cfg: BenchConfig) -> dict:
    timer = TimedModel(None)
    if item["source"] == "peer":  # diffusers' chain ends at t = 1.0034 on the same linear schedule
        if repr(sde) != repr(VPSDE()):
            raise ValueError(f"peers run on the linear VP SDE only; {problem.name} was trained on {sde!r}")
        score = problem.score(VPSDE(T=peers.PEER_T), timer)
    else:
        score = problem.score(sde, timer)
    shape = problem.shape(cfg.n)
    t0 = time.perf_counter()
    status, t_end, steps = "ok", sde.t_min, item["kwargs"].get("steps", "")
    try:
        if item["source"] == "ours":
            method = item["method"].partition("@")[0]
            out = sample(score, sde, shape, method=method, seed=cfg.seed, **item["kwargs"])
            x, nfe = out.x, out.nfe
        else:
            res = peers.peer_sample(item["method"], score, score.sde, shape, nfe=item["kwargs"]["nfe"], seed=cfg.seed)
            x, nfe, t_end, status = res.x, res.nfe, res.t_end, res.status
    except NonFiniteError as e:
        x, nfe, status = None, score.nfe, f"diverged: {e}"
    wall = time.perf_counter() - t0
    ok = x is not None and status == "ok" and bool(torch.isfinite(x).all())
    if x is not None and status == "ok" and not ok:
        status = "diverged: non-finite samples"
    if ok:
        q = problem.quality(x, sde, t_end, cfg.seed + 7)
    else:
        q = dict.fromkeys(METRICS if isinstance(problem, ExactProblem) else (problem.primary,), math.nan)
    return {
        "problem": problem.name,
        "primary": problem.primary,
        "dim": problem.dim,
        "method": item["method"],
        "source": item["source"],
        "run": item["run"],
        "steps": steps,
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
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that run is redone
            if row.get("n") == cfg.n and row.get("seed") == cfg.seed:
                done[(row["problem"], row["method"], row["run"], cfg.n, cfg.seed)] = row
    items = plan(cfg)
    problems: dict[str, object] = {}
    floor_cache: dict[tuple, dict] = {}
    rows = []
    with open(partial, "a") as fh:
        bar = tqdm(items, desc="bench", unit="run", disable=not progress, dynamic_ncols=True)
        for item in bar:
            bar.set_postfix_str(f"{item['problem']} {item['method']} {item['run']}", refresh=False)
            if item["problem"] not in problems:
                problems[item["problem"]] = make_problem(item["problem"])
            prob = problems[item["problem"]]
            sde = prob.sde if isinstance(prob, LearnedProblem) else VPSDE()
            item = {**item, "problem": prob.name}
            key = _key(item, cfg)
            if key in done:
                row = done[key]
            else:
                row = {**_run_one(item, prob, sde, cfg), "n": cfg.n, "seed": cfg.seed}
                fh.write(json.dumps(row) + "\n")
                fh.flush()
            fkey = (item["problem"], round(float(row["t_end"]), 12))
            if fkey not in floor_cache:
                floor_cache[fkey] = prob.floors(sde, row["t_end"], cfg.n, cfg.floor_seeds)
            row = {**row, **floor_cache[fkey]}
            rows.append(row)
            if log is not None:
                log(row)
    write_results(rows, cfg)
    return rows


def write_results(rows: list[dict], cfg: BenchConfig) -> None:
    out = Path(cfg.out)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(out / f"bench_{cfg.tag}.csv", buf.getvalue())
    atomic_write_text(out / f"bench_{cfg.tag}.json", json.dumps({"config": asdict(cfg), "rows": rows}, indent=1))
    atomic_write_text(out / f"bench_{cfg.tag}.md", summary_table(rows, cfg.budgets) + "\n" + format_table(rows))
    from .plot import plot_nfe_quality

    plot_nfe_quality(rows, out / f"bench_{cfg.tag}.png")


def _fmt(v: float, spec: str = ".4f") -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(rows: list[dict]) -> str:
    """A Markdown table per problem: one line per run, the primary figure beside its floor."""
    lines = []
    for pname in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == pname]
        r0 = sub[0]
        if r0.get("primary", "mode_swd") != "mode_swd":
            lines += _learned_table(sub)
            continue
        lines += [
            f"\n### {pname} (d = {r0['dim']}, n = {r0['n']}): mode-conditional SWD floor "
            f"{r0['mode_swd_floor']:.4f} +- {r0['mode_swd_floor_std']:.4f}, global SWD floor "
            f"{r0['swd_floor']:.4f} +- {r0['swd_floor_std']:.4f}, "
            f"MMD^2 floor {r0['mmd_floor']:.1e} +- {r0['mmd_floor_std']:.1e}\n",
            "| method | run | steps | NFE | mode SWD | / floor | weight err | mean err | cov err | SWD | MMD^2 "
            "| wall s | model s | status |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in sub:
            ratio = r["mode_swd"] / r["mode_swd_floor"] if r["mode_swd_floor"] > 0 else math.nan
            lines.append(
                f"| {r['method']} | {r['run']} | {r['steps']} | {r['nfe']} | {_fmt(r['mode_swd'])} | "
                f"{_fmt(ratio, '.2f')} | "
                f"{_fmt(r['weight_err'])} | {_fmt(r['mean_err'])} | {_fmt(r['cov_err'], '.3f')} | {_fmt(r['swd'])} | "
                f"{_fmt(r['mmd'], '.1e')} | {r['wall_s']:.2f} | {r['model_s']:.2f} | {r['status'][:40]} |"
            )
    return "\n".join(lines) + "\n"


def _learned_table(sub: list[dict]) -> list[str]:
    r0 = sub[0]
    keys = [k for k in ("fd", "swd", "mmd") if k in r0]
    floors_txt = ", ".join(f"{k} floor {r0[f'{k}_floor']:.4g} +- {r0[f'{k}_floor_std']:.2g}" for k in keys)
    lines = [
        f"\n### {r0['problem']} (d = {r0['dim']}, n = {r0['n']}): {floors_txt}\n",
        "| method | run | steps | NFE | "
        + " | ".join(f"{k} | / floor" for k in keys)
        + " | wall s | model s | status |",
        "|---|---|---:|---:|" + "---:|---:|" * len(keys) + "---:|---:|---|",
    ]
    for r in sub:
        cells = []
        for k in keys:
            f = r[f"{k}_floor"]
            cells += [_fmt(r[k], ".4g"), _fmt(r[k] / f if f > 0 else math.nan, ".2f")]
        lines.append(
            f"| {r['method']} | {r['run']} | {r['steps']} | {r['nfe']} | {' | '.join(cells)} | "
            f"{r['wall_s']:.2f} | {r['model_s']:.2f} | {r['status'][:40]} |"
        )
    return lines


def summary_table(rows: list[dict], budgets) -> str:
    """Per problem and NFE budget: our best method, the best peer, and the ratio of their distances.

    A run counts towards a budget when its counted NFE is at most the budget.
    """
    lines = [
        "## Best at each NFE budget (primary figure: mode-conditional SWD for mixtures, FD for digits, SWD for "
        "2-D learned; ratio = ours / peer, < 1 means ours is better). `name@optimized`: the method on "
        "`sd.optimized_grid`, fitted once per score and budget on a pilot batch (65 model calls on 256 samples, "
        "not in the NFE; cached for every later sample)\n",
        "| problem | NFE <= | ours: method (NFE) | primary / floor | peer: method (NFE) | primary / floor | ratio |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for pname in dict.fromkeys(r["problem"] for r in rows):
        key = next(r for r in rows if r["problem"] == pname).get("primary", "mode_swd")
        for b in budgets:
            best = {}
            for src in ("ours", "peer"):
                cand = [
                    r
                    for r in rows
                    if r["problem"] == pname and r["source"] == src and r["nfe"] <= b and not math.isnan(r[key])
                ]
                best[src] = min(cand, key=lambda r: r[key]) if cand else None
            o, p = best["ours"], best["peer"]

            def cell(r, key=key):
                if r is None:
                    return "-", "-"
                return (
                    f"{r['method']} ({r['nfe']})",
                    f"{r[key]:.4f} / {r[key] / r[f'{key}_floor']:.2f}x",
                )

            ratio = _fmt(o[key] / p[key], ".2f") if (o and p) else "-"
            lines.append(f"| {pname} | {b} | {' | '.join(cell(o))} | {' | '.join(cell(p))} | {ratio} |")
    return "\n".join(lines) + "\n"
