"""Every sampler's output pinned to the last bit (float64, CPU, fixed seed): see ``tests/golden/make_golden.py``.

A refactor of the solver core must reproduce these exactly; a change that alters a method's output on purpose
regenerates the records in the same commit and names the change in its message. The last bits depend on the
instruction set (AVX2 or AVX-512), so a machine is held to its own instruction set's record, bit for bit. One
without a record (another instruction set) is held to all of them within a relative 1e-5: PyTorch's scalar
kernels (``ATEN_CPU_CAPABILITY=default``) give up to 1.6e-7 away from the records, a method's discretisation
error on these cases is orders above 1e-5, so a change of its arithmetic still fails.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from make_golden import RECORDS, cases, record, run  # noqa: E402

ALL = {path.stem: json.loads(path.read_text()) for path in RECORDS}
OWN = json.loads(record().read_text()) if record().exists() else None
CASES = cases()


def _values(hexes: list[str]) -> torch.Tensor:
    return torch.tensor([float.fromhex(v) for v in hexes], dtype=torch.float64)


def test_every_case_is_recorded():
    assert {"methods-avx2", "methods-avx512"} <= set(ALL)
    for table in ALL.values():
        assert sorted(CASES) == sorted(table)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_is_bit_identical(name):
    torch.set_num_threads(1)  # intra-op threads could change the order of reductions
    got = run(CASES[name])
    if OWN is not None:
        want = OWN[name]
        assert got["nfe"] == want["nfe"]
        assert got["times"] == want["times"]
        diff = float((_values(got["x"]) - _values(want["x"])).abs().max())
        assert got["x"] == want["x"], f"{record().name}: max |difference| {diff:.3g}"
        assert got["trajectory_sha256"] == want["trajectory_sha256"]
        return
    for table in ALL.values():
        want = table[name]
        assert got["nfe"] == want["nfe"]
        torch.testing.assert_close(_values(got["times"]), _values(want["times"]), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(_values(got["x"]), _values(want["x"]), rtol=1e-5, atol=1e-7)
