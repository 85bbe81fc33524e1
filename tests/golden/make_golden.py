"""Pin every sampler's output: ``python tests/golden/make_golden.py`` (``make golden``) records this machine.

A guard rail for refactors of the solver core, not a correctness test (those check mathematics): the
recorded values are whatever the code gave when the record was written. Each case runs in float64 on the CPU,
one thread, from a fixed seed on a small exact mixture, in a fresh SDE and score object.

The last bits are not a property of the code alone: PyTorch's vectorised ``exp``/``log`` differ between
instruction sets, and MKL and oneDNN choose their kernels (and so the order of a matrix product's sums) by CPU
vendor, model and cache sizes, not by the capability string PyTorch reports. So a record carries the
fingerprint of the machine that wrote it (:func:`machine`), and ``tests/test_golden.py`` holds:

- a machine whose fingerprint equals a record's to that record, bit for bit (values, times, NFE, trajectory);
- every machine to every record within :data:`TOLERANCE`, which is the largest difference measured between
  machines and instruction sets (:data:`MEASURED_SPREAD`) times a margin; machines on PyTorch's scalar kernels,
  whose normals differ in float32's last bits, within :data:`SCALAR_TOLERANCE`. A new machine needs no record.

A change that alters outputs on purpose rewrites this machine's record in the same commit (the command above)
and names the change in its message; records of other machines that then disagree beyond the tolerance were
made stale by the change, and ``--prune`` deletes them (they are listed either way).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
from pathlib import Path

import torch

import scoresde as sd

HERE = Path(__file__).parent
RECORDS_DIR = HERE / "records"

# The largest |difference| / (1 + |value|) measured between configurations on any case's samples or times
# (``python tests/golden/spread.py``): records of an Intel Xeon (AVX-512) and an AVX2 machine, and one AMD EPYC
# (family 25, model 17) run natively (AVX-512), with PyTorch's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2) and with
# MKL's AVX2 path (MKL_ENABLE_INSTRUCTIONS=AVX2). The largest, 1.01e-13, is on unipc-optimized (a grid fitted
# by a pilot); the plain fixed-grid cases differ by at most 4.1e-16.
MEASURED_SPREAD = 1.01e-13
# A margin of 20 over it. A change of a method's arithmetic moves outputs by more: a coefficient changed in its
# 10th significant digit by 1e-11 to 1e-10 (the demonstration is in the commit that set this).
TOLERANCE = 2e-12
# PyTorch's scalar kernels (ATEN_CPU_CAPABILITY=default, and CPUs without AVX2, e.g. ARM) draw float32 normals
# with another Box-Muller code than the AVX2/AVX-512 one, so the noise itself differs in its last float32 bits
# and outputs move by up to 8.9e-7 (ddpm-subvp). There the records can only be held to 20x that: it still
# catches a wrong formula or a changed draw, not a change in the last digits.
SCALAR_SPREAD = 8.9e-7
SCALAR_TOLERANCE = 20 * SCALAR_SPREAD
VECTOR_CAPABILITIES = ("AVX2", "AVX512")


def tolerance() -> float:
    """The tolerance this machine is held to against records of other machines."""
    return TOLERANCE if torch.backends.cpu.get_cpu_capability() in VECTOR_CAPABILITIES else SCALAR_TOLERANCE


_CPU_KEYS = ("vendor_id", "cpu family", "model", "model name", "stepping", "cache size", "flags")
_ENV_KEYS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "DNNL_MAX_CPU_ISA")


def _cpuinfo() -> dict[str, str]:
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:  # not Linux: what the platform module knows
        return {"processor": platform.processor() or platform.machine()}
    info = {}
    for line in first.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in _CPU_KEYS:
            info[key.strip()] = value.strip()
    if "flags" in info:  # the instruction sets the kernels may use, hashed (the list is long)
        info["flags"] = hashlib.sha256(" ".join(sorted(info["flags"].split())).encode()).hexdigest()[:16]
    return info


def _library_versions() -> dict[str, str]:
    config = torch.__config__.show()
    found = {}
    for name, pattern in (("mkl", r"Math Kernel Library Version ([\w.]+)"), ("onednn", r"oneDNN v([\w.]+)")):
        m = re.search(pattern, config)
        found[name] = m.group(1) if m else "none"
    return found


def machine() -> dict[str, str]:
    """What decides the last bits of a float64 run on the CPU: the CPU (vendor, family, model, stepping, cache,
    instruction-set flags), the capability PyTorch dispatches to, the versions of PyTorch, MKL, oneDNN and the C
    library, and the environment variables that steer their kernel choice."""
    info = {f"cpu {k}": v for k, v in _cpuinfo().items()}
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["torch"] = torch.__version__
    info.update(_library_versions())
    info["libc"] = " ".join(platform.libc_ver())
    info["machine"] = platform.machine()
    for key in _ENV_KEYS:
        if os.environ.get(key):
            info[f"env {key}"] = os.environ[key]
    return info


def machine_id(info: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12]


def record_path(info: dict[str, str] | None = None) -> Path:
    """Where this machine's record lives (``records/<capability>-<fingerprint hash>.json``)."""
    info = machine() if info is None else info
    return RECORDS_DIR / f"{info['cpu_capability'].lower()}-{machine_id(info)}.json"


