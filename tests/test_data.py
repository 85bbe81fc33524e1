"""Datasets: the toy sets follow their documented processes exactly (geometry at zero noise, exact
standardisation constants), are reproducible from a seed, and the digits split is a stratified partition of
scikit-learn's 1,797 bundled images."""

import math

import pytest
import torch

from scoresde import data

F64 = torch.float64
PI = math.pi


def raw_moments(name, sigma):
    """The mean and ``tr Cov`` of each raw process, re-derived here from the generating processes."""
    if name == "moons":  # x: E = 1/2, Var = 3/4; y: E = 1/4, E y^2 = 5/8 - 1/pi
        return (0.5, 0.25), 0.75 + (0.625 - 1 / PI - 0.25**2) + 2 * sigma**2
    if name == "swissroll":  # tau ~ U(3pi/2, 9pi/2): E tau^2 = (a^2 + ab + b^2) / 3
        a, b = 1.5 * PI, 4.5 * PI
        m = (2.0, 2 / (3 * PI))
        return m, (a * a + a * b + b * b) / 3 + 2 * sigma**2 - m[0] ** 2 - m[1] ** 2
    if name == "checkerboard":  # both coordinates uniform on [-2, 2]
        return (0.0, 0.0), 2 * 16 / 12 + 2 * sigma**2
    return (0.0, 0.0), (1 * 1 + 2 * 4 + 3 * 9) / 6 + 2 * sigma**2  # rings


def unstandardise(x, name, sigma=0.0):
    m, tr = raw_moments(name, sigma)
    return x.double() * math.sqrt(tr / 2) + torch.tensor(m, dtype=F64)


# --------------------------------------------------------------------------------------------------
# toy sets
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", data.TOY_SETS)
def test_toy_shape_dtype_and_reproducible_from_seed(name):
    state = torch.get_rng_state()
    x = data.toy_2d(name, 1000, seed=3)
    assert x.shape == (1000, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, data.toy_2d(name, 1000, seed=3))
    assert torch.equal(x, data.toy_2d(name, 1000, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(x, data.toy_2d(name, 1000, seed=4))
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be used"
    assert data.toy_2d(name, 10, seed=0, dtype=F64).dtype == F64


@pytest.mark.parametrize("name", data.TOY_SETS)
def test_toy_standardisation_is_exact(name):
    """E[x] = 0 and E|x|^2 / 2 = 1 for the exact moments; checked within 5 standard errors at n = 200,000."""
    n = 200_000
    x = data.toy_2d(name, n, seed=11, dtype=F64)
    se_mean = x.std(0) / math.sqrt(n)
    assert (x.mean(0).abs() < 5 * se_mean).all(), (x.mean(0), se_mean)
    half_sq = x.square().sum(1) / 2
    assert abs(float(half_sq.mean()) - 1) < 5 * float(half_sq.std()) / math.sqrt(n)


def test_checkerboard_points_lie_on_the_dark_squares():
    raw = unstandardise(data.toy_2d("checkerboard", 20_000, seed=0, dtype=F64), "checkerboard")
    assert raw.abs().max() <= 2 + 1e-12
    fa, fb = torch.floor(raw[:, 0]), torch.floor(raw[:, 1])
    assert torch.equal(torch.remainder(fa, 2), torch.remainder(fb, 2))
    counts = torch.bincount(((fa + 2) * 4 + fb + 2).long(), minlength=16)
    assert (counts > 0).sum() == 8  # 8 of the 16 squares, about equally filled
    filled = counts[counts > 0].double()
    assert (filled - 2500).abs().max() < 5 * math.sqrt(2500)


def test_rings_radii_and_their_frequencies():
    n = 30_000
    raw = unstandardise(data.toy_2d("rings", n, seed=1, noise=0.0, dtype=F64), "rings")
    r = raw.norm(dim=1)
    assert (r - r.round()).abs().max() < 1e-9
    freq = torch.bincount(r.round().long(), minlength=4)[1:].double() / n
    p = torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=F64)
    assert ((freq - p).abs() < 5 * (p * (1 - p) / n).sqrt()).all(), freq


def test_moons_lie_on_two_unit_half_circles():
    raw = unstandardise(data.toy_2d("moons", 5000, seed=2, noise=0.0, dtype=F64), "moons")
    upper = (raw - torch.tensor([0.0, 0.0], dtype=F64)).norm(dim=1)
    lower = (raw - torch.tensor([1.0, 0.5], dtype=F64)).norm(dim=1)
    on_upper = (upper - 1).abs() < 1e-9
    on_lower = (lower - 1).abs() < 1e-9
    assert (on_upper | on_lower).all()
    assert (raw[on_upper, 1] >= -1e-12).all() and (raw[on_lower, 1] <= 0.5 + 1e-12).all()
    assert abs(float(on_upper.double().mean()) - 0.5) < 5 * math.sqrt(0.25 / 5000)


def test_swissroll_angle_equals_radius():
    raw = unstandardise(data.toy_2d("swissroll", 5000, seed=3, noise=0.0, dtype=F64), "swissroll")
    tau = raw.norm(dim=1)
    assert tau.min() >= 1.5 * PI - 1e-9 and tau.max() <= 4.5 * PI + 1e-9
    torch.testing.assert_close(raw, torch.stack([tau * torch.cos(tau), tau * torch.sin(tau)], 1), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "spiral", "n": 10, "seed": 0},
        {"name": "moons", "n": 0, "seed": 0},
        {"name": "moons", "n": 10},
        {"name": "moons", "n": 10, "seed": 0, "generator": torch.Generator()},
        {"name": "moons", "n": 10, "seed": 0, "noise": -0.1},
        {"name": "moons", "n": 10, "seed": 1.5},
    ],
)
def test_toy_bad_input(kwargs):
    with pytest.raises(ValueError):
        data.toy_2d(**kwargs)


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------
def test_digits_partition_is_stratified_and_deterministic():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = torch.as_tensor(bunch.images), torch.as_tensor(bunch.target)
    assert images.shape == (1797, 8, 8)
    tr, te = data.digit_split_indices("train"), data.digit_split_indices("test")
    assert len(tr) + len(te) == 1797 and len(te) == 359
    assert torch.equal(torch.cat([tr, te]).sort().values, torch.arange(1797))
    for c in range(10):
        n_c, n_test = int((labels == c).sum()), int((labels[te] == c).sum())
        assert abs(n_test - 0.2 * n_c) <= 0.5, (c, n_test, n_c)
    x, y = data.digits("test")
    assert torch.equal(x[:, 0].double(), images[te] / 8 - 1) and torch.equal(y, labels[te])
    x2, y2 = data.digits("test")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(data.digit_split_indices("test", seed=1), te)


