"""Diagnostics: count the host synchronisations a piece of code makes, on any device.

On a GPU every read of a device value by the host (``.item()``, ``float(t)``, ``bool(t)``, ``torch.equal``,
``nonzero``) makes the host wait for the device. :class:`HostSyncs`, a ``TorchDispatchMode``, sees every such read
as an aten op, so the count is the same on the CPU as on a GPU. Only reads of values that derive from random draws
count (the sampled state, the model's outputs on it): taint starts at the draws and follows every op's outputs
(and the base of a view that is written into); the run's time arithmetic on Python floats never counts.

    with torch.no_grad(), HostSyncs() as syncs:
        sd.sample(score, sde, shape, method="unipc", steps=10, seed=0)
    print(syncs.count, syncs.by_op)

``tests/test_host_syncs.py`` holds every method to at most one per step; ``benchmarks/gpu.py`` reports them.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["HostSyncs", "SYNC_OPS"]

SYNC_OPS = {"_local_scalar_dense", "is_nonzero", "item", "nonzero", "equal", "allclose", "masked_select", "unique"}
ROOT_OPS = {"randn", "normal", "normal_", "randn_like", "rand", "uniform_"}


class HostSyncs(TorchDispatchMode):
    """Counts the host reads of state-derived tensors while active (``count``, ``by_op``)."""

    def __init__(self):
        super().__init__()
        self.count, self.by_op = 0, {}
        self._hot = WeakIdKeyDictionary()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        hot = any(isinstance(a, torch.Tensor) and a in self._hot for a in tree_flatten((args, kwargs))[0])
        if hot and name in SYNC_OPS:
            self.count += 1
            self.by_op[name] = self.by_op.get(name, 0) + 1
        out = func(*args, **kwargs)
        if hot or name in ROOT_OPS:
            for o in tree_flatten(out)[0]:
                if isinstance(o, torch.Tensor):
                    self._hot[o] = True
                    if o._base is not None:
                        self._hot[o._base] = True
        return out
