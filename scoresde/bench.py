"""The step-count vs quality benchmark on the built-in exact problems (behind ``scoresde bench``).

For each problem, method and NFE budget, draw ``n`` samples with the exact mixture score from the prior at
``T`` down to ``t_min`` and compare them with exact draws of ``p_{t_min}``:

- ``mode_swd``: mode-conditional sliced W2 (the primary figure, see :mod:`scoresde.metrics`),
- ``weight_err``: the largest error of the per-mode sample fraction,
- ``swd``: the global sliced W2 (dominated by per-mode count noise near the floor; secondary),

each beside its two-sample floor (mean and std over seeds of the same statistic between exact sample sets).
Fixed-step methods get ``steps = budget // nfe_per_step``; adaptive methods run once per tolerance and report
what they counted. Results go to ``<out>/bench_<tag>.csv`` and ``.json``, written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .metrics import mode_conditional_swd, sliced_wasserstein
from .problems import get_problem
from .sample import available_methods, sample
from .sde import VPSDE
from .solvers import NonFiniteError, method_info

__all__ = ["BenchConfig", "run_bench", "format_table"]


@dataclass
class BenchConfig:
    problems: tuple[str, ...] = ("ring", "gmm16", "gmm64")
    methods: tuple[str, ...] = ()  # empty: every registered method
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
            problems=("ring", "gmm16"),
            budgets=(10, 20, 50, 100),
            tolerances=(1e-2, 1e-4),
            n=4000,
            floor_seeds=5,
            tag="quick",
        )
        return cls(**{**base, **kw})


def _quality(x: torch.Tensor, target, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    mode_swd, weight_err = mode_conditional_swd(x, target, g)
    ref = target.sample(x.shape[0], generator=g)
    return {"mode_swd": mode_swd, "weight_err": weight_err, "swd": sliced_wasserstein(x, ref)}


def _floor(target, n: int, seeds: int) -> dict:
    rows = [
        _quality(target.sample(n, generator=torch.Generator().manual_seed(1_000 + s)), target, 2_000 + s)
        for s in range(seeds)
    ]
    out = {}
    for key in rows[0]:
        v = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        out[key] = (float(v.mean()), float(v.std()))
    return out


def _runs(method: str, cfg: BenchConfig):
    """(label, sample kwargs) for each budget (fixed-step) or tolerance (adaptive)."""
    info = method_info(method)
    if info["adaptive"]:
        return [(f"tol={tol:g}", {"rtol": tol, "atol": tol}) for tol in cfg.tolerances]
    seen, runs = set(), []
    for b in cfg.budgets:
        steps = b // info["nfe_per_step"]
        if steps >= 1 and steps not in seen:
            seen.add(steps)
            runs.append((f"budget={b}", {"steps": steps}))
    return runs


def run_bench(cfg: BenchConfig, progress=None) -> list[dict]:
    """Run the grid and return one dict per (problem, method, run); also writes the CSV and JSON files."""
    sde = VPSDE()
    methods = cfg.methods or tuple(available_methods())
    rows: list[dict] = []
    for pname in cfg.problems:
        gmm = get_problem(pname)
        target = gmm.marginal(sde, sde.t_min)
        floor = _floor(target, cfg.n, cfg.floor_seeds)
        score = gmm.score(sde)
        for method in methods:
            for label, kw in _runs(method, cfg):
                t0 = time.perf_counter()
                try:
                    out = sample(score, sde, (cfg.n, gmm.dim), method=method, seed=cfg.seed, **kw)
                    wall = time.perf_counter() - t0
                    q, nfe, status = _quality(out.x, target, cfg.seed + 7), out.nfe, "ok"
                except NonFiniteError as e:
                    wall, q, nfe, status = (
                        time.perf_counter() - t0,
                        dict.fromkeys(floor, math.nan),
                        score.nfe,
                        f"diverged: {e}",
                    )
                row = {
                    "problem": pname,
                    "dim": gmm.dim,
                    "method": method,
                    "run": label,
                    "steps": kw.get("steps", ""),
                    "nfe": nfe,
                    "wall_s": round(wall, 4),
                    **{k: q[k] for k in floor},
                    **{f"{k}_floor": floor[k][0] for k in floor},
                    **{f"{k}_floor_std": floor[k][1] for k in floor},
                    "status": status,
                }
                rows.append(row)
                if progress is not None:
                    progress(row)
    _write(rows, cfg)
    return rows


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write(rows: list[dict], cfg: BenchConfig) -> None:
    out = Path(cfg.out)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _atomic_write(out / f"bench_{cfg.tag}.csv", buf.getvalue())
    _atomic_write(out / f"bench_{cfg.tag}.json", json.dumps({"config": asdict(cfg), "rows": rows}, indent=1))
    _atomic_write(out / f"bench_{cfg.tag}.md", format_table(rows))


def format_table(rows: list[dict]) -> str:
    """A Markdown table: one line per run, the primary figure beside its floor."""
    lines = []
    for pname in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == pname]
        f, fs = sub[0]["mode_swd_floor"], sub[0]["mode_swd_floor_std"]
        lines += [
            f"\n### {pname} (d = {sub[0]['dim']}), mode-conditional SWD floor {f:.4f} +- {fs:.4f}, "
            f"global SWD floor {sub[0]['swd_floor']:.4f} +- {sub[0]['swd_floor_std']:.4f}\n",
            "| method | run | steps | NFE | mode SWD | / floor | weight err | global SWD | wall s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sub:
            ratio = r["mode_swd"] / f if f > 0 else math.nan
            lines.append(
                f"| {r['method']} | {r['run']} | {r['steps']} | {r['nfe']} | {r['mode_swd']:.4f} | {ratio:.2f} | "
                f"{r['weight_err']:.4f} | {r['swd']:.4f} | {r['wall_s']:.2f} |"
            )
    return "\n".join(lines) + "\n"
