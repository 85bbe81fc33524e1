"""Sample quality for the 8x8 digits: a small classifier trained inside the package, whose penultimate features
give a Frechet distance (FD) between generated and real digits, and whose predictions score class-conditional
samples.

The FD is the FID recipe of Heusel et al. 2017 (eq. 6; :func:`scoresde.metrics.frechet_distance`) with this
classifier's ``feature_dim`` penultimate activations in place of Inception features. It is biased upwards at
finite sample sizes, so a figure means something only beside its floor, :func:`digit_fd_floor`: the FD between
the real test and train splits (and between two halves of the train split).

The classifier is trained deterministically (fixed seed, ``torch.use_deterministic_algorithms``, one thread)
on the digits train split only, in a few seconds on a CPU, and its weights are cached as safetensors under
``$SCORESDE_CACHE`` (default ``~/.cache/scoresde``), keyed by a hash of the configuration, the training recipe
and the training data, so every later call loads the same network.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data
from ..metrics import frechet_distance
from ..util import atomic_write_bytes, cache_root

__all__ = ["DigitClassifier", "digit_classifier", "digit_features", "digit_fd", "digit_fd_floor", "digit_accuracy"]

# the training recipe; any change here changes the cache key
_RECIPE = {"version": 1, "seed": 0, "epochs": 20, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4, "shift": 1}
_MEMO: dict[str, DigitClassifier] = {}


class DigitClassifier(nn.Module):
    """A small CNN on ``(N, 1, 8, 8)`` digits in ``[-1, 1]``::

    Conv3x3(1 -> w) ReLU  Conv3x3(w -> 2w) ReLU  MaxPool2   (8x8 -> 4x4)
    Conv3x3(2w -> 2w) ReLU  MaxPool2                         (4x4 -> 2x2)
    Linear(8w -> feature_dim) ReLU = features                 Linear(feature_dim -> 10) = logits
    """

    def __init__(self, width: int = 16, feature_dim: int = 64):
        super().__init__()
        if not (isinstance(width, int) and width >= 1 and isinstance(feature_dim, int) and feature_dim >= 1):
            raise ValueError(
                f"DigitClassifier: width and feature_dim must be positive ints, got {width}, {feature_dim}"
            )
        self.config = {"width": width, "feature_dim": feature_dim}
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, 10)
        self.test_accuracy = float("nan")  # set by digit_classifier
        self.train_seconds = float("nan")

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations ``(N, feature_dim)``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"DigitClassifier expects digits of shape (N, 1, 8, 8), got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _shift(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Translate each image by an integer offset in ``[-max_shift, max_shift]^2``, filling with background -1."""
    if max_shift == 0:
        return x
    k, (h, w) = 2 * max_shift + 1, x.shape[-2:]
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, k * k, (x.shape[0],), generator=g)
    out = torch.empty_like(x)
    for o in range(k * k):
        dy, dx, sel = o // k, o % k, offsets == o
        out[sel] = padded[sel, :, dy : dy + h, dx : dx + w]
    return out


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((torch.cat([model(b).argmax(1) for b in x.split(2048)]) == y).double().mean())


def _fresh(config: dict, seed: int, cls: type[nn.Module] | None = None) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # the initialisation draws from the global RNG: keep the caller's
        torch.manual_seed(seed)
        return (cls or DigitClassifier)(**config)


