"""Fitted few-step solvers against UniPC on its default and on the optimized grid (scoresde/fitted.py).

Usage: ``python benchmarks/fitted.py [problems] [steps] [n]`` (defaults: ``gmm16,ring 5,10 20000``). Prints, per
problem and budget, the grid and variant the fit chose, its cost in sample-evaluations, and the mode-conditional
SWD over its floor of the fitted solver, UniPC and UniPC on ``grid="optimized"`` (whose pilot is not counted).
"""

import sys

import torch

import scoresde as sd
import scoresde.fitted as F
from scoresde.bench.problems import ExactProblem


def main() -> None:
    torch.set_num_threads(1)
    names = (sys.argv[1] if len(sys.argv) > 1 else "gmm16,ring").split(",")
    budgets = [int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "5,10").split(",")]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20_000
    for name in names:
        prob = ExactProblem(name)
        sde = sd.VPSDE()
        score = prob.score(sde)
        floor = prob.floors(sde, sde.t_min, n, 2)["mode_swd_floor"]
        for steps in budgets:
            f = F.fit_solver(score, steps, (prob.dim,))
            ratios = {}
            for label, kw in (
                ("fitted", dict(method=f)),
                ("unipc", dict(method="unipc", steps=steps)),
                ("unipc@optimized", dict(method="unipc", steps=steps, grid="optimized")),
            ):
                out = sd.sample(prob.score(sde), sde, prob.shape(n), seed=100, **kw)
                ratios[label] = round(prob.quality(out.x, sde, sde.t_min, seed=5)["mode_swd"] / floor, 2)
            variant = "predictor+corrector" if f.corrector is not None else "predictor"
            print(name, steps, f.meta["grid_name"], variant, "fit evaluations", f.fit_evals, ratios, flush=True)


if __name__ == "__main__":
    main()
