"""Score networks, the digit classifier and the Frechet distance.

Networks: the time embedding's closed form, output shapes for odd image sizes, class conditioning with the
null class, gradients reaching every parameter, rebuilding from ``config``, and the exact scores a freshly
initialised (zero-output) network gives through each parameterisation. Classifier: accuracy, bit-identical
retraining, the cache. Frechet distance: closed forms for Gaussians and its sampling error.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import scoresde as sd
from scoresde import data
from scoresde.metrics import frechet_distance, gaussian_frechet
from scoresde.models import MLP, SinusoidalEmbedding, UNet, build_model, count_parameters
from scoresde.models import classifier as clf_mod

F64 = torch.float64
SMALL_UNET = {"base_channels": 8, "channel_mults": (1, 2, 2), "num_res_blocks": 1, "num_heads": 2, "groups": 4}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randomise_zero_init(model, seed=0):
    """The output layers start at exactly zero; give them random weights so outputs depend on the inputs."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


# --------------------------------------------------------------------------------------------------
# time embedding
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 7, 64])
def test_sinusoidal_embedding_closed_form(dim):
    emb = SinusoidalEmbedding(dim)
    t = torch.tensor([0.0, 1e-3, 0.37, 1.0])
    e = emb(t)
    assert e.shape == (4, dim)
    half = dim // 2
    k = torch.arange(half, dtype=F64)
    args = 1000 * t.double()[:, None] * 10000 ** (-k / half)
    torch.testing.assert_close(e[:, :half].double(), torch.cos(args), rtol=0, atol=1e-6)
    torch.testing.assert_close(e[:, half : 2 * half].double(), torch.sin(args), rtol=0, atol=1e-6)
    if dim % 2:
        assert (e[:, -1] == 0).all()
    # cos^2 + sin^2 = 1 per frequency: every embedding has norm sqrt(dim // 2)
    torch.testing.assert_close(e.norm(dim=1), torch.full((4,), math.sqrt(half)), rtol=1e-6, atol=0)


def test_sinusoidal_embedding_separates_times():
    """Times 1e-3 apart (one DDPM step) differ by at least the lowest-index frequency's chord
    ``sqrt(2 - 2 cos(1000 * 1e-3))`` = 0.96; no two grid times collide."""
    e = SinusoidalEmbedding(128)(torch.linspace(0, 1, 1001)).double()
    d = torch.cdist(e, e) + torch.eye(1001, dtype=F64) * 1e9
    assert float(d.min()) >= math.sqrt(2 - 2 * math.cos(1.0)) - 1e-4
    with pytest.raises(ValueError):
        SinusoidalEmbedding(128)(torch.zeros(4, 1))
    with pytest.raises(ValueError):
        SinusoidalEmbedding(1)


# --------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2,), (3,), (2, 3)])
def test_mlp_shapes(shape):
    dim = math.prod(shape)
    net = randomise_zero_init(MLP(dim=dim, width=32, num_blocks=2))
    x = torch.randn(5, *shape, generator=gen(0))
    out = net(x, torch.rand(5, generator=gen(1)))
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(net(x, torch.tensor(0.5)), net(x, torch.full((5,), 0.5)))  # a scalar t broadcasts
    with pytest.raises(ValueError):
        net(torch.randn(5, dim + 1), torch.rand(5))
    with pytest.raises(ValueError):
        net(x, torch.rand(4))


@pytest.mark.parametrize("size", [(7, 7), (9, 9), (8, 8), (16, 16), (5, 11), (1, 1)])
@pytest.mark.parametrize("channels", [1, 3])
def test_unet_output_shape_for_any_size(size, channels):
    net = randomise_zero_init(UNet(in_channels=channels, **SMALL_UNET))
    x = torch.randn(2, channels, *size, generator=gen(0))
    out = net(x, torch.rand(2, generator=gen(1)))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "kw", [{"channel_mults": (1,)}, {"attention": False}, {"channel_mults": (1, 2, 2, 2), "num_res_blocks": 2}]
)
def test_unet_variants(kw):
    net = randomise_zero_init(UNet(**{**SMALL_UNET, **kw}))
    x = torch.randn(2, 1, 9, 9, generator=gen(0))
    assert net(x, torch.rand(2, generator=gen(1))).shape == x.shape


