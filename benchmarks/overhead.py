"""Framework cost per model call: total time against time inside the model, at a fixed NFE.

A small time-conditioned MLP (2 -> 128 -> 128 -> 2, sinusoidal time embedding, random weights: only the
cost matters) drives every fixed-step sampler on a batch of 10,000 2-D points for 50 model calls. For each
sampler we report, as medians over repeats measured in one run:

- ``total / model``: wall time over time inside the model (1.00 = no framework cost);
- ``overhead per call``: (total - model) / NFE, in milliseconds.

The reference is torchdiffeq's ``euler`` called directly on the PF-ODE right-hand side, with nothing of
ours around it; installed peers (``scoresde[peers]``) run in the same process.

Usage: ``python benchmarks/overhead.py [--n 10000] [--nfe 50] [--repeats 5] [--out results]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torchdiffeq

import scoresde as sd
from scoresde import peers
from scoresde.bench import TimedModel
from scoresde.util import atomic_write_text


class TimeMLP(torch.nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 128, emb: int = 32):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1000.0) * torch.arange(emb // 2) / (emb // 2)))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + emb, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        )

    def forward(self, x, t):
        arg = 1000 * t[:, None] * self.freqs
        return self.net(torch.cat([x, arg.sin(), arg.cos()], dim=1))


def _raw_torchdiffeq_euler(model, sde, x, steps):
    grid = sd.time_grid(sde, steps)

    def rhs(t, y):
        tf = float(t)
        f, g, s = float(sde.drift_coef(tf)), float(sde.diffusion(tf)), float(sde.marginal_std(tf))
        return f * y + (g * g / (2 * s)) * model(y, t.to(y.dtype).expand(y.shape[0]))

    return torchdiffeq.odeint(rhs, x, grid, method="euler")[-1]


def measure(n: int = 10_000, nfe: int = 50, repeats: int = 5, seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)
    mlp = TimeMLP().eval()
    sde = sd.VPSDE()
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    runs = {}

    def ours(method):
        def run(timer):
            info = sd.method_info(method)
            out = sd.sample(
                sd.EpsilonScore(timer, sde), sde, (n, 2), method=method, steps=nfe // info["nfe_per_step"], seed=seed
            )
            return out.nfe

        return run

    def raw(timer):
        with torch.no_grad():
            _raw_torchdiffeq_euler(timer, sde, x0, nfe)
        return nfe

    runs["torchdiffeq euler (raw, reference)"] = raw
    for method in sd.available_methods():
        if not sd.method_info(method)["adaptive"]:
            runs[method] = ours(method)
    for name in [p for p in peers.available_peers() if peers.peer_path(p) == "vp"]:  # the VP path of this model

        def peer_run(timer, name=name):
            peer_sde = sd.VPSDE(T=peers.PEER_T)
            return peers.peer_sample(name, sd.EpsilonScore(timer, peer_sde), peer_sde, (n, 2), nfe=nfe, seed=seed).nfe

        runs[name] = peer_run

    results = {name: [] for name in runs}
    with torch.no_grad():
        for run in runs.values():  # warm-up
            run(TimedModel(mlp))
        for _ in range(repeats):  # interleaved, so drifts in machine load hit every method alike
            for name, run in runs.items():
                timer = TimedModel(mlp)
                t0 = time.perf_counter()
                calls = run(timer)
                total = time.perf_counter() - t0
                results[name].append((total, timer.seconds, calls))
    rows = []
    for name, rs in results.items():
        ratio = statistics.median(t / m for t, m, _ in rs)
        per_call = statistics.median((t - m) / c for t, m, c in rs)
        rows.append(
            {
                "method": name,
                "nfe": rs[0][2],
                "total_s": statistics.median(t for t, _, _ in rs),
                "model_s": statistics.median(m for _, m, _ in rs),
                "total_over_model": ratio,
                "overhead_ms_per_call": 1e3 * per_call,
            }
        )
    return rows


def to_markdown(rows: list[dict], n: int, nfe: int) -> str:
    lines = [
        f"Framework overhead, batch {n} x 2, MLP 2-128-128-2, NFE {nfe} (medians; one run)\n",
        "| method | NFE | total s | model s | total / model | overhead ms / call |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['nfe']} | {r['total_s']:.3f} | {r['model_s']:.3f} | {r['total_over_model']:.3f} | "
            f"{r['overhead_ms_per_call']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--nfe", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="results")
    args = p.parse_args()
    rows = measure(args.n, args.nfe, args.repeats)
    md = to_markdown(rows, args.n, args.nfe)
    print(md)
    atomic_write_text(f"{args.out}/overhead.md", md)
    atomic_write_text(f"{args.out}/overhead.json", json.dumps({"n": args.n, "nfe": args.nfe, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
