"""Test bits/dim on the 8x8 digits: the diffusion model through its probability-flow ODE beside a VAE's bounds.

    python benchmarks/digits_likelihood.py            # after `python benchmarks/learned.py --only digits`
    python benchmarks/digits_likelihood.py --quick    # toy sizes, minutes

Both models see the same data (the train split, 17 pixel levels scaled to [-1, 1]) and the same budget (the
diffusion run's number of optimiser steps and batch size; wall times are reported too). Both are continuous
densities evaluated on uniformly dequantised test digits, ``y = x + Delta (u - 1/2)`` with ``Delta = 1/8``,
so each number is a bound on the discrete log-likelihood, in bits per dimension of the discrete data
(``d log Delta`` included; see :mod:`scoresde.likelihood`):

- diffusion: ``log p_{t_min}(y)`` by the instantaneous change of variables (dopri5, rtol = atol = 1e-5),
  Hutchinson trace with one Rademacher probe per image (its standard error is reported; an exact-trace run
  on a subset checks it); the unconditional density of a class-conditional model is its null class;
- VAE: the ELBO and the importance-weighted bound with K = 1000 (Burda et al. 2016), both lower bounds.

Writes ``<out>/digits_likelihood.json`` and ``.md`` (default ``results/learned``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.data import digits
from scoresde.models.vae import VAE
from scoresde.train import load_score
from scoresde.util import atomic_write_text

DELTA = 1 / 8  # 17 levels over [-1, 1]
D = 64


def _bpd(nats: torch.Tensor) -> torch.Tensor:
    """Bits per dimension of the discrete data from a continuous log-density of dequantised data."""
    return -(nats + D * math.log(DELTA)) / (D * math.log(2))


def _dequantise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x + DELTA * (torch.rand(x.shape, generator=g, dtype=x.dtype) - 0.5)


def train_vae(steps: int, batch_size: int, seed: int = 0) -> tuple[VAE, dict]:
    x_train, _ = digits("train")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vae = VAE(latent=16, width=64)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, x_train.shape[0], (batch_size,), generator=g)
        loss = -vae.elbo(_dequantise(x_train[idx], g), g).mean() / D
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
    secs = time.perf_counter() - t0
    vae.eval()
    return vae, {
        "steps": steps,
        "batch_size": batch_size,
        "seconds": round(secs, 1),
        "examples_per_s": round(steps * batch_size / secs, 1),
        "parameters": sum(p.numel() for p in vae.parameters()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    p.add_argument("--checkpoint", help="digits diffusion checkpoint (default <out>/runs/digits)")
    args = p.parse_args(argv)
    out = Path(args.out or ("results/learned_quick" if args.quick else "results/learned"))
    ckpt = Path(args.checkpoint or out / "runs" / "digits")
    score, sde, cfg, _ = load_score(ckpt)
    x_test, _ = digits("test")
    n = 40 if args.quick else x_test.shape[0]
    x_test = x_test[:n].double()
    res = {"n_test": n, "diffusion_checkpoint": str(ckpt), "diffusion_train_steps": cfg.steps}

    # --- diffusion, PF-ODE ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    score64 = type(score)(lambda x, t: score.model(x.float(), t.float()).double(), sde)
    lik = sd.log_likelihood(score64, sde, x_test, trace="hutchinson", n_probes=1, bins=17, seed=0)
    bpd = lik.bits_per_dim
    res["diffusion"] = {
        "bits_per_dim": float(bpd.mean()),
        "std_err": float(bpd.std() / math.sqrt(n)),
        "nfe": lik.nfe,
        "seconds": round(time.perf_counter() - t0, 1),
        "t_min": sde.t_min,
    }
    m = 4 if args.quick else 8  # exact trace on a subset (64 VJPs per call): checks the Hutchinson figure
    t0 = time.perf_counter()
    exact = sd.log_likelihood(score64, sde, x_test[:m], trace="exact", bins=17, seed=0).bits_per_dim
    res["diffusion_exact_subset"] = {
        "n": m,
        "bits_per_dim": float(exact.mean()),
        "hutchinson_same_images": float(bpd[:m].mean()),
        "seconds": round(time.perf_counter() - t0, 1),
    }

    # --- VAE, same data and budget -------------------------------------------------------------------------
    vae, info = train_vae(cfg.steps, cfg.batch_size)
    vae = vae.double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        y = _dequantise(x_test, g)
        elbo = _bpd(torch.stack([vae.elbo(y, g) for _ in range(10)]).mean(0))
        k = 100 if args.quick else 1000
        iwae = _bpd(torch.cat([vae.iwae(y[i : i + 40], k, g) for i in range(0, n, 40)]))
    res["vae"] = {
        **info,
        "elbo_bits_per_dim": float(elbo.mean()),
        "elbo_std_err": float(elbo.std() / math.sqrt(n)),
        f"iwae{k}_bits_per_dim": float(iwae.mean()),
        "iwae_std_err": float(iwae.std() / math.sqrt(n)),
    }
    d, v = res["diffusion"], res["vae"]
    md = "\n".join(
        [
            f"# Digits test bits/dim (n = {n}, 17 levels, uniform dequantisation; lower is better)\n",
            "| model | bits/dim | +- s.e. | what it is | cost |",
            "|---|---:|---:|---|---|",
            f"| diffusion, PF-ODE | {d['bits_per_dim']:.3f} | {d['std_err']:.3f} | log p_t_min, Hutchinson (1 probe) "
            f"| {d['nfe']} NFE, {d['seconds']} s |",
            f"| diffusion, PF-ODE, exact trace ({m} images) | {res['diffusion_exact_subset']['bits_per_dim']:.3f} | "
            f"| Hutchinson on the same: {res['diffusion_exact_subset']['hutchinson_same_images']:.3f} | |",
            f"| VAE, ELBO | {v['elbo_bits_per_dim']:.3f} | {v['elbo_std_err']:.3f} | lower bound | "
            f"{v['steps']} steps x {v['batch_size']}, {v['seconds']} s |",
            f"| VAE, IWAE K={k} | {v[f'iwae{k}_bits_per_dim']:.3f} | {v['iwae_std_err']:.3f} | tighter lower bound | |",
            "",
        ]
    )
    atomic_write_text(out / "digits_likelihood.json", json.dumps(res, indent=1))
    atomic_write_text(out / "digits_likelihood.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
