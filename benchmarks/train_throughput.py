"""Training throughput of the learned-scores recipes: examples/s per thread count and ``--dtype``.

    python benchmarks/train_throughput.py                  # 60 steps per variant, both recipes
    python benchmarks/train_throughput.py --only digits --steps 100
    python benchmarks/train_throughput.py --quick          # seconds: 3 steps, to check that it runs

Each variant (recipe x threads x dtype) is trained in a fresh subprocess, one at a time, from the recipes of
``benchmarks/learned.py`` (the same network, batch and loss); the first ``warm`` steps are not timed. Absolute
figures depend on the machine and on what else runs on it, so the table gives the load average before each
variant and the ratios to the one-thread float32 run measured in the same invocation. Writes
``<out>/train_throughput.json`` and ``.md`` atomically (default ``results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learned import FULL  # noqa: E402  (the recipes measured are the learned-scores benchmark's own)

from scoresde.precision import fast_bfloat16  # noqa: E402
from scoresde.util import atomic_write_text  # noqa: E402

VARIANTS = [(1, "float32"), (2, "float32"), (1, "bfloat16"), (2, "bfloat16")]

_CHILD = """
import json, sys, tempfile
import torch
threads, dtype, kw = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[5])
steps, warm = int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from scoresde.train import TrainConfig, train
out = tempfile.mkdtemp()
cfg = TrainConfig(**{**kw, "steps": warm, "dtype": dtype, "plots": False, "ckpt_every": 10**9, "out": out})
train(cfg, progress=False)
res = train(cfg.replace(steps=warm + steps), resume=True, progress=False)
print(json.dumps({"examples_per_s": res.examples_per_s, "steps": res.steps_run, "parameters": res.num_parameters}))
"""


def measure(recipe: str, threads: int, dtype: str, steps: int, warm: int) -> dict:
    kw = {**FULL[recipe], "warmup": 0}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(threads), dtype, str(steps), str(warm), json.dumps(kw)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{recipe} threads={threads} dtype={dtype} failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"recipe": recipe, "threads": threads, "dtype": dtype, "load_before": round(load, 2), **row}


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Training throughput",
        "",
        f"{os.cpu_count()} cores; one variant at a time, each in a fresh process; ratio: to the same recipe's "
        "1-thread float32 run of this invocation."
        + (
            ""
            if fast_bfloat16("cpu")
            else " This CPU has no bfloat16 kernels (scoresde.precision.fast_bfloat16): bfloat16 is timed on 3 steps."
        ),
        "",
        "| recipe | threads | dtype | examples/s | ratio | load before |",
        "|---|---:|---|---:|---:|---:|",
    ]
    base = {r["recipe"]: r["examples_per_s"] for r in rows if r["threads"] == 1 and r["dtype"] == "float32"}
    for r in rows:
        ratio = r["examples_per_s"] / base[r["recipe"]] if r["recipe"] in base else float("nan")
        lines.append(
            f"| {r['recipe']} | {r['threads']} | {r['dtype']} | {r['examples_per_s']:,.0f} | {ratio:.2f} | "
            f"{r['load_before']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=tuple(FULL))
    p.add_argument("--steps", type=int, default=60, help="timed steps per variant (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="3 timed steps, 1 warm-up: a check that it runs")
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    steps, warm = (3, 1) if args.quick else (args.steps, 5)
    recipes = [args.only] if args.only else list(FULL)
    # bfloat16 on a CPU without its kernels runs ~20x slower (scoresde.precision): measured on a few steps there
    slow = not fast_bfloat16("cpu")
    rows = [
        measure(r, t, d, *((min(steps, 3), 1) if slow and d == "bfloat16" else (steps, warm)))
        for r in recipes
        for t, d in VARIANTS
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "train_throughput.json", json.dumps(rows, indent=1))
    md = markdown(rows)
    atomic_write_text(out / "train_throughput.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
