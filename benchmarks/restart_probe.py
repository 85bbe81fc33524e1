"""A probe for issue 34, part 4: does Restart sampling correct a trained 2-D network's error at 20 NFE?

    python benchmarks/restart_probe.py --checkpoint results/flow_vs_vp/runs/vp --n 50000 \\
        --runs "19:0:1:1:0.1:0.5,10:2:4:1:0.05:0.3,10:2:4:1:0.1:0.5"

Restart (Xu, Deng, Geffner et al. 2023, "Restart Sampling for Improving Generative Processes", algorithm 1) keeps
the deterministic sampler and adds exact forward noise: run the probability-flow ODE from ``T`` down to ``t_lo``;
then ``K`` times jump back up to ``t_hi`` by the forward process itself (``x <- (alpha_hi / alpha_lo) x + sqrt(
sigma_hi^2 - (alpha_hi sigma_lo / alpha_lo)^2) z``, exact for any ``alpha``, ``sigma``) and solve the ODE down to
``t_lo`` again; then on to ``t_min`` and the denoising step. The forward jump contracts the errors accumulated
below ``t_hi`` (the paper's theorem 2) while each pass of the ODE adds only its discretisation error.

Each run ``N1:K:N2:N3:LO:HI`` (the interval in ``sigma / alpha``) spends ``N1 + K N2 + N3 + 1`` model calls with
``dpm++2m`` on log-SNR grids: ``N1`` steps from ``T`` to ``t_lo``, ``N2`` per restart, ``N3`` from ``t_lo`` to
``t_min``, one denoising call. ``K = 0`` is plain ``dpm++2m`` with a grid point at ``t_lo``: compare restarts with
it at the same ``LO``, since where the last grid points fall moves the figure on a network as much as restarts do
(on the checkerboard's VP network, K = 0 gave 2.00x with ``LO`` = 0.1 and 1.26x with 0.05 at 21 NFE). Scored by
the histogram TV against a fresh exact set of the checkpoint's data over its floor (after the denoising step; the
bench's protocol, at ``t_min`` without it, is ``benchmarks/network_samplers.py``'s). A probe, not a sampler: the
interval is not chosen on a family of networks here (the note of the session that added it gives the figures, and
why this is not yet a method).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _toy import tv_floor  # benchmarks/_toy.py, beside this script

import scoresde as sd
from scoresde import metrics
from scoresde.train import load_score


def _t(sde, ratio: float) -> float:
    """The time at which ``sigma / alpha = ratio`` (``lambda = -2 log ratio``)."""
    return float(sde.t_from_log_snr(torch.tensor(-2.0 * math.log(ratio), dtype=torch.float64)))


def restart(score, sde, n: int, dim: int, n1: int, k: int, n2: int, n3: int, lo: float, hi: float, seed: int = 0):
    """One Restart run (see the module docstring); returns the samples and the model calls they took."""
    t_lo, t_hi = _t(sde, lo), _t(sde, hi)
    run = sd.sample(score, sde, (n, dim), method="dpm++2m", steps=n1, seed=seed, grid="logsnr", t_min=t_lo)
    x, nfe = run.x, run.nfe
    c_lo, c_hi = sde.coefs(t_lo), sde.coefs(t_hi)
    gain = c_hi.alpha / c_lo.alpha
    std = math.sqrt(max(c_hi.sigma**2 - (gain * c_lo.sigma) ** 2, 0.0))
    noise = sd.noise.NoiseSource(seed=10_000 + seed)  # per-sample streams: independent of the batch size
    for i in range(k):
        x = gain * x + std * noise.randn(x.shape, stream=i, dtype=x.dtype)
        run = sd.sample(score, sde, method="dpm++2m", steps=n2, grid="logsnr", T=t_hi, t_min=t_lo, x_init=x)
        x, nfe = run.x, nfe + run.nfe
    run = sd.sample(score, sde, method="dpm++2m", steps=n3, grid="logsnr", T=t_lo, x_init=x, denoise=True)
    return run.x, nfe + run.nfe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--runs", default="19:0:1:1:0.05:0.3,10:2:4:1:0.05:0.3")
    a = ap.parse_args(argv)
    score, sde, cfg, _ = load_score(a.checkpoint)
    ref = sd.data.toy_2d(cfg.data, a.n, seed=50_001)
    floor = tv_floor(cfg.data, a.n, 3, first_seed=50_003)[0]
    for spec in a.runs.split(","):
        n1, k, n2, n3 = (int(v) for v in spec.split(":")[:4])
        lo, hi = (float(v) for v in spec.split(":")[4:])
        t0 = time.perf_counter()
        x, nfe = restart(score, sde, a.n, 2, n1, k, n2, n3, lo, hi)
        tv = metrics.histogram_tv(x, ref)
        print(f"{spec:24s} {nfe:3d} NFE: TV / floor {tv / floor:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