def test_fresh_networks_output_zero_and_the_parameterisations_turn_that_into_exact_scores():
    """The zero-initialised output layer makes a fresh network predict 0, so through the parameterisation
    classes: eps = 0 gives score 0; x0 = 0 gives score = -(x - 0) / sigma^2; v = 0 gives eps = sigma x
    (VP: alpha^2 + sigma^2 = 1), score = -x. This checks the wiring model(x, t, y) -> Score end to end."""
    sde = sd.VPSDE()
    net = UNet(num_classes=10, **SMALL_UNET)
    y = torch.arange(4)
    x = torch.randn(4, 1, 8, 8, generator=gen(0))
    t = torch.tensor([0.1, 0.3, 0.6, 0.9])

    def model(x, t):
        return net(x, t, y)

    sigma = sde.marginal_std(t)[:, None, None, None]
    assert (sd.EpsilonScore(model, sde).score(x, t) == 0).all()
    torch.testing.assert_close(sd.DataScore(model, sde).score(x, t), -x / sigma**2)
    torch.testing.assert_close(sd.VScore(model, sde).score(x, t), -x, rtol=1e-5, atol=1e-5)
    mlp = MLP()
    assert (mlp(torch.randn(3, 2), torch.rand(3)) == 0).all()


def test_default_sizes():
    """The design targets: the default digits U-Net has 0.5-2M parameters."""
    assert 500_000 <= count_parameters(UNet()) <= 2_000_000
    assert count_parameters(MLP()) < 2_000_000
    assert count_parameters(UNet(), trainable_only=False) == sum(p.numel() for p in UNet().parameters())


def test_float64():
    net = randomise_zero_init(UNet(**SMALL_UNET)).double()
    out = net(torch.randn(2, 1, 7, 7, dtype=F64), torch.rand(2, dtype=F64))
    assert out.dtype == F64
    mlp = randomise_zero_init(MLP(width=16, num_blocks=1)).double()
    assert mlp(torch.randn(2, 2, dtype=F64), torch.rand(2, dtype=F64)).dtype == F64


# --------------------------------------------------------------------------------------------------
# conditioning
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_class_conditioning_and_null_class(arch):
    num_classes = 3
    if arch == "mlp":
        net, x = MLP(width=32, num_blocks=2, num_classes=num_classes), torch.randn(4, 2, generator=gen(0))
    else:
        net, x = UNet(num_classes=num_classes, **SMALL_UNET), torch.randn(4, 1, 7, 7, generator=gen(0))
    net = randomise_zero_init(net).eval()
    t = torch.full((4,), 0.4)
    y = torch.tensor([0, 1, 2, 3])  # 3 = the null class
    out = net(x, t, y)
    x_same = x[:1].expand(4, *x.shape[1:])
    per_label = net(x_same, t, y)
    for i in range(4):  # the same input under each label: four different outputs
        for j in range(i):
            assert not torch.allclose(per_label[i], per_label[j])
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((4,), num_classes)))  # y=None is the null class
    y2 = y.clone()
    y2[1] = 0  # changing one sample's label changes that sample's output only
    out2 = net(x, t, y2)
    assert not torch.allclose(out2[1], out[1])
    torch.testing.assert_close(out2[[0, 2, 3]], out[[0, 2, 3]])
    assert not torch.allclose(net(x, torch.full((4,), 0.8), y), out)  # and time matters
    for bad in (torch.tensor([0, 1, 2, 4]), torch.tensor([-1, 0, 0, 0]), y.float(), y[:3]):
        with pytest.raises(ValueError):
            net(x, t, bad)


