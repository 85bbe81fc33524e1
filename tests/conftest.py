import os

import torch

# Under pytest-xdist each worker gets one thread: 2 workers x N intra-op threads on a 2-core machine
# oversubscribe the cores and slow the suite down by an order of magnitude.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
