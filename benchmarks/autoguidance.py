"""Autoguidance on the learned digits models: each guided by a weaker version of itself (Karras et al. 2024).

    python benchmarks/autoguidance.py --runs results/learned/runs   # after benchmarks/learned.py --only digits
    python benchmarks/autoguidance.py --runs results/learned_quick/runs --quick

For each digits model of ``benchmarks/learned.py`` (``digits``: class-conditional, labels cycling through the
classes; ``digits-uncond``: cluster-conditional, each sample's cluster drawn with the sampling seed) a guide is
trained from the model's own config with a narrower U-Net (``--guide-width``) for a fraction of its steps
(``--guide-steps``), with the same seed, so a cluster model's guide gets the same k-means labels. Each row samples
``(1 + w) model - w guide`` (``sd.load_score(..., guide=)``) with ``dpm++2m`` at 50 steps (twice the network calls of
w = 0: one of each network a step) and gives FD / floor (and class accuracy) as the mean and spread over the
sampling seeds, as ``benchmarks/learned.py`` scores them. The guides are kept under ``<out>/guides`` and resumed;
``<out>/autoguidance.json`` and ``.md`` are written atomically (default ``results/autoguidance``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _digits import N, score_seed  # benchmarks/_digits.py, beside this script

from scoresde.bench import LearnedProblem
from scoresde.train import TrainConfig, train
from scoresde.util import atomic_write_text

SEEDS = (0, 1, 2)


def _guide(run: Path, out: Path, width: int, steps: int) -> tuple[Path, dict]:
    """Train (or resume) the guide of ``run``: its config with base width ``width`` and ``steps`` steps."""
    cfg = TrainConfig.from_saved(run / "config.json").to_dict()
    cfg["model"] = {**cfg["model"], "base_channels": width}
    where = out / "guides" / run.name
    guide = TrainConfig.from_dict({**cfg, "steps": steps, "out": str(where), "plots": False})
    t0 = time.perf_counter()
    res = train(guide, resume=(where / "ckpt.json").exists(), progress=False)
    info = {"width": width, "steps": res.step, "parameters": res.num_parameters, "steps_this_run": res.steps_run}
    if res.steps_run:
        info |= {"train_seconds": round(res.seconds, 1), "wall_seconds": round(time.perf_counter() - t0, 1)}
    return where, info


def _score(run: Path, guide: Path, weights: list[float], seeds: tuple[int, ...], steps: int) -> dict:
    from scoresde.models.classifier import digit_classifier

    prob = LearnedProblem(str(run))
    floor = prob.floors(prob.sde, prob.sde.t_min, N, 3)["fd_floor"]
    clf = digit_classifier()
    rows = {}
    for w in weights:
        figs = [
            score_seed(run, prob, floor, clf, seed, steps, guidance=w, guide=guide if w else None) for seed in seeds
        ]
        fd = torch.tensor([f["fd_over_floor"] for f in figs], dtype=torch.float64)
        row = {
            "fd_over_floor": float(fd.mean()),
            "fd_over_floor_std": float(fd.std()) if len(figs) > 1 else 0.0,
            "fd_over_floor_seeds": [round(float(v), 4) for v in fd],
            "nfe": figs[-1]["nfe"],
        }
        accs = [f["accuracy"] for f in figs if "accuracy" in f]
        rows[f"w={w:g}"] = row | ({"accuracy": sum(accs) / len(accs)} if accs else {})
        print(json.dumps({"run": run.name, f"w={w:g}": rows[f"w={w:g}"]}), flush=True)
    return rows


def _markdown(res: dict) -> str:
    lines = ["# Autoguidance on the learned digits models\n", f"sampling seeds {res['seeds']}, dpm++2m\n"]
    for name, r in res["runs"].items():
        g = r["guide"]
        lines += [f"## {name}: guided by width {g['width']}, {g['steps']} steps ({g['parameters']:,} parameters)\n"]
        lines += ["| w | NFE | FD / floor | per seed | class accuracy |", "|---|---:|---:|---|---:|"]
        for w, q in r["rows"].items():
            acc = f"{q['accuracy']:.3f}" if "accuracy" in q else "-"
            per = ", ".join(f"{v:.2f}" for v in q["fd_over_floor_seeds"])
            lines.append(
                f"| {w} | {q['nfe']} | {q['fd_over_floor']:.2f} +- {q['fd_over_floor_std']:.2f} | {per} | {acc} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="results/learned/runs", help="benchmarks/learned.py's runs folder")
    p.add_argument("--only", choices=("digits", "digits-uncond"))
    p.add_argument("--guide-width", type=int, default=32)
    p.add_argument("--guide-steps", type=int, default=1000)
    p.add_argument("--weights", default="0,1,2", help="guidance weights, comma-separated")
    p.add_argument("--quick", action="store_true", help="a check that it runs: 20 guide steps, one seed, 10 steps")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or ("results/autoguidance_quick" if args.quick else "results/autoguidance"))
    weights = [float(v) for v in args.weights.split(",")]
    seeds, steps = (SEEDS[:1], 10) if args.quick else (SEEDS, 50)
    res = {"seeds": list(seeds), "threads": torch.get_num_threads(), "runs": {}}
    for name in ("digits", "digits-uncond") if args.only is None else (args.only,):
        run = Path(args.runs) / name
        if not (run / "ckpt.json").exists():
            print(f"autoguidance: error: {run} holds no checkpoint (run benchmarks/learned.py first)", file=sys.stderr)
            return 2
        guide, info = _guide(run, out, args.guide_width, 20 if args.quick else args.guide_steps)
        res["runs"][name] = {"guide": info, "rows": _score(run, guide, weights, seeds, steps)}
    res["load_average"] = [round(v, 2) for v in os.getloadavg()]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "autoguidance.json", json.dumps(res, indent=1))
    md = _markdown(res)
    atomic_write_text(out / "autoguidance.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