@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_unconditional_models_take_only_y_none(arch):
    net = MLP(width=16, num_blocks=1) if arch == "mlp" else UNet(**SMALL_UNET)
    x = torch.randn(2, 2) if arch == "mlp" else torch.randn(2, 1, 8, 8)
    assert net(x, torch.rand(2)).shape == x.shape
    with pytest.raises(ValueError, match="unconditional"):
        net(x, torch.rand(2), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_gradients_reach_every_parameter(arch):
    if arch == "mlp":
        net, x = MLP(width=32, num_blocks=2, num_classes=3, dropout=0.1), torch.randn(8, 2, generator=gen(0))
    else:
        net, x = UNet(num_classes=3, dropout=0.1, **SMALL_UNET), torch.randn(8, 1, 9, 9, generator=gen(0))
    net = randomise_zero_init(net).train()
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    net(x, torch.rand(8, generator=gen(1)), y).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------------------------------
# config round trip and argument checks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "net",
    [
        lambda: MLP(dim=3, width=32, num_blocks=2, num_classes=4),
        lambda: MLP(dim=3, width=32, num_blocks=2, fourier_features=8, fourier_scale=2.0),
        lambda: UNet(in_channels=3, num_classes=10, **SMALL_UNET),
        lambda: UNet(**SMALL_UNET),
    ],
)
def test_build_model_round_trip(net):
    net = randomise_zero_init(net()).eval()
    config = json.loads(json.dumps(net.config))  # JSON-serialisable
    rebuilt = build_model(config)
    assert type(rebuilt) is type(net) and rebuilt.config == net.config
    rebuilt.load_state_dict(net.state_dict())
    rebuilt.eval()
    shape = (4, 3) if config["arch"] == "mlp" else (4, config["in_channels"], 7, 9)
    x, t = torch.randn(shape, generator=gen(0)), torch.rand(4, generator=gen(1))
    y = None if config["num_classes"] is None else torch.tensor([0, 1, 2, 3])
    assert torch.equal(net(x, t, y), rebuilt(x, t, y))


@pytest.mark.parametrize(
    "config",
    [
        {"width": 32},
        {"arch": "transformer"},
        {"arch": "mlp", "depth": 3},
        {"arch": "unet", "channel_mults": []},
        {"arch": "unet", "base_channels": 8, "num_heads": 3},
        {"arch": "unet", "dropout": 1.0},
        {"arch": "mlp", "num_classes": 0},
        {"arch": "mlp", "width": 0},
        {"arch": "mlp", "fourier_features": -1},
        {"arch": "mlp", "fourier_features": 4, "fourier_scale": 0.0},
    ],
)
def test_bad_configs(config):
    with pytest.raises(ValueError):
        build_model(config)


def test_unet_on_patches_is_the_plain_unet_on_unshuffled_pixels():
    """``patch_size=p``: the levels see each p x p patch as p^2 C channels; the same weights in a plain U-Net of
    p^2 C channels, fed the pixel-unshuffled image, give the pixel-unshuffled output, bit for bit."""
    net = randomise_zero_init(UNet(in_channels=1, patch_size=2, **SMALL_UNET))
    plain = UNet(in_channels=4, **SMALL_UNET)
    plain.load_state_dict(net.state_dict())
    x, t = torch.randn(3, 1, 28, 28, generator=gen(0)), torch.rand(3, generator=gen(1))
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.equal(F.pixel_unshuffle(out, 2), plain(F.pixel_unshuffle(x, 2), t))
    assert net.config["patch_size"] == 2 and "patch_size" not in plain.config  # a config saved before keeps its form
    again = build_model(net.config)
    again.load_state_dict(net.state_dict())
    assert torch.equal(again(x, t), out)
    with pytest.raises(ValueError, match="patch_size=2 must divide the image size, got \\(27, 28\\)"):
        net(torch.randn(1, 1, 27, 28), torch.rand(1))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="patch_size must be a positive integer"):
            UNet(patch_size=bad, **SMALL_UNET)


def test_unet_rejects_wrong_channels():
    with pytest.raises(ValueError, match="channels|shape"):
        UNet(in_channels=1, **SMALL_UNET)(torch.randn(2, 3, 8, 8), torch.rand(2))


# --------------------------------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------------------------------
def spd(d, seed):
    a = torch.randn(d, d, generator=gen(seed), dtype=F64)
    return a @ a.T + 0.5 * torch.eye(d, dtype=F64)


