import os

import pytest
import torch

# Under pytest-xdist each worker gets one thread: 2 workers x N intra-op threads on a 2-core machine
# oversubscribe the cores and slow the suite down by an order of magnitude.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def counting():
    """``model, calls = counting(fn)``: ``model`` calls ``fn`` and logs the time of every call in ``calls``,
    so a test can compare a reported NFE with the calls that really happened."""

    def wrap(fn):
        calls = []

        def model(x, t):
            calls.append(float(t[0]))
            return fn(x, t)

        return model, calls

    return wrap
