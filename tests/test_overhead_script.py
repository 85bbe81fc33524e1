"""benchmarks/overhead.py (make bench-overhead) runs end to end: every fixed-step method and every VP peer on the
time-conditioned MLP, at a tiny size (it crashed when the flow peers joined the list: they refuse a VP score)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_overhead_benchmark_runs_every_method_and_vp_peer(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--n", "64", "--nfe", "4", "--repeats", "1"]
    done = subprocess.run([*cmd, "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torchdiffeq euler (raw, reference)" in done.stdout and "| dpm++2m |" in done.stdout
    rows = json.loads((tmp_path / "overhead.json").read_text())["rows"]
    assert rows and not any(r["method"].startswith("flow-") for r in rows)