def _outliers(m: int, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """``m`` images that are no digit, in turn uniform noise on ``[-1, 1]``, Gaussian noise clipped to it, and
    uniform noise on a 4x coarser grid upsampled (blobs)."""
    c, h, w = shape
    u = torch.rand(m, c, h, w, generator=g) * 2 - 1
    z = torch.randn(m, c, h, w, generator=g).clamp(-1, 1)
    coarse = torch.rand(m, c, -(-h // 4), -(-w // 4), generator=g) * 2 - 1
    blobs = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    kind = (torch.arange(m) % 3).view(m, 1, 1, 1)
    return torch.where(kind == 0, u, torch.where(kind == 1, z, blobs))


def _loss(model: nn.Module, x: Tensor, y: Tensor, r: dict, g: torch.Generator) -> Tensor:
    if not r.get("outlier_weight"):
        return F.cross_entropy(model(x), y)
    logits = model(torch.cat([x, _outliers(x.shape[0] // 4, tuple(x.shape[1:]), g)]))
    uniform = -logits[x.shape[0] :].log_softmax(1).mean(1).mean()  # cross entropy to the uniform label
    return F.cross_entropy(logits[: x.shape[0]], y) + r["outlier_weight"] * uniform


def fit_classifier(model: nn.Module, x: Tensor, y: Tensor, recipe: dict) -> nn.Module:
    """Train ``model`` on ``(x, y)`` in place and return it: AdamW with a one-cycle learning rate, ``recipe``'s
    ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, random integer shifts up to ``shift`` pixels, batches and
    shifts drawn from ``recipe["seed"]``. With ``outlier_weight`` > 0 every batch also holds a quarter as many
    noise images (:func:`_outliers`) whose cross entropy to the uniform label is added with that weight (outlier
    exposure, Hendrycks et al. 2019), so that noise gets no confident class. It runs on one thread with
    deterministic algorithms, so the same inputs give the same weights bit for bit (the thread count and the
    deterministic flag are restored afterwards)."""
    r = recipe
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        g = torch.Generator().manual_seed(r["seed"])
        opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
        steps = r["epochs"] * -(-x.shape[0] // r["batch_size"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=steps)
        model.train()
        for _ in range(r["epochs"]):
            for idx in torch.randperm(x.shape[0], generator=g).split(r["batch_size"]):
                loss = _loss(model, _shift(x[idx], r["shift"], g), y[idx], r, g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.set_num_threads(threads)
    return model


def _train(config: dict) -> DigitClassifier:
    return fit_classifier(_fresh(config, _RECIPE["seed"]), *data.digits("train"), _RECIPE)


def _cache_key(config: dict) -> str:
    x, y = data.digits("train")
    h = hashlib.sha256(json.dumps({"config": config, "recipe": _RECIPE}, sort_keys=True).encode())
    h.update(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()[:16]


def _cache_dir(cache_dir: str | Path | None) -> Path:
    return cache_root(cache_dir)


def digit_classifier(cache_dir: str | Path | None = None, width: int = 16, feature_dim: int = 64) -> DigitClassifier:
    """The digit classifier, trained once on the train split and then loaded from the cache (and memoised).

    ``cache_dir`` defaults to ``$SCORESDE_CACHE`` or ``~/.cache/scoresde``. The returned network is in eval mode
    with frozen parameters; ``.test_accuracy`` is its accuracy on the test split and ``.train_seconds`` the
    time its training took (recorded in the cache file). An unreadable cache file is retrained and replaced.
    """
    config = {"width": width, "feature_dim": feature_dim}
    path = _cache_dir(cache_dir) / f"digit_classifier-{_cache_key(config)}.safetensors"
    return load_or_train(path, lambda: _fresh(config, _RECIPE["seed"]), lambda: _train(config), data.digits)


def load_or_train(path: Path, fresh: Callable[[], nn.Module], train: Callable[[], nn.Module], split: Callable):
    """The classifier cached at ``path``: memoised per process, else loaded into ``fresh()``, else ``train()``-ed
    and written atomically with its test accuracy (on ``split("test")``) and training time as metadata. The
    network comes back in eval mode with frozen parameters and ``.test_accuracy``, ``.train_seconds`` set. A
    file that does not load (torn, foreign weights, missing metadata) is retrained and replaced."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file, save

    memo_key = str(path.resolve())
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    model, meta = fresh(), None
    if path.exists():
        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata()
            model.load_state_dict(load_file(path))
            float(meta["test_accuracy"]), float(meta["train_seconds"])
        except (SafetensorError, RuntimeError, KeyError, TypeError, ValueError, OSError):
            meta = None
    if meta is None:
        start = time.perf_counter()
        model = train()
        seconds = time.perf_counter() - start
        x_test, y_test = split("test")
        meta = {"test_accuracy": repr(_accuracy(model.eval(), x_test, y_test)), "train_seconds": repr(seconds)}
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=meta))
    model.eval().requires_grad_(False)
    model.test_accuracy, model.train_seconds = float(meta["test_accuracy"]), float(meta["train_seconds"])
    _MEMO[memo_key] = model
    return model


def digit_features(x: Tensor, classifier: DigitClassifier | None = None, batch_size: int = 2048) -> Tensor:
    """The classifier's penultimate features of digits ``x`` ``(N, 1, 8, 8)``, float64 ``(N, feature_dim)`` on the
    CPU, whatever device ``x`` and the classifier are on (the FD's float64 algebra stays off devices)."""
    clf = digit_classifier() if classifier is None else classifier
    dev = next(clf.parameters()).device
    with torch.no_grad():
        return torch.cat([clf.features(b.to(dev, torch.float32)).cpu().double() for b in x.split(batch_size)])


def _reference_features(reference: str | Tensor, clf: DigitClassifier) -> Tensor:
    if isinstance(reference, Tensor):
        return digit_features(reference, clf)
    if reference not in ("train", "test"):
        raise ValueError(f"digit_fd: reference must be 'train', 'test' or a tensor of digits, got {reference!r}")
    cache = clf.__dict__.setdefault("_reference_features", {})
    if reference not in cache:
        cache[reference] = digit_features(data.digits(reference)[0], clf)
    return cache[reference]


def digit_fd(x: Tensor, reference: str | Tensor = "test", classifier: DigitClassifier | None = None) -> float:
    """FD between the classifier features of digits ``x`` ``(N, 1, 8, 8)`` (values as in :func:`scoresde.data.digits`)
    and those of ``reference``: the ``"test"`` or ``"train"`` split, or a tensor of digits. ``nan`` if ``x`` has
    non-finite values. Compare with :func:`digit_fd_floor`."""
    clf = digit_classifier() if classifier is None else classifier
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8) or x.shape[0] < 2:
        raise ValueError(f"digit_fd expects >= 2 digits of shape (N, 1, 8, 8), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        return float("nan")
    return frechet_distance(digit_features(x, clf), _reference_features(reference, clf))


def digit_fd_floor(classifier: DigitClassifier | None = None, seed: int = 0) -> dict[str, float]:
    """The FD between real digits: ``"test_vs_train"`` (the floor for samples scored against the test split with
    a model trained on the train split) and ``"train_halves"`` (two halves of the train split, split by a
    permutation drawn from ``seed``)."""
    clf = digit_classifier() if classifier is None else classifier
    x_train = data.digits("train")[0]
    perm = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))
    half = x_train.shape[0] // 2
    return {
        "test_vs_train": digit_fd(data.digits("test")[0], "train", clf),
        "train_halves": digit_fd(x_train[perm[:half]], x_train[perm[half:]], clf),
    }


def digit_accuracy(x: Tensor, y: Tensor, classifier: DigitClassifier | None = None) -> float:
    """The fraction of digits ``x`` ``(N, 1, 8, 8)`` that the classifier assigns to their labels ``y`` ``(N,)``:
    the accuracy of class-conditional samples."""
    clf = digit_classifier() if classifier is None else classifier
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8) or y.shape != (x.shape[0],):
        raise ValueError(f"digit_accuracy expects x (N, 1, 8, 8) and y (N,), got {tuple(x.shape)}, {tuple(y.shape)}")
    dev = next(clf.parameters()).device
    with torch.no_grad():
        pred = torch.cat([clf(b.to(dev, torch.float32)).argmax(1).cpu() for b in x.split(2048)])
    return int((pred == y.cpu()).sum()) / len(pred)
