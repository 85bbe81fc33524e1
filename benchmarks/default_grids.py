"""Which default grid keeps the fast methods at or below plain Euler? Chosen on some family members, judged on others.

``python benchmarks/default_grids.py`` samples exact Gaussian mixtures from several *families* (generators with a
seed) with each fast method (``unipc``, ``dpm++2m``, ``dpm++3m``, ``dpm++2m-sde``) on each named grid of
:data:`scoresde.grids.GRIDS`, and with plain Euler (``ode-euler``: torchdiffeq's Euler on the probability-flow ODE,
uniform in ``t``), at 5, 10 and 20 NFE. The figure is the bench's: the mode-conditional SWD of the samples against
the exact law at ``t_min`` over its two-sample floor (the mean of five pairs of exact sets of the same size), the
reference draws and the floor's seeds as in :mod:`scoresde.bench.problems`; exact eps through ``sd.EpsilonScore``,
float32 state, sampling seed 0.

The families differ in what a grid is sensitive to:

- ``fam16``, ``fam32``: :func:`scoresde.problems.family_member` (``gmm-family``), 16-D with 4 modes and 32-D with 8;
  mode variances log-uniform over ``[0.05, 0.5]``, means at 1.5 - 3.5 from the origin, on the linear VP SDE;
- ``mix16``: the other generator, :func:`scoresde.problems.mixture` (the one ``gmm16`` / ``gmm64`` come from),
  16-D, 8 modes; standard deviations log-uniform over ``[0.02, 0.3]`` (narrower modes), means at radius 3, weights
  ``1 .. K``;
- ``small16``: ``fam16`` members scaled by 0.25 (data scale about 0.6, the scale of images in ``[-1, 1]``: the
  modes are narrow against the VP prior's unit scale in absolute terms);
- ``ve16``: ``fam16`` members on the VE SDE (``sigma`` from 0.01 to 50; its uniform grid in ``t`` is the log-SNR
  grid);
- ``flow16``: ``fam16`` members on the rectified-flow path (:class:`scoresde.sde.FlowSDE`).

Stage ``choose`` runs every candidate on the choosing seeds (:data:`CHOOSE_SEEDS`, ``--n-choose`` samples) and on
the built-in ``ring``, ``gmm16``, ``gmm64``; stage ``judge`` runs the variants named by ``--judge`` (default: the
methods' current defaults, the old ``logsnr`` default and Euler) on the held-out seeds (:data:`HELD_OUT`, ``--n``
samples). Every measured row is appended to ``<out>/rows.<family>.jsonl`` (a rerun skips rows already there), and
the table, median / worst over each family's members of the ratio to the floor, is rewritten atomically to
``<out>/default_grids.md`` after every family. ``--families`` runs a subset (two processes may run disjoint
subsets into the same folder). ``--table`` only rewrites the table.

The guide's table (December, two shared cores, three processes side by side): ``--stage choose --families
fam16,mix16,fam32`` and ``--families small16,ve16,flow16`` (about 15 and 10 minutes), the built-ins ``ring`` and
``gmm16`` with every candidate (``gmm64`` with eight: its 64-D runs take 10 - 35 s each), then ``--stage judge`` with
``--judge unipc@quadratic,unipc@logsnr,dpm++2m@quadratic,dpm++2m@logsnr,dpm++3m@quadratic,dpm++3m@logsnr,
ode-euler@uniform`` (``fam32`` without the two ``dpm++3m`` variants), about 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.grids import GRIDS
from scoresde.metrics import assign_modes, mode_conditional_swd
from scoresde.problems import GaussianMixture, family_member, get_problem, mixture
from scoresde.util import atomic_write_text

METHODS = ("unipc", "dpm++2m", "dpm++3m", "dpm++2m-sde")
EULER = "ode-euler@uniform"
# Two model calls a step, so floor(NFE / 2) steps (4 NFE in the 5 NFE table): torchdiffeq's midpoint on the
# probability-flow ODE, on the uniform grid (its default) and on the quadratic one.
MIDPOINT = ("ode-midpoint@uniform", "ode-midpoint@quadratic")
CANDIDATES = (*(f"{m}@{g}" for m in METHODS for g in GRIDS), EULER, *MIDPOINT)
NFE = (5, 10, 20)
CHOOSE_SEEDS = (0, 1)
HELD_OUT = tuple(range(100, 104))
BUILTINS = ("ring", "gmm16", "gmm64")
FLOOR_SEEDS = 5


def _scaled(m: GaussianMixture, c: float) -> GaussianMixture:
    return GaussianMixture(c * m.means, c * c * m.covs, m.weights)


FAMILIES = {
    "fam16": (lambda s: family_member(16, 4, s), sd.VPSDE),
    "fam32": (lambda s: family_member(32, 8, s), sd.VPSDE),
    "mix16": (lambda s: mixture(dim=16, n_modes=8, seed=1000 + s), sd.VPSDE),
    "small16": (lambda s: _scaled(family_member(16, 4, s), 0.25), sd.VPSDE),
    "ve16": (lambda s: family_member(16, 4, s), sd.VESDE),
    "flow16": (lambda s: family_member(16, 4, s), sd.FlowSDE),
}


def mode_swd(x: torch.Tensor, target: GaussianMixture, seed: int) -> float:
    """The bench's ``mode_swd`` (:func:`scoresde.bench.problems.quality`), without its other metrics."""
    g = torch.Generator().manual_seed(seed)
    return mode_conditional_swd(x, target, g, labels=assign_modes(x, target))[0]


