"""Measure how far the golden outputs move between configurations: ``python tests/golden/spread.py``.

Runs every case in a fresh process per configuration (this machine as it is, PyTorch's AVX2 kernels, MKL's
AVX2 path, PyTorch's scalar kernels; those the CPU cannot run are skipped) and prints, for each, the largest
``|difference| / (1 + |value|)`` against this machine's native run and against every record, with the case
where it occurs. ``make_golden.MEASURED_SPREAD`` is the largest of these over the machines and vector
instruction sets seen; the scalar kernels (``ATEN_CPU_CAPABILITY=default``: also ARM CPUs), whose float32
normals differ, give ``make_golden.SCALAR_SPREAD``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from make_golden import TOLERANCE, load_records, run_all, spread

CONFIGS = {
    "native": {},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "MKL_ENABLE_INSTRUCTIONS=AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "both AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "ATEN_CPU_CAPABILITY=default (scalar)": {"ATEN_CPU_CAPABILITY": "default"},
}


def _worst(a: dict, b: dict) -> tuple[float, str]:
    return max((spread(a[c], b[c]), c) for c in a)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--dump":
        Path(sys.argv[2]).write_text(json.dumps(run_all()))
        return
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, env in CONFIGS.items():
            out = Path(tmp) / "run.json"
            proc = subprocess.run(
                [sys.executable, __file__, "--dump", str(out)], env={**os.environ, **env}, capture_output=True
            )
            if proc.returncode != 0:
                print(f"{label}: did not run ({proc.stderr.decode().strip().splitlines()[-1:]})")
                continue
            runs[label] = json.loads(out.read_text())
    records = {name: rec["cases"] for name, rec in load_records().items()}
    print(f"largest |difference| / (1 + |value|), tolerance {TOLERANCE:.3g}")
    for label, table in runs.items():
        for other, ref in [("native", runs["native"])] + list(records.items()):
            if other == label:
                continue
            worst, case = _worst(table, ref)
            print(f"  {label:38s} vs {other:38s} {worst:9.3g}  ({case})")
    names = sorted(records)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            worst, case = _worst(records[a], records[b])
            print(f"  record {a:31s} vs {b:38s} {worst:9.3g}  ({case})")


if __name__ == "__main__":
    main()
