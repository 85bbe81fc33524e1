"""Where to guide: classifier-free guidance on the learned digits models, limited to intervals of noise levels.

    python benchmarks/guidance_interval.py --runs results/learned/runs   # after benchmarks/learned.py --only digits
    python benchmarks/guidance_interval.py --runs results/learned_quick/runs --quick

Guidance ``(1 + w) D(x | c) - w D(x)`` applied only where ``lo < sigma / alpha <= hi`` (Kynkaenniemi et al. 2024,
``guidance_interval``). For each model of ``benchmarks/learned.py`` (``digits``: class-conditional, labels cycling
through the classes; ``digits-uncond``: cluster-conditional, each sample's cluster drawn with the sampling seed),
one row without guidance and one per entry of ``--intervals`` (``all``: guidance at every level), sampled with
``dpm++2m`` at 50 steps and scored as ``benchmarks/learned.py`` scores them: FD / floor per sampling seed, its
mean and spread, class accuracy for the labelled model, and the network evaluations per sample (a guided step
costs two). Every (model, w, interval, seed) figure is kept in ``<out>/guidance_interval.json`` under a key that
holds the checkpoint's hash, so a rerun resumes and an unchanged row is never recomputed; the file and its
``.md`` table are written atomically after each figure (default ``results/guidance_interval``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from _digits import N, score_seed  # benchmarks/_digits.py, beside this script

from scoresde.bench import LearnedProblem
from scoresde.train.pretrained import check_interval
from scoresde.util import atomic_write_text

SEEDS = (0, 1, 2)
INTERVALS = "all;0.28,5.42;0.28,2;0.1,2;0.1,1"  # every level, EDM2's interval, then narrower ones


def _parse_intervals(text: str) -> list[tuple[float, float] | None]:
    """``"all;lo,hi;..."``: ``None`` (guidance at every level) for ``all``, else checked ``(lo, hi)`` pairs."""
    out = []
    for part in filter(None, text.split(";")):
        if part.strip() == "all":
            out.append(None)
            continue
        try:
            lo, hi = (float(v) for v in part.split(","))
        except ValueError:
            raise ValueError(f"an interval is 'lo,hi' or 'all', got {part!r}") from None
        out.append(check_interval((lo, hi)))
    return out


def _markdown(res: dict) -> str:
    lines = ["# Guidance intervals on the learned digits models\n", f"dpm++2m, {res['steps']} steps\n"]
    for name, rows in res["runs"].items():
        lines += [f"## {name}\n", "| guidance | network evaluations / sample | FD / floor | per seed | accuracy |"]
        lines.append("|---|---:|---:|---|---:|")
        for label, q in rows.items():
            fd = torch.tensor(q["fd_over_floor_seeds"], dtype=torch.float64)
            std = f" +- {float(fd.std()):.2f}" if len(fd) > 1 else ""
            per = ", ".join(f"{v:.2f}" for v in fd.tolist())
            acc = f"{q['accuracy']:.4f}" if "accuracy" in q else "-"
            lines.append(f"| {label} | {q['evals']:g} | {float(fd.mean()):.2f}{std} | {per} | {acc} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="results/learned/runs", help="benchmarks/learned.py's runs folder")
    p.add_argument("--only", choices=("digits", "digits-uncond"))
    p.add_argument("--w", type=float, default=1.0, help="the guidance weight of the guided rows")
    p.add_argument("--intervals", default=INTERVALS, help="'all;lo,hi;...': every level, or lo < sigma / alpha <= hi")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="sampling seeds, comma-separated")
    p.add_argument("--quick", action="store_true", help="a check that it runs: one seed, 10 steps")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        intervals = _parse_intervals(args.intervals)
        seeds = [int(v) for v in args.seeds.split(",")]
    except ValueError as e:
        print(f"guidance_interval: error: {e}", file=sys.stderr)
        return 2
    if args.w <= 0:
        print(f"guidance_interval: error: --w must be positive, got {args.w:g}", file=sys.stderr)
        return 2
    steps = 10 if args.quick else 50
    if args.quick:
        seeds = seeds[:1]
    out = Path(args.out or ("results/guidance_interval_quick" if args.quick else "results/guidance_interval"))
    out.mkdir(parents=True, exist_ok=True)
    store = out / "guidance_interval.json"
    try:
        cache = json.loads(store.read_text())["figures"] if store.exists() else {}
    except (ValueError, KeyError) as e:
        print(f"guidance_interval: error: {store} is not this script's results ({e}); move it away", file=sys.stderr)
        return 2
    from scoresde.models.classifier import digit_classifier

    clf = digit_classifier()
    res = {"steps": steps, "seeds": seeds, "threads": torch.get_num_threads(), "runs": {}, "figures": cache}
    for name in ("digits", "digits-uncond") if args.only is None else (args.only,):
        run = Path(args.runs) / name
        if not (run / "ckpt.json").exists():
            print(f"guidance_interval: error: {run} holds no checkpoint (run benchmarks/learned.py)", file=sys.stderr)
            return 2
        prob = LearnedProblem(str(run))
        if not (prob.config.class_conditional or prob.config.clusters):
            print(f"guidance_interval: error: {run} was trained without labels or clusters", file=sys.stderr)
            return 2
        digest = json.loads((run / "ckpt.json").read_text())["sha256"]
        floor = None
        res["runs"][name] = rows = {}
        for w, interval in [(0.0, None)] + [(args.w, iv) for iv in intervals]:
            where = "all levels" if interval is None else f"({interval[0]:g}, {interval[1]:g}]"
            label = "none" if w == 0 else f"w={w:g}, {where}"
            figs = []
            for seed in seeds:
                key = f"{digest}|w={w!r}|interval={interval!r}|seed={seed}|steps={steps}|n={N}|dpm++2m"
                if key not in cache:
                    if floor is None:
                        floor = prob.floors(prob.sde, prob.sde.t_min, N, 3)["fd_floor"]
                    cache[key] = score_seed(run, prob, floor, clf, seed, steps, guidance=w, guidance_interval=interval)
                    res["load_average"] = [round(v, 2) for v in os.getloadavg()]
                    atomic_write_text(store, json.dumps(res, indent=1))
                figs.append(cache[key])
            rows[label] = {
                "fd_over_floor_seeds": [round(f["fd_over_floor"], 4) for f in figs],
                "evals": figs[0]["evals"],
            } | ({"accuracy": sum(f["accuracy"] for f in figs) / len(figs)} if "accuracy" in figs[0] else {})
            print(json.dumps({"run": name, label: rows[label]}), flush=True)
            atomic_write_text(store, json.dumps(res, indent=1))
    md = _markdown(res)
    atomic_write_text(out / "guidance_interval.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
