"""Deterministic against stochastic samplers on a trained 2-D network's score, at a fixed NFE.

    python benchmarks/network_samplers.py --checkpoint runs/cb --n 100000 \\
        --runs "dpm++2m:21,dpm++2m-sde:21,ddpm:21,edm-churn:21,sde-heun:21,dpm++2m:51,dpm++2m-sde:51"

Each ``method:NFE`` samples ``n`` points with ``steps = (NFE - 1) // nfe_per_step`` and the final denoising step
(one call), then scores the histogram TV (48 x 48 bins on [-2.6, 2.6]^2) against a fresh exact set of the
checkpoint's data, over its floor (the mean TV of three pairs of fresh exact sets). Writes
``<out>/network_samplers.json`` atomically, one row per run, keyed by checkpoint, n, method and NFE (a rerun keeps
the rows it has).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _toy import tv_floor  # benchmarks/_toy.py, beside this script

import scoresde as sd
from scoresde import metrics
from scoresde.train import load_score
from scoresde.util import atomic_write_text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", default="dpm++2m:21,dpm++2m-sde:21,dpm++2m:51,dpm++2m-sde:51")
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    score, sde, cfg, _ = load_score(a.checkpoint)
    ref = sd.data.toy_2d(cfg.data, a.n, seed=50_001)
    floor = tv_floor(cfg.data, a.n, 3, first_seed=50_003)[0]
    path = Path(a.out) / "network_samplers.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    for spec in a.runs.split(","):
        method, nfe = spec.split(":")
        key = f"{Path(a.checkpoint).resolve()}|{a.n}|{method}|{nfe}"
        if key in rows:
            continue
        steps = (int(nfe) - 1) // sd.method_info(method)["nfe_per_step"]
        t0 = time.perf_counter()
        out = sd.sample(score, sde, (a.n, 2), method=method, steps=steps, seed=0, denoise=True)
        tv = metrics.histogram_tv(out.x, ref)
        rows[key] = dict(method=method, steps=steps, nfe=out.nfe, tv=tv, floor=floor, ratio=tv / floor,
                         seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
        print(f"{method:12s} {out.nfe:3d} NFE: TV {tv:.4f} = {tv / floor:.2f}x its floor {floor:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