def test_digits_values_shapes_and_levels():
    for split, n in (("train", 1438), ("test", 359)):
        x, y = data.digits(split)
        assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.long and set(y.tolist()) == set(range(10))
        assert x.min() == -1 and x.max() == 1
        levels = (x + 1) * 8
        assert torch.equal(levels, levels.round()) and len(levels.unique()) == data.DIGIT_LEVELS


def test_digits_test_fraction():
    x, _ = data.digits("test", test_fraction=0.5)
    assert abs(x.shape[0] - 1797 / 2) <= 5  # one rounding per class
    with pytest.raises(ValueError):
        data.digits("valid")
    with pytest.raises(ValueError):
        data.digits("test", test_fraction=1.0)
    with pytest.raises(ValueError):
        data.digits("test", test_fraction=0.001)  # leaves classes without test images


# --------------------------------------------------------------------------------------------------
# get_dataset
# --------------------------------------------------------------------------------------------------
def test_get_dataset_dispatch():
    x, y = data.get_dataset("digits", "test")
    xd, yd = data.digits("test")
    assert torch.equal(x, xd) and torch.equal(y, yd)
    for name in data.DATASETS:
        if name == "mnist":  # tests/test_mnist.py, with the run's shared cache and only where the extra is installed
            continue
        x, y = data.get_dataset(name, "train", n=64, seed=5)
        info = data.dataset_info(name)
        assert tuple(x.shape[1:]) == info["shape"]
        assert (y is None) == (info["num_classes"] is None)
    xtr, _ = data.get_dataset("moons", "train", n=100, seed=5)
    xte, _ = data.get_dataset("moons", "test", n=100, seed=5)
    assert torch.equal(xtr, data.get_dataset("moons", "train", n=100, seed=5)[0])
    assert not torch.equal(xtr, xte)
    assert torch.equal(xtr, data.toy_2d("moons", 100, seed=10))
    for bad in ({"name": "cifar10"}, {"name": "moons", "split": "val"}, {"name": "moons", "seed": -1}):
        with pytest.raises(ValueError):
            data.get_dataset(**bad)
    with pytest.raises(ValueError):
        data.dataset_info("cifar10")


def test_a_mixture_set_draws_the_benchs_exact_mixture():
    """``mixture16``: exact draws of ``gmm-family:d=16,k=4,seed=100``, independent train and test streams."""
    from scoresde.problems import get_problem

    gmm = get_problem(data.MIXTURE_SETS["mixture16"])
    assert data.dataset_info("mixture16") == {"shape": (16,), "num_classes": None}
    x, y = data.get_dataset("mixture16", "train", n=40_000, seed=0)
    t, _ = data.get_dataset("mixture16", "test", n=40_000, seed=0)
    assert y is None and x.shape == (40_000, 16) and x.dtype == torch.float32 and not torch.equal(x, t)
    mean = (gmm.weights[:, None] * gmm.means).sum(0) / gmm.weights.sum()
    assert torch.equal(x, data.get_dataset("mixture16", "train", n=40_000, seed=0)[0])
    # each coordinate's standard deviation is below 0.94, so 6 standard errors of the mean are below 0.03
    assert float((x.double().mean(0) - mean).abs().max()) < 0.03
    with pytest.raises(ValueError, match="unknown set"):
        data.mixture_set("mixture3", 10, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        data.mixture_set("mixture16", 0, seed=0)