def floor(target: GaussianMixture, n: int) -> float:
    """The bench's two-sample floor of ``mode_swd`` (:func:`scoresde.bench.problems.floors`), mean of its seeds."""
    vals = [
        mode_swd(target.sample(n, generator=torch.Generator().manual_seed(1_000 + s)), target, 2_000 + s)
        for s in range(FLOOR_SEEDS)
    ]
    return sum(vals) / len(vals)


def sampled_ratio(mix: GaussianMixture, sde, n: int, fl: float, **kw) -> tuple[float, int | None]:
    """``sd.sample(**kw)`` from ``mix``'s exact score (seed 0, float32) scored by :func:`mode_swd` over the floor
    ``fl``, and the run's NFE (``None`` when it stopped on a non-finite value); ``inf`` where it diverged."""
    try:
        out = sd.sample(mix.score(sde), sde, (n, mix.dim), seed=0, dtype=torch.float32, **kw)
    except sd.solvers.NonFiniteError:
        return float("inf"), None
    if not torch.isfinite(out.x).all():
        return float("inf"), out.nfe
    r = mode_swd(out.x, mix.marginal(sde, sde.t_min), 7) / fl
    return (r if math.isfinite(r) else float("inf")), out.nfe  # finite samples far out give a nan mode assignment


def ratio(mix: GaussianMixture, sde, variant: str, nfe: int, n: int, fl: float) -> float:
    """The ratio to the floor of ``variant`` (``method@grid``) at the most steps its calls per step fit in ``nfe``."""
    method, _, grid = variant.partition("@")
    per_step = sd.solvers.get_solver(method).nfe_per_step
    r, made = sampled_ratio(mix, sde, n, fl, method=method, steps=nfe // per_step, grid=grid)
    assert made in (None, nfe // per_step * per_step), (variant, made, nfe)
    return r


def run_family(family: str, seeds, variants, n: int, out: Path, log) -> None:
    path = out / f"rows.{family}.jsonl"
    done = {(r["seed"], r["variant"], r["nfe"], r["n"]) for r in _read(path)}
    for seed in seeds:
        todo = [(v, b) for v in variants for b in NFE if (seed, v, b, n) not in done]
        if not todo:
            continue
        if family == "builtin":
            mix, sde = get_problem(seed), sd.VPSDE()
        else:
            make, sde_cls = FAMILIES[family]
            mix, sde = make(seed), sde_cls()
        fl = floor(mix.marginal(sde, sde.t_min), n)
        with open(path, "a") as f:
            for v, b in todo:
                t0 = time.perf_counter()
                r = ratio(mix, sde, v, b, n, fl)
                row = dict(
                    seed=seed, variant=v, nfe=b, n=n, ratio=r, floor=fl, wall_s=round(time.perf_counter() - t0, 2)
                )
                f.write(json.dumps(row) + "\n")
                f.flush()
                log(f"{family} {seed} {v} {b}: {r:.3f}")


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _cell(vals: list[float], euler: list[float]) -> str:
    """``median / worst``; bold where the median is at most plain Euler's on the same members."""
    if not vals:
        return ""
    text = f"{statistics.median(vals):.2f} / {max(vals):.2f}"
    return f"**{text}**" if euler and statistics.median(vals) <= statistics.median(euler) else text


def table(out: Path) -> str:
    """Median / worst ratio to the floor per family, variant and NFE, choosing and held-out members apart."""
    lines = [
        "# Default grids: mode-conditional SWD over its floor, median / worst over a family's members",
        "",
        "Bold: a median at most plain Euler's (`ode-euler@uniform`) on the same members.",
        "",
    ]
    for stage, seeds in (("choosing", set(CHOOSE_SEEDS)), ("held-out", set(HELD_OUT)), ("built-in", set(BUILTINS))):
        if stage == "built-in":  # three different problems: a column each
            fams = list(BUILTINS)
            rows = {f: [r for r in _read(out / "rows.builtin.jsonl") if r["seed"] == f] for f in fams}
        else:
            fams = list(FAMILIES)
            rows = {f: [r for r in _read(out / f"rows.{f}.jsonl") if r["seed"] in seeds] for f in fams}
        if not any(rows.values()):
            continue
        lines += [f"## {stage} members", ""]
        variants = [v for v in CANDIDATES if any(r["variant"] == v for rs in rows.values() for r in rs)]
        for b in NFE:
            head = f"| {b} NFE | " + " | ".join(
                f"{f} ({len({r['seed'] for r in rows[f]})}, n={','.join(sorted({str(r['n']) for r in rows[f]}))})"
                for f in fams
                if rows[f]
            )
            lines += [head + " |", "|---|" + "---:|" * sum(1 for f in fams if rows[f])]
            for v in variants:
                cells = [
                    _cell(
                        [r["ratio"] for r in rows[f] if r["variant"] == v and r["nfe"] == b],
                        [r["ratio"] for r in rows[f] if r["variant"] == EULER and r["nfe"] == b and v != EULER],
                    )
                    for f in fams
                    if rows[f]
                ]
                lines.append(f"| `{v}` | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=("choose", "judge", "both"), default="both")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset of the families")
    ap.add_argument("--judge", default="", help="variants judged on held-out seeds (default: defaults, logsnr, Euler)")
    ap.add_argument("--n", type=int, default=20_000, help="samples per held-out run")
    ap.add_argument("--n-choose", type=int, default=10_000, help="samples per choosing run")
    ap.add_argument("--builtins", action="store_true", help="also the built-in ring, gmm16, gmm64 (choose stage)")
    ap.add_argument("--out", default="results/default_grids")
    ap.add_argument("--table", action="store_true", help="only rewrite the table from the rows there")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def write() -> None:
        atomic_write_text(out / "default_grids.md", table(out))

    if not args.table:
        if args.stage in ("choose", "both"):
            if args.builtins:
                run_family("builtin", BUILTINS, CANDIDATES, args.n_choose, out, log)
                write()
            for f in families:
                run_family(f, CHOOSE_SEEDS, CANDIDATES, args.n_choose, out, log)
                write()
        if args.stage in ("judge", "both"):
            judge = [v for v in args.judge.split(",") if v] or sorted(
                {f"{m}@{sd.solvers.get_solver(m).default_grid}" for m in METHODS}
                | {f"{m}@logsnr" for m in METHODS}
                | {EULER}
            )
            for f in families:
                run_family(f, HELD_OUT, judge, args.n, out, log)
                write()
    write()
    print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
