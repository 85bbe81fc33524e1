"""The 2-D recipe end to end through the command line, as a new user runs it (issue 32's acceptance):

    scoresde train --data checkerboard --out DIR/run
    scoresde sample --checkpoint DIR/run --n 100000 --steps 50 --save .npz --out DIR/samples

then the histogram TV of the samples (48 x 48 bins on [-2.6, 2.6]^2, ``sd.metrics.histogram_tv``) against a fresh
exact set, over its floor (the mean TV between three pairs of fresh exact sets of the same size).

    python benchmarks/recipe_e2e.py --out results/recipe_e2e [--data checkerboard]

Writes ``DIR/recipe_e2e.json`` (atomically) with the figure, the wall times and the load average; a rerun reuses
the trained run only if its config is the recipe's (``scoresde train`` refuses to overwrite otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _toy import tv_floor  # benchmarks/_toy.py, beside this script

import scoresde as sd
from scoresde.util import atomic_write_text


def _run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/recipe_e2e")
    ap.add_argument("--data", default="checkerboard", choices=sd.data.TOY_SETS)
    ap.add_argument("--n", type=int, default=100_000)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "scoresde"]
    load0 = os.getloadavg()
    train_s = 0.0
    if not (out / "run" / "ckpt.json").exists():
        train_s = _run([*exe, "train", "--data", a.data, "--out", str(out / "run"), "--no-progress"])
    samples = out / "samples.npz"
    sample_s = 0.0
    if not samples.exists():
        cmd = [*exe, "sample", "--checkpoint", str(out / "run"), "--n", str(a.n), "--steps", "50"]
        sample_s = _run([*cmd, "--save", ".npz", "--out", str(out / "samples"), "--no-progress"])
    x = torch.from_numpy(np.load(samples)["x"])
    tv = sd.metrics.histogram_tv(x, sd.data.toy_2d(a.data, a.n, seed=50_001))
    floor = tv_floor(a.data, a.n, 3, first_seed=50_003)[0]
    res = {
        "data": a.data,
        "n": a.n,
        "histogram_tv": tv,
        "floor": floor,
        "ratio": tv / floor,
        "train_seconds": round(train_s, 1),
        "sample_seconds": round(sample_s, 1),
        "load_average_before": [round(v, 2) for v in load0],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    atomic_write_text(out / "recipe_e2e.json", json.dumps(res, indent=1) + "\n")
    print(f"{a.data}: histogram TV {tv:.4f} = {tv / floor:.2f}x its floor {floor:.4f} "
          f"(train {train_s:.0f} s, sample {sample_s:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
