"""benchmarks/gpu.py (issue 34): sampling throughput against diffusers' loop on one U-Net. No GPU in CI: the script
runs here on the CPU at test size (and on CUDA where the machine has it), through one process and through
torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--size", "small", "--batch", "2", "--steps", "2", "--repeats", "1", "--methods", "ddim,unipc"]


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((tmp_path / "out" / "gpu.json").read_text()), (tmp_path / "out" / "gpu.md").read_text()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="no CUDA device here"))])  # fmt: skip
def test_the_throughput_table_compares_each_method_with_its_diffusers_loop(tmp_path, device):
    res, md = _run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), *SMALL, "--device", device, "--out", "out"],
                   tmp_path)  # fmt: skip
    rows = res["rows"]
    assert len(rows) == 2 * 2 * 3  # 2 dtypes x 2 methods x (ours, ours unchecked, diffusers)
    assert {r["who"] for r in rows} == {"scoresde", "scoresde, check=end", "diffusers"}
    for r in rows:
        assert r["samples_per_s"] > 0 and r["total_over_model"] >= 1.0
    syncs = {(r["who"], r["method"], r["dtype"]): r["host_syncs_per_step"] for r in rows}
    assert syncs[("scoresde", "unipc", "float32")] <= 1.0  # the NaN test once per step, nothing else
    assert syncs[("scoresde, check=end", "unipc", "float32")] * 2 == 1.0  # one test of the samples at the end
    assert res["device"] == device and "`UniPCMultistepScheduler` (diffusers)" in md and "ours / diffusers" in md


def test_the_torchrun_path_reports_the_group_throughput(tmp_path):
    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    cmd += [str(ROOT / "benchmarks" / "gpu.py"), *SMALL, "--dtypes", "float32", "--device", "cpu", "--out", "out"]
    res, md = _run(cmd, tmp_path)
    d = res["distributed"]
    assert d["processes"] == 2 and d["backend"] == "gloo" and d["samples_per_s"] > 0
    assert "`sd.sample_distributed` on 2 processes (gloo)" in md