def test_gaussian_frechet_closed_forms():
    d = 4
    ma, mb = torch.randn(d, generator=gen(1), dtype=F64), torch.randn(d, generator=gen(2), dtype=F64)
    # commuting (diagonal) covariances: |ma - mb|^2 + sum (sqrt a_i - sqrt b_i)^2
    a, b = torch.tensor([1.0, 2.0, 0.5, 4.0], dtype=F64), torch.tensor([3.0, 0.2, 0.5, 1.0], dtype=F64)
    expect = float((ma - mb).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert gaussian_frechet(ma, torch.diag(a), mb, torch.diag(b)) == pytest.approx(expect, rel=1e-12)
    # general covariances against scipy's matrix square root, an independent algorithm
    from scipy.linalg import sqrtm

    ca, cb = spd(d, 3), spd(d, 4)
    cross = torch.as_tensor(sqrtm((ca @ cb).numpy()).real)
    expect = float((ma - mb).square().sum() + torch.trace(ca + cb - 2 * cross))
    assert gaussian_frechet(ma, ca, mb, cb) == pytest.approx(expect, rel=1e-10)
    assert gaussian_frechet(ma, ca, mb, cb) == pytest.approx(gaussian_frechet(mb, cb, ma, ca), rel=1e-10)
    assert abs(gaussian_frechet(ma, ca, ma, ca)) < 1e-10 * float(ca.trace())
    # singular covariances stay finite: N(0, diag(1, 0)) vs N(0, diag(0, 1)) is 1 + 1
    e1, e2 = torch.diag(torch.tensor([1.0, 0.0], dtype=F64)), torch.diag(torch.tensor([0.0, 1.0], dtype=F64))
    assert gaussian_frechet(torch.zeros(2), e1, torch.zeros(2), e2) == pytest.approx(2.0, abs=1e-12)
    with pytest.raises(ValueError):
        gaussian_frechet(ma, ca, mb[:3], cb[:3, :3])


def test_frechet_distance_of_samples_matches_the_closed_form():
    """n = 50,000 draws of two 3-D Gaussians. Over 20 seeds the estimate had std 0.112 around the exact 17.31
    (bias -0.03); a single seed must land within 4 of those standard deviations."""
    d, n = 3, 50_000
    ma, mb = torch.randn(d, generator=gen(5), dtype=F64), torch.randn(d, generator=gen(6), dtype=F64)
    ca, cb = spd(d, 7), spd(d, 8)
    g = gen(9)
    a = ma + torch.randn(n, d, generator=g, dtype=F64) @ torch.linalg.cholesky(ca).T
    b = mb + torch.randn(n, d, generator=g, dtype=F64) @ torch.linalg.cholesky(cb).T
    exact = gaussian_frechet(ma, ca, mb, cb)
    assert frechet_distance(a, b) == pytest.approx(exact, abs=4 * 0.112)
    assert abs(frechet_distance(a, a)) < 1e-10 * float(ca.trace())
    assert math.isnan(frechet_distance(a.clone().index_fill_(0, torch.tensor([0]), float("nan")), b))
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :2])


# --------------------------------------------------------------------------------------------------
# digit classifier
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return clf_mod.digit_classifier(tmp_path_factory.mktemp("cache"))


def test_classifier_accuracy_and_cache(classifier, tmp_path_factory):
    x, y = data.digits("test")
    acc = clf_mod.digit_accuracy(x, y, classifier)
    assert acc >= 0.95  # measured 0.992
    assert acc == classifier.test_accuracy  # the figure recorded in the cache file
    assert classifier.train_seconds > 0
    assert clf_mod.digit_accuracy(x, (y + 1) % 10, classifier) < 0.05
    assert not any(p.requires_grad for p in classifier.parameters()) and not classifier.training


@pytest.mark.slow
def test_classifier_training_is_deterministic_and_leaves_the_global_rng(classifier, tmp_path):
    state = torch.get_rng_state()
    again = clf_mod.digit_classifier(tmp_path)  # a fresh cache: trains again
    assert torch.equal(torch.get_rng_state(), state)
    assert again is not classifier
    for (k, v), (k2, v2) in zip(classifier.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2), k


