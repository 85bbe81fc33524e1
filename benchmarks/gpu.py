"""Sampling throughput on a GPU (or the CPU): our solvers against diffusers' scheduler loop on the same U-Net.

One diffusers ``UNet2DModel`` of realistic size (random weights: only the cost matters) with its DDPM training
chain, sampled for ``--steps`` steps by

- ours: ``sd.sample(sd.from_diffusers(unet, scheduler), ...)`` with ``ddim``, ``dpm++2m`` and ``unipc``, with the
  default NaN test after every step (one host synchronisation per step) and with ``check="end"`` (none);
- diffusers: the usual loop ``for t in scheduler.timesteps: x = scheduler.step(unet(x, t).sample, t, x)`` with
  ``DDIMScheduler``, ``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler``,

in float32 and in bfloat16 (float32 state, the network under ``torch.autocast``), as medians over ``--repeats``
runs measured in one process. Per row: samples/s, the time inside the network over the total (1.00 = no framework
cost), and the host synchronisations per step (counted by :class:`scoresde.diagnostics.HostSyncs`, the same count
on the CPU as on a GPU). Under ``torchrun --nproc_per_node N benchmarks/gpu.py`` (nccl on CUDA, gloo on the CPU)
it adds ``sd.sample_distributed``'s throughput over the N processes.

    python benchmarks/gpu.py                        # CUDA if available, else the CPU
    python benchmarks/gpu.py --size small --batch 4 --steps 3 --repeats 1   # what the suite runs on the CPU
    torchrun --nproc_per_node 2 benchmarks/gpu.py --methods dpm++2m

Writes ``<out>/gpu.json`` and ``gpu.md`` (atomically) naming the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.diagnostics import HostSyncs
from scoresde.precision import network_precision
from scoresde.process_group import launched, world
from scoresde.util import atomic_write_text

# diffusers' scheduler class for each of our methods (the same algorithm: tests/test_interop.py replays them)
PEERS = {"ddim": "DDIMScheduler", "dpm++2m": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler"}
# "realistic": a DDPM-CIFAR-sized U-Net (35.7M parameters at 32x32); "small": a test-sized one
SIZES = {
    "realistic": dict(sample_size=32, block_out_channels=(128, 256, 256, 256), layers_per_block=2),
    "small": dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
}


def make_unet(size: str, device: str):
    from diffusers import UNet2DModel

    kw = dict(SIZES[size])
    n_blocks = len(kw["block_out_channels"])
    torch.manual_seed(0)
    unet = UNet2DModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D",) * (n_blocks - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n_blocks - 1),
        **kw,
    )
    return unet.to(device).eval()


class Timed(torch.nn.Module):
    """The network with the time spent inside it (synchronised on CUDA, so it is the device's time)."""

    def __init__(self, net, device: str):
        super().__init__()
        self.net, self.cuda, self.seconds = net, device.startswith("cuda"), 0.0

    def forward(self, x, t):
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.net(x, t)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours(unet, method: str, steps: int, batch: int, dtype: str, device: str, check: str = "step"):
    """One run of ``sd.sample``: (samples, total s, model s)."""
    from diffusers import DDPMScheduler

    timed = Timed(unet, device)
    score = sd.from_diffusers(timed, DDPMScheduler(clip_sample=False))
    shape = (batch, 3, unet.config.sample_size, unet.config.sample_size)
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), network_precision(dtype, device):
        out = sd.sample(score, shape=shape, method=method, steps=steps, seed=0, device=device, check=check)
    _sync(device)
    return out.x, time.perf_counter() - t0, timed.seconds


def ours_unchecked(unet, method: str, steps: int, batch: int, dtype: str, device: str):
    """:func:`ours` with ``check="end"``: no NaN test per step, so no host synchronisation inside the loop."""
    return ours(unet, method, steps, batch, dtype, device, check="end")


def peer(unet, method: str, steps: int, batch: int, dtype: str, device: str):
    """One run of diffusers' loop with the scheduler of ``method``: (samples, total s, model s)."""
    import diffusers

    timed = Timed(unet, device)
    cls = getattr(diffusers, PEERS[method])
    scheduler = cls(clip_sample=False) if "clip_sample" in cls().config else cls()  # the same chain, unclipped
    scheduler.set_timesteps(steps, device=device)
    size = unet.config.sample_size
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g, device=device) * scheduler.init_noise_sigma
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), network_precision(dtype, device):
        for t in scheduler.timesteps:
            eps = timed(scheduler.scale_model_input(x, t), t).sample.float()
            x = scheduler.step(eps, t, x).prev_sample
    _sync(device)
    return x, time.perf_counter() - t0, timed.seconds


def host_syncs(run, unet, method, steps, dtype, device) -> float:
    """Host reads of state-derived values per step in one small run (2 samples)."""
    with HostSyncs() as counter:
        run(unet, method, steps, 2, dtype, device)
    return counter.count / steps


