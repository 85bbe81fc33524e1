"""Sample quality for MNIST (28x28): a small classifier trained once inside the package, the judge of generated
images, with the same shape as the 8x8 digits' judge (:mod:`.classifier`).

- **FD** (:func:`mnist_fd`): the FID recipe of Heusel et al. 2017 (eq. 6; :func:`scoresde.metrics.frechet_distance`)
  on this classifier's ``feature_dim`` penultimate activations in place of Inception features. It is biased
  upwards at finite sample sizes, so a figure means something only beside its floor at the same ``n``,
  :func:`mnist_fd_floor`: real images of the train split (what a perfect model draws) scored the same way.
- **Class accuracy** (:func:`mnist_accuracy`): the fraction of class-conditional samples classified as their label.
- **Confidence** (:func:`mnist_confidence`): the fraction of samples whose largest softmax probability exceeds a
  threshold (0.9): high for digits, low for noise and for smudges between classes.

The classifier trains deterministically (fixed seed, ``torch.use_deterministic_algorithms``, one thread) on the
train split only, for 2 epochs in about a minute on one CPU thread, and is cached as safetensors under
``$SCORESDE_CACHE`` (default ``~/.cache/scoresde``), keyed by a hash of its configuration, the training recipe and
the data's cache key (:mod:`scoresde.mnist_files`), so every later call loads the same network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import data
from ..metrics import frechet_distance
from ..mnist_files import mnist_csv, mnist_key
from .classifier import _cache_dir, _fresh, fit_classifier, load_or_train

__all__ = [
    "MnistClassifier",
    "mnist_classifier",
    "mnist_features",
    "mnist_fd",
    "mnist_fd_floor",
    "mnist_accuracy",
    "mnist_confidence",
]

# the training recipe; any change here changes the cache key
_RECIPE = {
    "version": 1,
    "seed": 0,
    "epochs": 2,
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "shift": 1,
    "outlier_weight": 0.5,
}
_SHAPE = (1, 28, 28)


class MnistClassifier(nn.Module):
    """A small CNN on ``(N, 1, 28, 28)`` images in ``[-1, 1]``::

    Conv3x3(1 -> w) ReLU MaxPool2          (28 -> 14)
    Conv3x3(w -> 2w) ReLU MaxPool2         (14 -> 7)
    Conv3x3(2w -> 4w) ReLU MaxPool2        (7 -> 3)
    Linear(36w -> feature_dim) ReLU = features     Linear(feature_dim -> 10) = logits
    """

    def __init__(self, width: int = 16, feature_dim: int = 64):
        super().__init__()
        if not (isinstance(width, int) and width >= 1 and isinstance(feature_dim, int) and feature_dim >= 1):
            raise ValueError(
                f"MnistClassifier: width and feature_dim must be positive ints, got {width}, {feature_dim}"
            )
        self.config = {"width": width, "feature_dim": feature_dim}
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(36 * w, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, 10)
        self.test_accuracy = float("nan")  # set by mnist_classifier
        self.train_seconds = float("nan")

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations ``(N, feature_dim)``."""
        _check_images("MnistClassifier", x)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _check_images(what: str, x: Tensor, at_least: int = 0) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != _SHAPE or x.shape[0] < at_least:
        more = f">= {at_least} " if at_least else ""
        raise ValueError(f"{what} expects {more}images of shape (N, 1, 28, 28), got {tuple(x.shape)}")


def _train(config: dict, cache_dir: str | Path | None = None) -> MnistClassifier:
    return fit_classifier(
        _fresh(config, _RECIPE["seed"], MnistClassifier), *data.mnist("train", cache_dir=cache_dir), _RECIPE
    )


def _cache_key(config: dict) -> str:
    h = hashlib.sha256(json.dumps({"config": config, "recipe": _RECIPE}, sort_keys=True).encode())
    for split in ("train", "test"):  # the data's own keys: the CSVs' hashes
        h.update(mnist_key(mnist_csv(split)).encode())
    return h.hexdigest()[:16]


def mnist_classifier(cache_dir: str | Path | None = None, width: int = 16, feature_dim: int = 64) -> MnistClassifier:
    """The MNIST classifier, trained once on the train split and then loaded from the cache (and memoised).

    ``cache_dir`` (default ``$SCORESDE_CACHE`` or ``~/.cache/scoresde``) holds the weights and the parsed data.
    The network comes back in eval mode with frozen parameters; ``.test_accuracy`` is its accuracy on the test
    split and ``.train_seconds`` the time its training took (both recorded in the cache file). An unreadable
    cache file is retrained and replaced. Needs the extra ``scoresde[mnist]`` (:func:`scoresde.data.mnist`).
    """
    config = {"width": width, "feature_dim": feature_dim}
    path = _cache_dir(cache_dir) / f"mnist_classifier-{_cache_key(config)}.safetensors"
    clf = load_or_train(
        path,
        lambda: _fresh(config, _RECIPE["seed"], MnistClassifier),
        lambda: _train(config, cache_dir),
        lambda split: data.mnist(split, cache_dir=cache_dir),
    )
    clf.data_cache_dir = cache_dir  # where its floors and split features read the data from
    return clf


