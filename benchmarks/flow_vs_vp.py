"""Does the straighter path buy fewer steps? The checkerboard recipe trained both ways at the same budget.

``python benchmarks/flow_vs_vp.py`` trains ``benchmarks/learned.py``'s 2-D recipe (6,000 steps of batch 1,024, the
MLP on 256 Fourier features, bfloat16 where the CPU has the kernels) twice: on the VP SDE with v prediction and
EDM's lognormal noise levels (the recipe), and on the rectified-flow path with the flow-matching loss (velocity
``eps - x0``) and SD3's logit-normal times. Each model samples 100,000 points at 10, 20 and 50 NFE with every
solver and grid of :data:`CANDIDATES` (the denoising step at the end included, as learned.py does), scored by the
histogram total variation against fresh data over its two-sample floor; the table gives each path's best at each
budget and the solver that reached it (at 50 NFE two candidates: every one is near the floor from 20).

Runs are trained into ``<out>/runs/{vp,flow}`` and resumed from their checkpoints; every figure is cached in
``<out>/flow_vs_vp.<path>.json`` under a key holding the checkpoint's hash, so a rerun reuses only what the same
model produced, and ``--only vp`` / ``--only flow`` in two processes run the paths side by side (the table is
written once both are there). ``--quick`` trains 300 steps and samples 10,000 points (a smoke run, not a result).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from _toy import tv_floor  # benchmarks/_toy.py, beside this script

import scoresde as sd
from scoresde import metrics
from scoresde.precision import fast_bfloat16
from scoresde.train import TrainConfig, load_score, train
from scoresde.util import atomic_write_text

RECIPE = dict(
    data="checkerboard",
    n_train=100_000,
    model={"arch": "mlp", "fourier_features": 256, "fourier_scale": 0.5},
    steps=6000,
    batch_size=1024,
    lr=2e-3,
    warmup=200,
)
PATHS = {
    "vp": dict(prediction="v", t_sampler="lognormal"),  # benchmarks/learned.py's recipe
    "flow": dict(sde={"name": "flow"}, prediction="flow", t_sampler="logit-normal"),
}
# Each path's best no-fit choices on the exact mixtures (log-SNR multistep on VP; the family table of
# docs/guides/solvers.md on the flow path), and the cross-overs.
CANDIDATES = ["dpm++2m@logsnr", "unipc@logsnr", "unipc@uniform", "unipc@quadratic", "ode-midpoint@uniform"]
BUDGETS = (10, 20, 50)
AT_50 = ["dpm++2m@logsnr", "unipc@uniform"]  # every candidate is near the floor at 20: two at 50 (5 minutes each)


def _candidates(budget: int) -> list[str]:
    return AT_50 if budget >= 50 else CANDIDATES


def _train(name: str, out: Path, quick: bool) -> dict:
    dtype = "bfloat16" if fast_bfloat16("cpu") else "float32"
    saved = out / "runs" / name / "config.json"
    if saved.is_file():
        dtype = TrainConfig.from_saved(saved).dtype  # a run on disk resumes in its own dtype
    kw = {**RECIPE, **PATHS[name], "dtype": dtype, "steps": 300 if quick else RECIPE["steps"]}
    cfg = TrainConfig(**kw, ckpt_every=500, log_every=50, out=str(out / "runs" / name))
    res = train(cfg, resume=(Path(cfg.out) / "ckpt.json").exists(), progress=sys.stderr.isatty())
    return {"steps": res.step, "dtype": dtype, "seconds_this_run": round(res.seconds, 1), "final_loss": res.losses[-1]}


def _hash(run: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(run.glob("ckpt*")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/flow_vs_vp")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=tuple(PATHS), help="train and sample one path (the other's cached rows are read)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 10_000 if args.quick else 100_000
    ref = sd.data.toy_2d("checkerboard", n, seed=40_001)
    floor = tv_floor("checkerboard", n, 5)[0]
    table = {}
    for name in PATHS:
        cache_path = out / f"flow_vs_vp.{name}.json"
        cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        if args.only not in (None, name):
            if "table" in cache:
                table[name] = cache["table"]
            continue
        info = _train(name, out, args.quick)
        run = out / "runs" / name
        score, sde, _, _ = load_score(run)
        key = _hash(run)
        table[name] = {"train": info, "rows": {}}
        for budget in BUDGETS:
            for cand in _candidates(budget):
                method, _, grid = cand.partition("@")
                steps = (budget - 1) // sd.method_info(method)["nfe_per_step"]  # one call for the denoising step
                ck = f"{key}:{cand}:{budget}:{n}"
                if ck not in cache:
                    t0 = time.perf_counter()
                    s = sd.sample(score, sde, (n, 2), method=method, steps=steps, grid=grid, seed=0, denoise=True)
                    cache[ck] = {"tv": metrics.histogram_tv(s.x, ref), "nfe": s.nfe, "s": time.perf_counter() - t0}
                    atomic_write_text(cache_path, json.dumps(cache, indent=1))
                table[name]["rows"][f"{cand}:{budget}"] = cache[ck]
        cache["table"] = table[name]
        atomic_write_text(cache_path, json.dumps(cache, indent=1))
    if set(table) != set(PATHS):
        print(f"rows of {', '.join(table)} done; the table needs both paths (run the other with --only)")
        return 0
    lines = [
        f"checkerboard, histogram TV over its floor ({floor:.4f}, n = {n}), best solver per path and budget",
        "",
        "| NFE | VP (v, lognormal): best | TV / floor | flow (velocity, logit-normal): best | TV / floor |",
        "|---:|---|---:|---|---:|",
    ]
    for budget in BUDGETS:
        cells = []
        for name in PATHS:
            rows = {c: table[name]["rows"][f"{c}:{budget}"] for c in _candidates(budget)}
            best = min(rows, key=lambda c: rows[c]["tv"])
            cells += [f"{best} ({rows[best]['nfe']})", f"{rows[best]['tv'] / floor:.2f}"]
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    lines += ["", "every candidate (TV / floor):", ""]
    lines += ["| path | " + " | ".join(f"{c}" for c in CANDIDATES) + " |", "|---|" + "---:|" * len(CANDIDATES)]
    for name in PATHS:
        for budget in BUDGETS:
            rows = table[name]["rows"]
            cells = [rows.get(f"{c}:{budget}") for c in CANDIDATES]
            vals = [f"{r['tv'] / floor:.2f}" if r else "-" for r in cells]
            lines.append(f"| {name}, {budget} NFE | " + " | ".join(vals) + " |")
    for name in PATHS:
        lines.append(f"\n{name}: {json.dumps(table[name]['train'])}")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "flow_vs_vp.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