def measure(args) -> tuple[list[dict], int]:
    """The rows of every dtype x method x sampler, and the U-Net's parameter count."""
    unet = make_unet(args.size, args.device)
    rows = []
    for dtype in args.dtypes:
        for method in args.methods:
            for who, run in (("scoresde", ours), ("scoresde, check=end", ours_unchecked), ("diffusers", peer)):
                run(unet, method, args.steps, args.batch, dtype, args.device)  # warm-up (kernels, caches)
                times = [run(unet, method, args.steps, args.batch, dtype, args.device)[1:] for _ in range(args.repeats)]
                total = statistics.median(t for t, _ in times)
                model = statistics.median(m for _, m in times)
                rows.append(
                    dict(
                        who=who,
                        method=PEERS[method] if who == "diffusers" else method,
                        dtype=dtype,
                        steps=args.steps,
                        batch=args.batch,
                        samples_per_s=args.batch / total,
                        total_over_model=total / model,
                        host_syncs_per_step=host_syncs(run, unet, method, args.steps, dtype, args.device),
                    )
                )
                print(_line(rows[-1]), flush=True)
    return rows, sum(p.numel() for p in unet.parameters())


def distributed(args) -> dict | None:
    """``sd.sample_distributed`` over the torchrun processes: samples/s of the whole group (rank 0 reports)."""
    rank, size = world()
    if size < 2:
        return None
    from diffusers import DDPMScheduler

    device = f"cuda:{os.environ.get('LOCAL_RANK', rank)}" if args.device.startswith("cuda") else args.device
    score = sd.from_diffusers(make_unet(args.size, device), DDPMScheduler(clip_sample=False))
    s = SIZES[args.size]["sample_size"]
    n = args.batch * size
    for _ in range(2):  # the first warms up
        torch.distributed.barrier()
        t0 = time.perf_counter()
        with torch.no_grad():
            sd.sample_distributed(
                score, shape=(n, 3, s, s), seed=0, method=args.methods[0], steps=args.steps, device=device
            )
        _sync(device)
        torch.distributed.barrier()
        seconds = time.perf_counter() - t0
    backend = torch.distributed.get_backend()
    return dict(processes=size, backend=backend, method=args.methods[0], n=n, samples_per_s=n / seconds)


def _line(r: dict) -> str:
    return (
        f"{r['who']:19s} {r['method']:28s} {r['dtype']:8s} {r['samples_per_s']:9.2f} samples/s  "
        f"total/model {r['total_over_model']:.3f}  host syncs/step {r['host_syncs_per_step']:.2f}"
    )


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def markdown(res: dict) -> str:
    lines = [
        f"Device: {res['device_name']}; torch {res['torch']}; U-Net {res['size']} ({res['parameters']:,} parameters), "
        f"batch {res['batch']}, {res['steps']} steps, median of {res['repeats']} (`python benchmarks/gpu.py`)\n",
        "| sampler | dtype | samples/s | ours / diffusers | total / model | host syncs per step |",
        "|---|---|---:|---:|---:|---:|",
    ]
    by = {(r["who"], r["dtype"], r["method"]): r for r in res["rows"]}
    for r in res["rows"]:
        peer_row = by.get(("diffusers", r["dtype"], PEERS.get(r["method"], "")))
        ratio = f"{r['samples_per_s'] / peer_row['samples_per_s']:.2f}" if peer_row else ""
        name = f"`{r['method']}`" + ("" if r["who"] == "scoresde" else f" ({r['who']})")
        lines.append(
            f"| {name} | {r['dtype']} | {r['samples_per_s']:.2f} | {ratio} | {r['total_over_model']:.3f} | "
            f"{r['host_syncs_per_step']:.2f} |"
        )
    d = res.get("distributed")
    if d:
        lines.append(
            f"\n`sd.sample_distributed` on {d['processes']} processes ({d['backend']}): {d['samples_per_s']:.2f} "
            f"samples/s ({d['method']}, n = {d['n']})"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", choices=tuple(SIZES), default="realistic")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", type=lambda s: s.split(","), default=list(PEERS))
    ap.add_argument("--dtypes", type=lambda s: s.split(","), default=["float32", "bfloat16"])
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    unknown = [m for m in args.methods if m not in PEERS]
    if unknown:
        ap.error(f"--methods: {', '.join(unknown)} have no diffusers counterpart here; choose from {', '.join(PEERS)}")
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    with launched(backend):
        rank, _ = world()
        rows, parameters = measure(args) if rank == 0 else ([], 0)
        dist = distributed(args)
    if rank != 0:
        return 0
    res = dict(
        device=args.device,
        device_name=_device_name(args.device),
        torch=torch.__version__,
        size=args.size,
        parameters=parameters,
        batch=args.batch,
        steps=args.steps,
        repeats=args.repeats,
        rows=rows,
        distributed=dist,
    )
    out = Path(args.out)
    atomic_write_text(out / "gpu.json", json.dumps(res, indent=1) + "\n")
    atomic_write_text(out / "gpu.md", markdown(res))
    print(markdown(res), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
