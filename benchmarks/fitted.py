"""Fitted few-step solvers against UniPC on its default and on the optimized grid (scoresde/fitted/).

Usage:
    python benchmarks/fitted.py [problems] [steps] [n]            (defaults: gmm16,ring 5,10 20000)
    python benchmarks/fitted.py family [steps] [n] [seeds]        (held-out gmm-family:d=16,k=4 members;
                                                                   default seeds 100-109)

Prints, per problem and budget, the grid and variant the fit chose, its cost in sample-evaluations, and the
mode-conditional SWD over its floor of the fitted solver, UniPC and UniPC on ``grid="optimized"`` (whose pilot,
65 calls on 256 samples, is not counted); ``family`` adds the median and worst ratio over the seeds.
"""

import statistics
import sys

import torch

import scoresde as sd
import scoresde.fitted as F
from scoresde.bench.problems import ExactProblem

METHODS = ("fitted", "unipc", "unipc@optimized")


def ratios(name: str, steps: int, n: int) -> tuple[dict, F.FittedSolver]:
    prob = ExactProblem(name)
    sde = sd.VPSDE()
    floor = prob.floors(sde, sde.t_min, n, 2)["mode_swd_floor"]
    f = F.fit_solver(prob.score(sde), steps, (prob.dim,))
    out = {}
    for label, kw in zip(
        METHODS,
        (dict(method=f), dict(method="unipc", steps=steps), dict(method="unipc", steps=steps, grid="optimized")),
        strict=True,
    ):
        x = sd.sample(prob.score(sde), sde, prob.shape(n), seed=100, **kw).x
        out[label] = prob.quality(x, sde, sde.t_min, seed=5)["mode_swd"] / floor
    return out, f


def main() -> None:
    torch.set_num_threads(1)
    args = sys.argv[1:]
    names = (args[0] if args else "gmm16,ring").split(",")
    budgets = [int(v) for v in (args[1] if len(args) > 1 else "5,10").split(",")]
    n = int(args[2]) if len(args) > 2 else 20_000
    if names == ["family"]:
        lo, hi = (int(v) for v in (args[3] if len(args) > 3 else "100-109").split("-"))
        for steps in budgets:
            rows = []
            for seed in range(lo, hi + 1):
                r, f = ratios(f"gmm-family:d=16,k=4,seed={seed}", steps, n)
                rows.append(r)
                print(
                    f"seed {seed} steps {steps} {f.meta['grid_name']}",
                    {k: round(v, 2) for k, v in r.items()},
                    flush=True,
                )
            for m in METHODS:
                vals = [r[m] for r in rows]
                print(
                    f"family steps {steps} {m}: median {statistics.median(vals):.2f} worst {max(vals):.2f}", flush=True
                )
        return
    for name in names:
        for steps in budgets:
            r, f = ratios(name, steps, n)
            variant = "predictor+corrector" if f.corrector is not None else "predictor"
            print(
                name,
                steps,
                f.meta["grid_name"],
                variant,
                "fit evaluations",
                f.fit_evals,
                {k: round(v, 2) for k, v in r.items()},
                flush=True,
            )


if __name__ == "__main__":
    main()