def load_records() -> dict[str, dict]:
    """Record name -> ``{"machine": fingerprint, "cases": {case: result}}``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(RECORDS_DIR.glob("*.json"))}


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


# The grid each method took by default when the records were written. A case that names no grid runs on this one,
# so a later change of a method's ``default_grid`` (chosen on families of mixtures: benchmarks/default_grids.py)
# leaves the records valid; the default itself is pinned by tests/test_grids.py.
RECORDED_GRIDS = {
    "dpm++2m": "logsnr",
    "dpm++3m": "logsnr",
    "dpm++2m-sde": "logsnr",
    "unipc": "logsnr",
    "dpm2s": "logsnr",
    "dpm3s": "logsnr",
}


def cases() -> dict[str, dict]:
    """Case name -> keyword arguments of :func:`sd.sample` (plus ``sde``, ``dim``); a case of a method in
    :data:`RECORDED_GRIDS` without a grid of its own runs on the grid recorded for it."""
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
    for case in out.values():
        if "grid" not in case and case["method"] in RECORDED_GRIDS:
            case["grid"] = RECORDED_GRIDS[case["method"]]
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


def values(hexes: list[str]) -> torch.Tensor:
    return torch.tensor([float.fromhex(v) for v in hexes], dtype=torch.float64)


def spread(got: dict, want: dict) -> float:
    """The largest ``|got - want| / (1 + |want|)`` over a case's samples and times (inf if NFE or shapes differ)."""
    if got["nfe"] != want["nfe"] or len(got["x"]) != len(want["x"]) or len(got["times"]) != len(want["times"]):
        return float("inf")
    worst = 0.0
    for key in ("x", "times"):
        a, b = values(got[key]), values(want[key])
        worst = max(worst, float(((a - b).abs() / (1 + b.abs())).max()))
    return worst


def run_all() -> dict[str, dict]:
    torch.set_num_threads(1)  # intra-op threads could change the order of reductions
    return {name: run(case) for name, case in cases().items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prune", action="store_true", help="delete other machines' records made stale")
    args = parser.parse_args(argv)
    info = machine()
    table = run_all()
    out = record_path(info)
    RECORDS_DIR.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"machine": info, "cases": table}, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    print(f"wrote {len(table)} cases to {out.relative_to(HERE.parent.parent)}", file=sys.stderr)
    for name, rec in load_records().items():
        if name == out.stem:
            continue
        worst = max(spread(table[c], rec["cases"][c]) if c in rec["cases"] else float("inf") for c in table)
        if worst > tolerance():
            verdict = "deleted" if args.prune else "stale (--prune deletes it)"
            print(f"{name}: differs by {worst:.3g} > {tolerance():.3g}: {verdict}", file=sys.stderr)
            if args.prune:
                (RECORDS_DIR / f"{name}.json").unlink()
        else:
            print(f"{name}: agrees within {worst:.3g} <= {tolerance():.3g}", file=sys.stderr)


if __name__ == "__main__":
    main()
