"""Pin every sampler's output to the last bit: ``python tests/golden/make_golden.py`` writes ``methods-<isa>.json``.

A guard rail for refactors of the solver core, not a correctness test (those check mathematics): the
recorded values are whatever the code gave when the file was written, so a change that alters them on
purpose rewrites the file in the same commit and says why. Each case runs in float64 on the CPU from a
fixed seed on a small exact mixture, in a fresh SDE and score object.

The last bits depend on the instruction set PyTorch's kernels and MKL use (``exp``, ``log`` and the matrix products
round differently with AVX2 and AVX-512), so there is one record per
``torch.backends.cpu.get_cpu_capability()``; a change that alters the outputs on purpose rewrites every record
it can (the other instruction set's by ``ATEN_CPU_CAPABILITY=avx2`` does not suffice: MKL picks its own path).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

import scoresde as sd

HERE = Path(__file__).parent


def record(capability: str | None = None) -> Path:
    """The record of an instruction set (default: this machine's)."""
    return HERE / f"methods-{(capability or torch.backends.cpu.get_cpu_capability()).lower()}.json"


RECORDS = sorted(HERE.glob("methods-*.json"))


def _problem(dim: int) -> sd.GaussianMixture:
    g = torch.Generator().manual_seed(dim)
    means = 2.0 * torch.randn(3, dim, generator=g, dtype=torch.float64)
    a = 0.3 * torch.randn(3, dim, dim, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) + 0.05 * torch.eye(dim, dtype=torch.float64)
    return sd.GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


SDES = {
    "vp": lambda: sd.VPSDE(),
    "cosine": lambda: sd.VPSDE(schedule="cosine"),
    "subvp": lambda: sd.SubVPSDE(),
    "ve": lambda: sd.VESDE(0.01, 20.0),
}


def cases() -> dict[str, dict]:
    """Case name -> keyword arguments of :func:`sd.sample` (plus ``sde``, ``dim``)."""
    out: dict[str, dict] = {}
    for m in sd.available_methods():
        if m == "sde-adaptive":
            out[m] = dict(method=m, rtol=1e-2, atol=1e-2)
        elif m.startswith("ode-") and sd.method_info(m)["adaptive"]:
            out[m] = dict(method=m, rtol=1e-4, atol=1e-4)
        else:
            out[m] = dict(method=m, steps=7, return_trajectory=True)
    extra = {
        "ddim-eta0.7": dict(method="ddim", eta=0.7, steps=6),
        "dpm++2m-nolof": dict(method="dpm++2m", steps=6, lower_order_final=False),
        "dpm++3m-20": dict(method="dpm++3m", steps=20),
        "unipc-bh1-o1": dict(method="unipc", order=1, variant="bh1", steps=6),
        "unipc-bh1-o3": dict(method="unipc", order=3, variant="bh1", steps=9),
        "unipc-optimized": dict(method="unipc", grid="optimized", steps=5),
        "dpm++2m-optimized": dict(method="dpm++2m", grid="optimized", steps=5),
        "pc-em-2": dict(method="pc", predictor="euler-maruyama", n_corrector=2, steps=5),
        "pc-ancestral": dict(method="pc", predictor="ancestral", steps=5),
        "pc-batch": dict(method="pc", step_size="batch", steps=5),
        "edm-churn-40": dict(method="edm-churn", S_churn=40.0, S_noise=1.003, steps=6),
        "edm-heun-nolast": dict(method="edm-heun", last_euler=False, steps=5),
        "ddpm-denoise": dict(method="ddpm", steps=6, denoise=True),
        "ddim-tmin": dict(method="ddim", steps=6, t_min=1e-2, T=0.9),
    }
    for grid in ("uniform", "quadratic", "logsnr", "karras"):
        extra[f"dpm++2m-{grid}"] = dict(method="dpm++2m", grid=grid, steps=6)
    for name in ("cosine", "subvp", "ve"):
        for m in ("ddim", "ddpm", "dpm++2m", "unipc", "edm-heun", "sde-euler", "ode-rk4", "dpm++2m-sde", "pc"):
            extra[f"{m}-{name}"] = dict(method=m, steps=6, sde=name)
    extra["ddim-3d"] = dict(method="ddim", steps=5, dim=3)
    extra["dpm3s-3d"] = dict(method="dpm3s", steps=4, dim=3)
    out.update(extra)
    return out


def run(case: dict) -> dict:
    case = dict(case)
    sde = SDES[case.pop("sde", "vp")]()
    dim = case.pop("dim", 2)
    score = _problem(dim).score(sde)
    res = sd.sample(score, sde, (6, dim), seed=0, dtype=torch.float64, **case)
    traj = None
    if res.trajectory is not None:
        traj = hashlib.sha256(res.trajectory.contiguous().numpy().tobytes()).hexdigest()
    return {
        "x": [v.hex() for v in res.x.flatten().tolist()],
        "nfe": res.nfe,
        "times": [v.hex() for v in res.times.tolist()],
        "trajectory_sha256": traj,
    }


def main() -> None:
    torch.set_num_threads(1)
    table = {name: run(case) for name, case in cases().items()}
    out = record()
    out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(table)} cases to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
