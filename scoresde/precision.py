"""Precision settings shared by ``scoresde sample``, ``bench`` and ``train``: ``--dtype`` and the network's context.

``float32`` (the default) or ``float64`` is the dtype of the state, the noise and the network's inputs;
``bfloat16`` keeps the state (and, in training, the weights, the optimiser and the loss) in float32 and runs the
network under ``torch.autocast`` in bfloat16. Autocast lowers only the matrix products and convolutions, so the
solvers' elementwise arithmetic stays in the state's dtype. Apple MPS has no float64.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["DTYPES", "state_dtype", "network_precision", "check_dtype_device"]

DTYPES = ("float32", "float64", "bfloat16")


def state_dtype(name: str) -> torch.dtype:
    """The dtype of the state for ``--dtype name`` (bfloat16 autocasts the network; the state stays float32)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return torch.float64 if name == "float64" else torch.float32


def network_precision(name: str, device: str | torch.device):
    """The context the network runs in: ``torch.autocast(device type, bfloat16)`` for ``bfloat16``, else none."""
    if name != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def check_dtype_device(name: str, device: str | torch.device) -> None:
    """Refuse ``float64`` on Apple MPS, which has no float64."""
    if name == "float64" and torch.device(device).type == "mps":
        raise ValueError("--dtype float64: Apple MPS has no float64; use float32 (the default)")
