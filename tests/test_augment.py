"""EDM's non-leaking augmentations (scoresde.augment): what each label says was done is what was done, each
transformation's frequency, the U-Net's augmentation input, and training with them (config, resume, CLI)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tiny import TINY_UNET

from scoresde import checkpoint as ck
from scoresde.augment import AUGMENT_DIM, augment_images
from scoresde.cli import main
from scoresde.loss import denoising_loss
from scoresde.models import build_model
from scoresde.sde import VPSDE
from scoresde.train import TrainConfig, load_score, train
from scoresde.train.config import upgrade_saved_config


def _by_hand(img: np.ndarray, label: np.ndarray) -> np.ndarray:
    """One image (C, H, W) transformed as ``label`` says, with numpy: flip, quarter turns, reflected shift."""
    flip, s, c1, dx, dy = label
    W = img.shape[-1]
    out = img[..., ::-1] if flip else img
    k = {(0, 0): 0, (1, -1): 1, (0, -2): 2, (-1, -1): 3}[(round(s), round(c1))]
    out = np.rot90(out, k, axes=(-2, -1))
    dx, dy = round(dx * W), round(dy * W)
    m = abs(dx) + abs(dy) + 1
    padded = np.pad(out, ((0, 0), (m, m), (m, m)), mode="reflect")
    return padded[:, m - dy : m - dy + W, m - dx : m - dx + W]


def test_each_label_says_what_was_done():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, 8, 8, generator=g)
    y, a = augment_images(x, 0.5, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and a.shape == (400, AUGMENT_DIM)
    for i in range(400):
        np.testing.assert_array_equal(y[i].numpy(), _by_hand(x[i].numpy(), a[i].numpy()))
    untouched = a.abs().sum(1) == 0
    assert torch.equal(y[untouched], x[untouched])
    # a 16 x 16 image shifts by up to 2 pixels (EDM's translate_frac 1/8)
    x16 = torch.randn(300, 1, 16, 16, generator=g)
    y16, a16 = augment_images(x16, 1.0, torch.Generator().manual_seed(2))
    assert set((a16[:, 3:] * 16).round().unique().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    for i in range(0, 300, 7):
        np.testing.assert_array_equal(y16[i].numpy(), _by_hand(x16[i].numpy(), a16[i].numpy()))


def test_each_transformation_has_its_probability_and_uniform_parameters():
    n, p = 40_000, 0.3
    x = torch.zeros(n, 1, 8, 8)
    _, a = augment_images(x, p, torch.Generator().manual_seed(3))
    tol = 5 * math.sqrt(p * (1 - p) / n)  # five binomial standard deviations
    flipped = a[:, 0] == 1
    turned = (a[:, 1] != 0) | (a[:, 2] != 0)
    shifted = (a[:, 3] != 0) | (a[:, 4] != 0)
    for hit in (flipped, turned, shifted):
        assert abs(hit.double().mean().item() - p) < tol
    # independent of one another: P(flip and turn) = p^2
    assert abs((flipped & turned).double().mean().item() - p * p) < 5 * math.sqrt(p * p / n)
    # the quarter turns uniform over {1, 2, 3}; the offsets uniform over the 8 non-zero ones of {-1, 0, 1}^2
    turns = torch.stack([a[turned, 1], a[turned, 2]], 1).unique(dim=0, return_counts=True)[1].double()
    offsets = (a[shifted, 3:] * 8).round().unique(dim=0, return_counts=True)
    assert len(turns) == 3 and len(offsets[1]) == 8 and not (offsets[0] == 0).all(1).any()
    for counts, k in ((turns, 3), (offsets[1].double(), 8)):
        m = counts.sum()
        assert ((counts / m - 1 / k).abs() < 5 * math.sqrt((1 / k) * (1 - 1 / k) / m)).all()


def test_draws_are_seeded_and_their_number_fixed():
    x = torch.randn(64, 1, 8, 8)
    one, a1 = augment_images(x, 0.4, torch.Generator().manual_seed(5))
    two, a2 = augment_images(x, 0.4, torch.Generator().manual_seed(5))
    assert torch.equal(one, two) and torch.equal(a1, a2)
    # the generator advances by the same draws whatever p is (so a run's later noise does not depend on it)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    augment_images(x, 0.1, g1)
    augment_images(x, 0.9, g2)
    assert torch.equal(g1.get_state(), g2.get_state())
    same, zero = augment_images(x, 0.0)
    assert same is x and not zero.any()


@pytest.mark.parametrize(
    "x, p, match",
    [
        (torch.randn(4, 8, 8), 0.5, r"shape \(batch, C, H, W\)"),
        (torch.zeros(4, 1, 8, 8, dtype=torch.long), 0.5, "floating"),
        (torch.randn(4, 1, 8, 8), 1.5, r"probability in \[0, 1\]"),
        (torch.randn(4, 1, 8, 8), -0.1, r"probability in \[0, 1\]"),
        (torch.randn(4, 1, 8, 6), 0.5, "square images"),
    ],
)
def test_bad_input_is_refused(x, p, match):
    with pytest.raises(ValueError, match=match):
        augment_images(x, p)


def test_unet_takes_augmentation_labels_and_zero_means_none():
    torch.manual_seed(0)
    net = build_model({**TINY_UNET, "augment_dim": AUGMENT_DIM, "num_classes": 3})
    for p in net.parameters():  # the output layer starts at zero: give every weight a value
        torch.nn.init.normal_(p, std=0.3)
    x, t, y = torch.randn(5, 1, 8, 8), torch.rand(5), torch.tensor([0, 1, 2, 3, 0])
    a = torch.randn(5, AUGMENT_DIM)
    assert torch.equal(net(x, t, y), net(x, t, y, torch.zeros(5, AUGMENT_DIM)))
    assert not torch.allclose(net(x, t, y), net(x, t, y, a))
    # the saved config rebuilds it; a U-Net without the option keeps its old config and refuses labels
    assert build_model(net.config).config == net.config and net.config["augment_dim"] == AUGMENT_DIM
    plain = build_model(TINY_UNET)
    assert "augment_dim" not in plain.config
    with pytest.raises(ValueError, match="built without augment_dim"):
        plain(x, t, None, a)
    with pytest.raises(ValueError, match=r"must have shape \(5, 5\)"):
        net(x, t, y, a[:, :3])
    with pytest.raises(ValueError, match="augment_dim must be a non-negative integer"):
        build_model({**TINY_UNET, "augment_dim": -1})
    # the loss hands the labels to the network
    seen = []

    def model(x_t, t_, y_=None, aug=None):
        seen.append(aug)
        return torch.zeros_like(x_t)

    denoising_loss(model, VPSDE(), x, augment=a, generator=torch.Generator().manual_seed(0))
    assert seen[-1] is a
    with pytest.raises(ValueError, match=r"augment must be a tensor of shape \(5, k\)"):
        denoising_loss(model, VPSDE(), x, augment=a[:2])


def test_config_checks_and_old_configs():
    cfg = TrainConfig(data="digits", model=TINY_UNET, augment=0.15)
    assert cfg.model_config()["augment_dim"] == AUGMENT_DIM
    assert "augment_dim" not in TrainConfig(data="digits", model=TINY_UNET).model_config()
    for kw, match in [
        (dict(data="moons", augment=0.1), "augment must be 0 for 'moons'"),
        (dict(data="digits", model={"arch": "mlp"}, augment=0.1), "augment must be 0 for 'digits'"),
        (dict(data="digits", augment=1.2), "augment"),
        (dict(data="digits", augment=-0.1), "augment"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kw)
    old = TrainConfig(data="digits").to_dict()
    del old["augment"]  # saved before the option: no augmentation
    assert upgrade_saved_config(old)["augment"] == 0.0


def test_augmented_run_resumes_bit_for_bit_and_samples_unaugmented(tmp_path):
    base = dict(data="digits", model=TINY_UNET, augment=0.3, batch_size=16, warmup=4, plots=False)
    straight = TrainConfig(**base, steps=8, ckpt_every=100, out=str(tmp_path / "straight"))
    train(straight, progress=False)
    split = straight.replace(steps=4, out=str(tmp_path / "split"))
    train(split, progress=False)
    train(split.replace(steps=8), resume=True, progress=False)
    a, b = ck.load_checkpoint(straight.out), ck.load_checkpoint(split.out)
    assert a.extra["losses"] == b.extra["losses"]
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]) and torch.equal(a.ema[k], b.ema[k]), k
    # the same run without augmentation trains on other batches: the option is not a no-op
    plain = TrainConfig(**{**base, "augment": 0.0}, steps=8, ckpt_every=100, out=str(tmp_path / "plain"))
    train(plain, progress=False)
    assert ck.load_checkpoint(plain.out).extra["losses"] != a.extra["losses"]
    # sampling calls the network without labels, which is the zero label
    score, _, cfg, net = load_score(straight.out)
    assert cfg.augment == 0.3 and net.augment_dim == AUGMENT_DIM and net.augment_embed.weight.abs().sum() > 0
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5)
    assert torch.equal(net(x, t), net(x, t, None, torch.zeros(3, AUGMENT_DIM)))
    assert torch.isfinite(score(x, t)).all()


def test_cli_flag(tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"data": "digits", "model": TINY_UNET, "batch_size": 8, "warmup": 1}))
    argv = ["train", "--config", str(cfg), "--steps", "2", "--augment", "0.25", "--no-plots", "--out", str(out)]
    assert main(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["augment"] == 0.25 and saved["model"] == TINY_UNET
    assert ck.load_checkpoint(out).config["augment"] == 0.25
    assert main(["train", "--data", "moons", "--steps", "1", "--augment", "0.2", "--out", str(tmp_path / "m")]) != 0
