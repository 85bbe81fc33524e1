"""Deterministic against stochastic samplers on a trained network, under the bench's protocol (issue 34, part 4).

    python benchmarks/network_samplers.py --checkpoint results/flow_vs_vp/runs/vp --n 20000 --seeds 0-1 \\
        --runs "unipc:20,unipc:50,unipc:20:eta=1,unipc:50:eta=1,dpm++2m-sde:20,dpm++2m-sde:50"

``--checkpoint`` is anything ``scoresde bench --problems learned:DIR`` reads: a ``scoresde train`` folder of a 2-D
set, a mixture set, the digits, or a shipped model (``mnist``). Each run ``method:NFE[:key=value...]`` samples ``n``
points with ``steps = NFE // nfe_per_step`` (``grid=NAME`` picks the grid; other keys are the method's options, e.g.
``eta=1``), ending at ``t_min`` without a denoising step, and is scored as the bench scores that checkpoint
(:class:`scoresde.bench.problems.LearnedProblem`: histogram TV on a 2-D set, mode-conditional SWD against the exact
law on a mixture set, FD on the digit or MNIST judge), over its floor (3 seeds). One row per run and sampling seed,
keyed by the checkpoint's digest, ``n``, the run and the seed, in ``<out>/network_samplers.json`` (written
atomically; a rerun keeps the rows it has). Prints, per run, the mean ratio over the seeds and their range.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.bench.problems import LearnedProblem
from scoresde.cli.args import int_ranges, option
from scoresde.util import atomic_write_text


def parse_run(spec: str) -> tuple[str, int, dict]:
    """``"unipc:20:eta=1:grid=logsnr"`` -> ``("unipc", 20, {"eta": 1, "grid": "logsnr"})``."""
    method, _, rest = spec.strip().partition(":")
    nfe, *opts = rest.split(":")
    if not method or not nfe.isdigit() or int(nfe) < 1:
        raise ValueError(f"--runs: expected method:NFE[:key=value...], got {spec!r}")
    return method, int(nfe), dict(option(o) for o in opts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--runs", default="unipc:20,unipc:50,unipc:20:eta=1,unipc:50:eta=1")
    ap.add_argument("--seeds", default="0", help="sampling seeds, e.g. 0-2 (default: 0)")
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    runs = [parse_run(s) for s in a.runs.split(",") if s.strip()]
    problem = LearnedProblem(a.checkpoint)
    sde, t_end = problem.sde, problem.sde.t_min
    path = Path(a.out) / "network_samplers.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    base = f"{problem.identity}|{a.n}"
    floor_key = f"{base}|floor"
    if floor_key not in rows:
        fl = problem.floors(sde, t_end, a.n, 3)
        rows[floor_key] = {"metric": problem.primary, "floor": fl[f"{problem.primary}_floor"]}
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
    floor = rows[floor_key]["floor"]
    for method, nfe, opts in runs:
        ratios = []
        for seed in int_ranges(a.seeds):
            key = f"{base}|{method}:{nfe}:{json.dumps(opts, sort_keys=True)}|{seed}"
            if key not in rows:
                steps = nfe // sd.method_info(method)["nfe_per_step"]
                t0 = time.perf_counter()
                out = sd.sample(problem.score(sde), sde, problem.shape(a.n), method=method, steps=steps, seed=seed,
                                **opts)  # fmt: skip
                value = problem.quality(out.x, sde, t_end, seed + 7)[problem.primary]
                rows[key] = dict(checkpoint=problem.name, method=method, options=opts, steps=steps, nfe=out.nfe,
                                 seed=seed, metric=problem.primary, value=value, floor=floor, ratio=value / floor,
                                 seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
                atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
            ratios.append(rows[key]["ratio"])
        label = ":".join([method, str(nfe), *(f"{k}={v}" for k, v in opts.items())])
        spread = f" ({min(ratios):.3f} - {max(ratios):.3f})" if len(ratios) > 1 else ""
        print(f"{label:32s} {problem.primary} / floor {sum(ratios) / len(ratios):.3f}{spread}", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
