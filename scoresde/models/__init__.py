"""Score networks: a residual MLP for low-dimensional data and a U-Net for images.

Every network is an ``nn.Module`` with ``forward(x, t, y=None) -> Tensor`` of ``x``'s shape: ``t`` is a float
tensor of shape ``(batch,)`` in continuous time ``[0, T]`` (the network embeds ``t`` itself), ``y`` an
optional long tensor of labels in ``[0, num_classes]`` where ``num_classes`` is the null class used for
classifier-free guidance (``y=None`` means the null class for a class-conditional model; an unconditional
model accepts only ``y=None``). ``model.config`` holds the JSON-serialisable constructor arguments plus
``"arch"``, and :func:`build_model` rebuilds the network from it.

Which quantity the output is (``eps``, ``x0``, ``v``) is a training choice; wrap the network in
:class:`scoresde.EpsilonScore`, :class:`scoresde.DataScore` or :class:`scoresde.VScore`.

:mod:`.classifier` scores generated 8x8 digits (Frechet distance on a small classifier's features, accuracy of
class-conditional samples), :mod:`.mnist_judge` generated 28x28 MNIST digits the same way (and the share of
samples it reads as one clear digit). This package sits at the bottom of the import floors: besides torch it imports
only the other bottom-floor modules ``data``, ``mnist_files``, ``metrics`` and ``util``.
"""

from __future__ import annotations

from torch import nn

from .classifier import DigitClassifier, digit_accuracy, digit_classifier, digit_fd, digit_fd_floor, digit_features
from .embedding import SinusoidalEmbedding, count_parameters
from .mlp import MLP
from .mnist_judge import (
    MnistClassifier,
    mnist_accuracy,
    mnist_classifier,
    mnist_confidence,
    mnist_fd,
    mnist_fd_floor,
    mnist_features,
)
from .unet import UNet

__all__ = [
    "MLP",
    "UNet",
    "SinusoidalEmbedding",
    "build_model",
    "count_parameters",
    "ARCHITECTURES",
    "DigitClassifier",
    "digit_classifier",
    "digit_features",
    "digit_fd",
    "digit_fd_floor",
    "digit_accuracy",
    "MnistClassifier",
    "mnist_classifier",
    "mnist_features",
    "mnist_fd",
    "mnist_fd_floor",
    "mnist_accuracy",
    "mnist_confidence",
]

ARCHITECTURES = {"mlp": MLP, "unet": UNet}


def build_model(config: dict) -> nn.Module:
    """Rebuild a network from its ``config`` (``{"arch": "mlp" | "unet", **constructor kwargs}``).

    The new network has freshly initialised weights; load a ``state_dict`` to restore a trained one.
    """
    if not isinstance(config, dict) or "arch" not in config:
        raise ValueError(f"build_model needs a dict with an 'arch' key, got {config!r}")
    kwargs = dict(config)
    arch = kwargs.pop("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"build_model: unknown arch {arch!r}, expected one of {sorted(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch](**kwargs)
    except TypeError as err:
        raise ValueError(f"build_model: bad arguments for {arch!r}: {err}") from err
