"""Every sampler's output pinned (float64, CPU, one thread, fixed seed): see ``tests/golden/make_golden.py``.

A refactor of the solver core must reproduce these; a change that alters a method's output on purpose rewrites
this machine's record in the same commit (``make golden``) and names the change in its message.

The last bits depend on the machine (CPU vendor and model, instruction set, MKL and oneDNN versions), so:
a machine whose fingerprint matches a record is held to it bit for bit; every machine is held to every record
within ``TOLERANCE`` (the spread measured between machines times a margin), far below what a change of a
method's arithmetic moves (a looser one on PyTorch's scalar kernels, whose normals differ in float32's last
bits). A new machine needs no record of its own to pass.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from make_golden import TOLERANCE, cases, load_records, machine, run, spread, tolerance, values  # noqa: E402

RECORDS = load_records()
HERE = machine()
OWN = next((rec["cases"] for rec in RECORDS.values() if rec["machine"] == HERE), None)
CASES = cases()


def test_every_record_holds_every_case():
    assert len(RECORDS) >= 2, "the tolerance is only as good as the machines behind it"
    for name, rec in RECORDS.items():
        assert sorted(CASES) == sorted(rec["cases"]), name


def test_records_agree_within_the_tolerance():
    """The records themselves, written on different machines, differ by less than the tolerance: a stale
    record (left behind by a change on purpose) fails here on every machine, whatever it runs."""
    names = sorted(RECORDS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for case in CASES:
                got, want = RECORDS[a]["cases"][case], RECORDS[b]["cases"][case]
                assert spread(got, want) <= TOLERANCE, f"{a} vs {b}, {case}: {spread(got, want):.3g}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_the_records(name):
    torch.set_num_threads(1)  # intra-op threads could change the order of reductions
    got = run(CASES[name])
    if OWN is not None:  # the machine that wrote a record: bit for bit
        want = OWN[name]
        assert got["nfe"] == want["nfe"]
        assert got["times"] == want["times"]
        diff = float((values(got["x"]) - values(want["x"])).abs().max())
        assert got["x"] == want["x"], f"this machine's record: max |difference| {diff:.3g}"
        assert got["trajectory_sha256"] == want["trajectory_sha256"]
    for record, rec in RECORDS.items():
        want = rec["cases"][name]
        assert got["nfe"] == want["nfe"], record
        worst = spread(got, want)
        assert worst <= tolerance(), f"{record}: max |difference| / (1 + |value|) {worst:.3g} > {tolerance():.3g}"


def test_fingerprint_names_what_decides_the_last_bits():
    info = machine()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch"] == torch.__version__
    assert {"mkl", "onednn", "libc"} <= set(info)
    if Path("/proc/cpuinfo").exists():
        assert {"cpu vendor_id", "cpu model", "cpu model name"} <= set(info)