def test_classifier_cache_loads_and_replaces_unreadable_files(tmp_path, monkeypatch):
    """The cache logic alone, with training replaced by a counted stand-in."""
    calls = []

    def fake_train(config):
        calls.append(config)
        return randomise_zero_init(clf_mod.DigitClassifier(**config), seed=len(calls))

    monkeypatch.setattr(clf_mod, "_train", fake_train)
    monkeypatch.setattr(clf_mod, "_MEMO", {})
    monkeypatch.setenv("SCORESDE_CACHE", str(tmp_path))
    first = clf_mod.digit_classifier()
    assert len(calls) == 1 and clf_mod.digit_classifier() is first  # memoised
    (path,) = tmp_path.glob("digit_classifier-*.safetensors")
    clf_mod._MEMO.clear()
    loaded = clf_mod.digit_classifier()
    assert len(calls) == 1 and loaded is not first  # read from disk
    for v, w in zip(first.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(v, w)
    assert loaded.test_accuracy == first.test_accuracy
    path.write_bytes(b"not a safetensors file")
    clf_mod._MEMO.clear()
    clf_mod.digit_classifier()
    assert len(calls) == 2  # retrained and rewritten
    clf_mod._MEMO.clear()
    clf_mod.digit_classifier()
    assert len(calls) == 2
    other = clf_mod.digit_classifier(feature_dim=32)  # another configuration has its own file
    assert len(calls) == 3 and other.features(torch.zeros(1, 1, 8, 8)).shape == (1, 32)


def test_digit_fd_floor_and_discrimination(classifier):
    """FD of a set with itself is 0, the floor is small and positive, and structureless digits score far above
    it (measured: floor 1.34 test vs train, 1.94 between train halves; uniform noise 237; each test digit's
    pixels shuffled 128; a single class 327)."""
    x_test, _ = data.digits("test")
    x_train, y_train = data.digits("train")
    # 0 up to the eigen-solver's rounding on the near-singular feature covariance (seen: 1e-6 to 1.4e-6 in
    # magnitude, depending on the thread count); the floor it is compared with is 1.34
    assert abs(clf_mod.digit_fd(x_test, "test", classifier)) < 1e-4
    floor = clf_mod.digit_fd_floor(classifier)
    assert 0 < floor["test_vs_train"] < 5 and 0 < floor["train_halves"] < 5
    # the same pair in the other order: equal up to eigen-solver rounding on the near-singular feature covariances
    # (ReLU features, some never active), measured at 1e-6 relative
    assert clf_mod.digit_fd(x_train, "test", classifier) == pytest.approx(floor["test_vs_train"], rel=1e-5)
    g = gen(0)
    noise = torch.rand(359, 1, 8, 8, generator=g) * 2 - 1
    perm = torch.stack([torch.randperm(64, generator=g) for _ in range(359)])
    shuffled = torch.gather(x_test.flatten(1), 1, perm).reshape(-1, 1, 8, 8)
    for bad in (noise, shuffled, x_train[y_train == 3]):
        assert clf_mod.digit_fd(bad, "test", classifier) > 20 * floor["test_vs_train"]
    assert math.isnan(clf_mod.digit_fd(torch.full((4, 1, 8, 8), float("nan")), "test", classifier))
    with pytest.raises(ValueError):
        clf_mod.digit_fd(torch.zeros(4, 1, 7, 7), "test", classifier)
    with pytest.raises(ValueError):
        clf_mod.digit_fd(x_test, "valid", classifier)


def test_fourier_features_are_sin_cos_of_fixed_random_projections():
    """The input layer sees [x, sin(2 pi x B), cos(2 pi x B)] (Tancik et al. 2020), B ~ N(0, scale^2) a saved buffer."""
    torch.manual_seed(0)
    net = MLP(dim=2, width=16, num_blocks=1, fourier_features=256, fourier_scale=3.0)
    B = net.fourier
    assert B.shape == (2, 256) and "fourier" in net.state_dict() and not B.requires_grad
    assert abs(float(B.std()) - 3.0) < 0.4
    seen = {}
    net.inp.register_forward_pre_hook(lambda mod, inp: seen.update(h=inp[0]))
    x = torch.randn(5, 2, generator=gen(1))
    net(x, torch.rand(5, generator=gen(2)))
    phase = 2 * math.pi * x @ B
    torch.testing.assert_close(seen["h"], torch.cat([x, phase.sin(), phase.cos()], dim=1))
    assert "fourier" not in MLP(dim=2, width=16).state_dict()  # off by default: old checkpoints still load


def test_time_embedding_keeps_float64_off_devices(dtype_trace):
    """On a device (here the meta device, which runs no kernels) no float64 tensor is made: MPS has none."""
    from scoresde.models.embedding import SinusoidalEmbedding

    emb = SinusoidalEmbedding(16)
    with dtype_trace() as mode:
        out = emb(torch.rand(4, device="meta"))
    assert out.shape == (4, 16) and out.dtype == torch.float32
    assert ("meta", torch.float64) not in mode.seen and ("meta", torch.float32) in mode.seen
    with dtype_trace() as mode:  # on the CPU the phases stay float64
        emb(torch.rand(4))
    assert ("cpu", torch.float64) in mode.seen
