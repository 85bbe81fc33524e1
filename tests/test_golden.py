"""Every sampler's output pinned to the last bit (float64, CPU, fixed seed): see ``tests/golden/make_golden.py``.

A refactor of the solver core must reproduce these exactly; a change that alters a method's output on purpose
regenerates the file in the same commit and names the change in its message.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from make_golden import OUT, cases, run  # noqa: E402

GOLDEN = json.loads(OUT.read_text())
CASES = cases()


def test_every_case_is_recorded():
    assert sorted(CASES) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_is_bit_identical(name):
    torch.set_num_threads(1)  # intra-op threads could change the order of reductions
    got, want = run(CASES[name]), GOLDEN[name]
    assert got["nfe"] == want["nfe"]
    assert got["times"] == want["times"]
    x = torch.tensor([float.fromhex(v) for v in got["x"]], dtype=torch.float64)
    y = torch.tensor([float.fromhex(v) for v in want["x"]], dtype=torch.float64)
    assert got["x"] == want["x"], f"max |difference| {float((x - y).abs().max()):.3g}"
    assert got["trajectory_sha256"] == want["trajectory_sha256"]
