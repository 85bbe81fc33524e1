"""Precision settings shared by ``scoresde sample``, ``bench`` and ``train``: ``--dtype`` and the network's context.

``float32`` (the default) or ``float64`` is the dtype of the state, the noise and the network's inputs;
``bfloat16`` keeps the state (and, in training, the weights, the optimiser and the loss) in float32 and runs the
network under ``torch.autocast`` in bfloat16. Autocast lowers only the matrix products and convolutions, so the
solvers' elementwise arithmetic stays in the state's dtype. Apple MPS has no float64.

bfloat16 pays only where the hardware has it. On a CPU, PyTorch's bfloat16 convolutions and matrix products are
oneDNN's, which need AVX-512 on x86 (or BF16 on Arm); elsewhere (an x86 CPU with AVX2 only) autocast falls back to
slow generic code: a training step of the digits U-Net of ``benchmarks/learned.py`` (batch 128, one thread) took
24 s in bfloat16 against 1.2 s in float32 on such a machine. :func:`check_dtype_device` warns then.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch

__all__ = ["DTYPES", "state_dtype", "network_precision", "check_dtype_device", "fast_bfloat16"]

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


@functools.cache
def _cpu_has_bfloat16_kernels() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: nothing to tell, so no warning
        return True


def fast_bfloat16(device: str | torch.device) -> bool:
    """Whether bfloat16 autocast can speed the network up on ``device``: on the CPU, whether oneDNN has bfloat16
    kernels for it (x86 with AVX-512, Arm with BF16); accelerators are assumed to."""
    return torch.device(device).type != "cpu" or _cpu_has_bfloat16_kernels()


def check_dtype_device(name: str, device: str | torch.device, stacklevel: int = 2) -> None:
    """Refuse ``float64`` on Apple MPS, which has no float64; warn about ``bfloat16`` on a CPU without bfloat16
    kernels (:func:`fast_bfloat16`), where it runs about 20 times slower than float32. ``stacklevel`` counts as in
    :func:`warnings.warn`, from the function that calls this one: by default the warning names that function's
    caller."""
    if name == "float64" and torch.device(device).type == "mps":
        raise ValueError("--dtype float64: Apple MPS has no float64; use float32 (the default)")
    if name == "bfloat16" and not fast_bfloat16(device):
        warnings.warn(
            "dtype 'bfloat16' on this CPU: PyTorch's oneDNN has no bfloat16 kernels for it (x86 without AVX-512), so "
            "the network runs in slow generic code (a digits U-Net training step: 24 s against 1.2 s in float32); "
            "use dtype 'float32'",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