def _mnist(split: str, clf: nn.Module) -> Tensor:
    return data.mnist(split, cache_dir=getattr(clf, "data_cache_dir", None))[0]


def _device(clf: nn.Module) -> torch.device:
    return next(clf.parameters()).device


def mnist_features(x: Tensor, classifier: MnistClassifier | None = None, batch_size: int = 2048) -> Tensor:
    """The classifier's penultimate features of images ``x`` ``(N, 1, 28, 28)``, float64 ``(N, feature_dim)`` on the
    CPU, whatever device ``x`` and the classifier are on (the FD's float64 algebra stays off devices)."""
    clf = mnist_classifier() if classifier is None else classifier
    _check_images("mnist_features", x)
    dev = _device(clf)
    with torch.no_grad():
        return torch.cat([clf.features(b.to(dev, torch.float32)).cpu().double() for b in x.split(batch_size)])


def _split_features(split: str, clf: MnistClassifier) -> Tensor:
    """Features of a whole split, computed once per classifier."""
    cache = clf.__dict__.setdefault("_split_features", {})
    if split not in cache:
        cache[split] = mnist_features(_mnist(split, clf), clf)
    return cache[split]


def mnist_fd(x: Tensor, reference: str | Tensor = "test", classifier: MnistClassifier | None = None) -> float:
    """FD between the classifier features of images ``x`` ``(N, 1, 28, 28)`` (values as in
    :func:`scoresde.data.mnist`) and those of ``reference``: the whole ``"test"`` or ``"train"`` split, or a tensor
    of images. ``nan`` if ``x`` has non-finite values. Compare with :func:`mnist_fd_floor` at ``n = len(x)``."""
    clf = mnist_classifier() if classifier is None else classifier
    _check_images("mnist_fd", x, at_least=2)
    if not torch.isfinite(x).all():
        return float("nan")
    if isinstance(reference, Tensor):
        ref = mnist_features(reference, clf)
    elif reference in ("train", "test"):
        ref = _split_features(reference, clf)
    else:
        raise ValueError(f"mnist_fd: reference must be 'train', 'test' or a tensor of images, got {reference!r}")
    return frechet_distance(mnist_features(x, clf), ref)


def mnist_fd_floor(classifier: MnistClassifier | None = None, seed: int = 0, n: int = 10_000) -> dict[str, float]:
    """The FD of real images at sample size ``n``, the floor of a model's figure at that ``n`` (the arguments of
    :func:`scoresde.models.digit_fd_floor`, and ``n``):

    - ``"test_vs_train"``: ``n`` images of the train split (a draw without replacement from ``seed``) against
      the whole test split: the floor of ``mnist_fd(x, "test")`` for ``len(x) == n``;
    - ``"train_halves"`` (``n <= 30,000``): two disjoint draws of ``n`` train images against each other: the floor
      of ``mnist_fd(x, reference)`` for a reference of ``n`` images.
    """
    clf = mnist_classifier() if classifier is None else classifier
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= 60_000:
        raise ValueError(f"mnist_fd_floor: n must be an int in [2, 60000], got {n!r}")
    x_train = _mnist("train", clf)
    perm = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))
    out = {"test_vs_train": frechet_distance(mnist_features(x_train[perm[:n]], clf), _split_features("test", clf))}
    if 2 * n <= x_train.shape[0]:
        out["train_halves"] = mnist_fd(x_train[perm[:n]], x_train[perm[n : 2 * n]], clf)
    return out


def _probabilities(x: Tensor, clf: MnistClassifier) -> Tensor:
    dev = _device(clf)
    with torch.no_grad():
        return torch.cat([clf(b.to(dev, torch.float32)).softmax(1).cpu() for b in x.split(2048)])


def mnist_accuracy(x: Tensor, y: Tensor, classifier: MnistClassifier | None = None) -> float:
    """The fraction of images ``x`` ``(N, 1, 28, 28)`` that the classifier assigns to their labels ``y`` ``(N,)``:
    the class accuracy of class-conditional samples."""
    clf = mnist_classifier() if classifier is None else classifier
    _check_images("mnist_accuracy", x, at_least=1)
    if y.shape != (x.shape[0],):
        raise ValueError(f"mnist_accuracy expects y of shape ({x.shape[0]},), got {tuple(y.shape)}")
    return int((_probabilities(x, clf).argmax(1) == y.cpu()).sum()) / x.shape[0]


def mnist_confidence(x: Tensor, threshold: float = 0.9, classifier: MnistClassifier | None = None) -> float:
    """The fraction of images ``x`` ``(N, 1, 28, 28)`` whose largest class probability (softmax of the logits)
    exceeds ``threshold``: the share of samples that read as one clear digit."""
    clf = mnist_classifier() if classifier is None else classifier
    _check_images("mnist_confidence", x, at_least=1)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"mnist_confidence: threshold must be in (0, 1), got {threshold!r}")
    return float((_probabilities(x, clf).amax(1) > threshold).double().mean())
