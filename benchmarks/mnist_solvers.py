"""The solvers judged on the shipped MNIST network (a U-Net on 28x28 images): FD over its floor at 5, 10, 20 and 50
NFE for our methods, the fitted solver and the peers, and the sample grids a reader looks at first.

    python benchmarks/mnist_solvers.py                  # n = 1,000 samples per run: about 35 min on 2 idle cores
    python benchmarks/mnist_solvers.py --quick          # a minute: n = 100, NFE 5 and 10, three methods

It runs ``scoresde bench --problems learned:mnist --methods M --peers P --nfe 5,10,20,50 --n N --out OUT`` in this
process (the table: ``OUT/bench_*.md``, rows resumed by their keys), with the network under bfloat16 autocast for
every method and peer alike (the state in float32: ``--dtype bfloat16`` for ours, the same autocast around the
peers' loops; the network was trained in bfloat16). Each sample's label is drawn from the training frequencies
(:class:`scoresde.bench.LearnedProblem`): the data's law, no guidance. FD is on the MNIST judge's features against
the whole test split, over the floor of ``N`` real train images.

Then ``OUT/mnist_grids_5.png`` and ``OUT/mnist_grids_10.png``: one row per method at that NFE, the same first
``--grid`` samples (seed 0: our methods draw sample ``i``'s noise from ``(seed, i)``, so these are the table's first
samples; the peers draw their own).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import scoresde as sd
from scoresde import peers
from scoresde.bench import LearnedProblem
from scoresde.bench.config import BenchConfig
from scoresde.cli import main as cli_main
from scoresde.fitted import fit_solver
from scoresde.plot import save_image_grid
from scoresde.sde import VPSDE

OURS = ("unipc", "dpm++2m", "ddim", "ddpm", "fitted")
PEERS = ("diffusers-unipc", "diffusers-dpmpp_2m-karras", "diffusers-ddim")
QUICK = (("unipc", "ddim", "fitted"), ("diffusers-unipc",), (5, 10), 100)


def grid_row(prob: LearnedProblem, method: str, nfe: int, k: int, n: int) -> torch.Tensor:
    """The first ``k`` samples of ``method`` at ``nfe`` model calls (seed 0); ``fitted`` is fitted as the bench
    fits it for runs of ``n`` samples."""
    shape = prob.shape(k)
    if method in peers.available_peers():
        sde = VPSDE(T=peers.PEER_T)
        return peers.peer_sample(method, prob.score(sde), sde, shape, nfe=nfe, seed=0).x
    score = prob.score(prob.sde)
    if method == "fitted":  # fitted on this network as the bench fits it
        budget = BenchConfig(n=n).fit_budget_for(nfe)
        solver = fit_solver(score, nfe, tuple(shape[1:]), budget=budget, dtype=torch.float32)
        return sd.sample(score, prob.sde, shape, method=solver, seed=0).x
    steps = nfe // sd.method_info(method)["nfe_per_step"]
    return sd.sample(score, prob.sde, shape, method=method, steps=steps, seed=0).x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--methods", default=",".join(OURS), help="ours (default: %(default)s)")
    ap.add_argument("--peers", default=",".join(PEERS), help="the peers' (default: %(default)s)")
    ap.add_argument("--grid", type=int, default=10, help="samples per method in the grids")
    ap.add_argument("--out", default="results/mnist_solvers")
    a = ap.parse_args(argv)
    split = (tuple(a.methods.split(",")), tuple(p for p in a.peers.split(",") if p))
    ours, theirs, budgets, n = QUICK if a.quick else (*split, (5, 10, 20, 50), a.n)
    theirs = tuple(p for p in theirs if p in peers.available_peers())  # diffusers / k-diffusion are extras
    out = Path(a.out)
    args = ["bench", "--problems", "learned:mnist", "--methods", ",".join(ours), "--peers", ",".join(theirs)]
    args += ["--nfe", ",".join(map(str, budgets)), "--n", str(n), "--dtype", "bfloat16", "--out", str(out)]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the peers' network calls as ours
        status = cli_main(args)
        prob = LearnedProblem("mnist")
        for nfe in (5, 10):
            rows = [grid_row(prob, m, nfe, a.grid, n) for m in (*ours, *theirs)]
            titles = [m if i == 0 else "" for m in (*ours, *theirs) for i in range(a.grid)]
            save_image_grid(torch.cat(rows).float(), out / f"mnist_grids_{nfe}.png", nrow=a.grid, titles=titles)
    print(f"grids: {out}/mnist_grids_5.png, {out}/mnist_grids_10.png")
    return status


if __name__ == "__main__":
    sys.exit(main())
