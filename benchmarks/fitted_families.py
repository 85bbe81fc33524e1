"""Fitted solvers on families of problems, choosing and held-out members apart (issue 34, parts 2 and 3).

``python benchmarks/fitted_families.py`` fits :func:`scoresde.fit_solver` to each member of the families of
``benchmarks/default_grids.py`` (exact Gaussian mixtures: 16-D and 32-D ``gmm-family``, a second generator with
narrower modes, a 0.25 data scale, VE, the flow path) and samples it beside the no-fit methods, at each step count.
The figure is ``default_grids``'s (the bench's): the mode-conditional SWD against the exact law at ``t_min`` over
its two-sample floor, exact eps, float32 state, sampling seed 0. Variants:

- ``fitted``: the default fit (10,000 sample-evaluations, the grid search where it runs);
- ``fitted-nosearch``: the same budget, ``search=0`` (the named candidate grids only);
- ``fitted-40k``: ``search=0`` at 40,000 sample-evaluations (the default before the grid search);
- ``unipc``: on its default grid; ``ode-euler@uniform``: plain Euler (torchdiffeq), uniform in ``t``.

Every fit's calls are counted: a row keeps ``fit_evals`` and the amortised NFE at ``--n`` (``steps + fit_evals /
n``). Rows go to ``<out>/rows.<family>.jsonl``, keyed by seed, variant, steps, n and the fit's revision
(:data:`scoresde.fitted.REVISION`), so a rerun skips what is there and a changed fit is redone; the table (median /
worst per family) is rewritten atomically to ``<out>/fitted_families.md`` after each family.

The guide's table: ``--seeds 0-3`` (choosing: where the search's settings were looked at) and ``--seeds 100-107``
(held-out), ``--steps 4,5,10``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.cli.args import int_ranges
from scoresde.fitted import REVISION
from scoresde.util import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_grids import FAMILIES, _read, floor, sampled_ratio  # noqa: E402

VARIANTS = {
    "fitted": {},
    "fitted-nosearch": {"search": 0},
    "fitted-40k": {"search": 0, "budget": 40_000},
    "unipc": None,
    "ode-euler@uniform": None,
}


def _key(row: dict) -> tuple:
    return (row["seed"], row["variant"], row["steps"], row["n"], row.get("revision"))


def measure(family: str, seed: int, variants, steps_list, n: int) -> list[dict]:
    """One member: each variant at each step count, with the fit's cost."""
    make, sde_cls = FAMILIES[family]
    mix, sde = make(seed), sde_cls()
    fl = floor(mix.marginal(sde, sde.t_min), n)
    rows = []
    for steps in steps_list:
        for v in variants:
            t0 = time.perf_counter()
            fit_evals, grid_name = 0, None
            if VARIANTS[v] is not None:
                f = sd.fit_solver(mix.score(sde), steps, (mix.dim,), **VARIANTS[v])
                fit_evals, grid_name = f.fit_evals, f.meta["grid_name"]
                kw = dict(method=f)
            else:
                method, _, grid = v.partition("@")
                kw = dict(method=method, steps=steps, **({"grid": grid} if grid else {}))
            r, nfe = sampled_ratio(mix, sde, n, fl, **kw)
            nfe = steps if nfe is None else nfe
            rows.append(
                dict(
                    seed=seed,
                    variant=v,
                    steps=steps,
                    n=n,
                    revision=REVISION,
                    ratio=r,
                    nfe=nfe,
                    fit_evals=fit_evals,
                    nfe_amortised=round(nfe + fit_evals / n, 3),
                    grid=grid_name,
                    floor=fl,
                    wall_s=round(time.perf_counter() - t0, 2),
                )
            )
    return rows


def run(families, seeds, variants, steps_list, n: int, out: Path, log=print) -> None:
    for family in families:
        path = out / f"rows.{family}.jsonl"
        done = {_key(r) for r in _read(path)}
        for seed in seeds:
            todo = [s for s in steps_list if any((seed, v, s, n, REVISION) not in done for v in variants)]
            if not todo:
                continue
            new = [r for r in measure(family, seed, variants, todo, n) if _key(r) not in done]
            with open(path, "a") as f:
                for r in new:
                    f.write(json.dumps(r) + "\n")
                    log(f"{family} {seed} {r['variant']} {r['steps']}: {r['ratio']:.3f} ({r['grid'] or ''})")
        atomic_write_text(out / "fitted_families.md", table(out, families))


def table(out: Path, families) -> str:
    """Median / worst ratio per family, variant and step count, each seed set (choosing, held-out) apart."""
    lines = ["# Fitted solvers on families: mode-conditional SWD over its floor, median / worst over the members", ""]
    rows = {f: [r for r in _read(out / f"rows.{f}.jsonl") if r.get("revision") == REVISION] for f in families}
    for label, keep in (("choosing (seeds < 100)", lambda s: s < 100), ("held-out (seeds >= 100)", lambda s: s >= 100)):
        picked = {f: [r for r in rows[f] if keep(r["seed"])] for f in families}
        fams = [f for f in families if picked[f]]
        if not fams:
            continue
        lines += [f"## {label}", ""]
        for steps in sorted({r["steps"] for f in fams for r in picked[f]}):
            head = " | ".join(f"{f} ({len({r['seed'] for r in picked[f]})})" for f in fams)
            lines += [f"| {steps} steps | {head} |", "|---|" + "---:|" * len(fams)]
            for v in VARIANTS:
                cells = []
                for f in fams:
                    sel = [r for r in picked[f] if r["variant"] == v and r["steps"] == steps]
                    if not sel:
                        cells.append("")
                        continue
                    vals = [r["ratio"] for r in sel]
                    amort = statistics.median(r["nfe_amortised"] for r in sel)
                    cost = f" ({amort:g})" if v.startswith("fitted") else ""
                    cells.append(f"{statistics.median(vals):.2f} / {max(vals):.2f}{cost}")
                if any(cells):
                    lines.append(f"| `{v}` | " + " | ".join(cells) + " |")
            lines.append("")
    lines.append("In brackets: the fitted runs' amortised NFE per sample at the rows' n (fit included).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seeds", default="100-107", help="members, e.g. 0-3 (choosing) or 100-107 (held-out)")
    ap.add_argument("--steps", default="4,5,10")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--out", default="results/fitted_families")
    ap.add_argument("--table", action="store_true", help="only rewrite the table from the rows there")
    args = ap.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    variants = [v for v in args.variants.split(",") if v]
    bad = [f for f in families if f not in FAMILIES] + [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown {bad}; families: {', '.join(FAMILIES)}; variants: {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        steps = [int(s) for s in args.steps.split(",") if s]
        run(families, int_ranges(args.seeds), variants, steps, args.n, out, log=lambda s: print(s, file=sys.stderr))
    text = table(out, families)
    atomic_write_text(out / "fitted_families.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
