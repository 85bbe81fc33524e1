"""Autoguidance (Karras et al. 2024): a model guided by a weaker version of itself, ``(1 + w) m - w g``, through
:class:`AutoGuided`, ``load_score(..., guide=DIR)`` and ``scoresde sample --guide``; a guide that does not share
the model's data, SDE, parameterisation or labels is refused."""

import pytest
import torch
from safetensors.torch import load_file
from tiny import TINY_UNET

import scoresde as sd
from scoresde.cli import main
from scoresde.shards import load_shards
from scoresde.train import AutoGuided, TrainConfig, load_guide, load_score, train

SMALLER_UNET = {**TINY_UNET, "base_channels": 4, "groups": 2}


def _affine(a: float, b: float):
    calls = []

    def f(x, t):
        calls.append(t.clone())
        return a * x + b * t.view(-1, *[1] * (x.ndim - 1))

    return f, calls


def test_autoguided_extrapolates_from_the_guide_and_only_inside_the_interval():
    """``(1 + w) m - w g`` exactly; ``w = 0`` and times outside the interval call the model alone; per-sample
    times are guided row by row."""
    sde = sd.VPSDE()
    m, m_calls = _affine(2.0, 1.0)
    g, g_calls = _affine(-1.0, 3.0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((5,), 0.5, dtype=torch.float64)
    out = AutoGuided(m, g, 1.5)(x, t)
    torch.testing.assert_close(out, 2.5 * (2 * x + 0.5) - 1.5 * (-x + 1.5), rtol=0, atol=1e-14)
    g_calls.clear()
    torch.testing.assert_close(AutoGuided(m, g, 0.0)(x, t), 2 * x + 0.5, rtol=0, atol=0)
    assert not g_calls
    # sigma / alpha rises with t: the interval (1, inf) holds t = 0.9, not t = 0.05
    lo, hi = (float(sde.marginal_std(torch.tensor(v)) / sde.alpha(torch.tensor(v))) for v in (0.05, 0.9))
    assert lo < 1 < hi
    guided = AutoGuided(m, g, 2.0, interval=(1.0, float("inf")), sde=sde)
    assert torch.equal(guided(x, torch.full((5,), 0.05, dtype=torch.float64)), 2 * x + 0.05) and not g_calls
    t_mixed = torch.tensor([0.05, 0.9, 0.9, 0.05, 0.9], dtype=torch.float64)
    mixed = guided(x, t_mixed)
    want = torch.where((t_mixed > 0.5).view(-1, 1), 3 * m(x, t_mixed) - 2 * g(x, t_mixed), m(x, t_mixed))
    torch.testing.assert_close(mixed, want, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="guidance must be a number >= 0"):
        AutoGuided(m, g, -1.0)
    with pytest.raises(ValueError, match="needs the model's sde"):
        AutoGuided(m, g, 1.0, interval=(0.1, 1.0))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A class-conditional tiny digits model, a smaller one trained shorter (its guide), and guides that differ
    from it in what they were trained on."""
    root = tmp_path_factory.mktemp("autoguidance")
    base = dict(data="digits", class_conditional=True, batch_size=8, warmup=2, plots=False)
    specs = {
        "main": dict(model=TINY_UNET, steps=6),
        "guide": dict(model=SMALLER_UNET, steps=3),
        "eps": dict(model=SMALLER_UNET, steps=3, prediction="eps"),
        "uncond": dict(model=SMALLER_UNET, steps=3, class_conditional=False),
    }
    for name, spec in specs.items():
        cfg = TrainConfig(**{**base, **spec}, ckpt_every=100, out=str(root / name))
        train(cfg, progress=False)
    return root


def test_load_score_with_a_guide_is_the_extrapolation_of_the_two_networks(runs):
    y = torch.tensor([0, 3, 9, 3])
    score, sde, cfg, net = load_score(runs / "main", y=y, guidance=0.7, guide=runs / "guide")
    _, _, _, weak = load_score(runs / "guide")
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 0.4)
    want = 1.7 * net(x, t, y) - 0.7 * weak(x, t, y)
    torch.testing.assert_close(score.model(x, t), want, rtol=0, atol=1e-6)
    # a guide equal to the model leaves it unchanged at any weight
    same, _, _, _ = load_score(runs / "main", y=y, guidance=3.0, guide=runs / "main")
    torch.testing.assert_close(same.model(x, t), net(x, t, y), rtol=0, atol=1e-5)


def test_a_guide_trained_on_something_else_is_refused(runs):
    with pytest.raises(ValueError, match="prediction='eps', the model .* with 'v'"):
        load_guide(runs / "eps", runs / "main")
    with pytest.raises(ValueError, match="class_conditional=False"):
        load_score(runs / "main", y=1, guidance=1.0, guide=runs / "uncond")
    with pytest.raises(sd.CheckpointError):
        load_guide(runs / "nowhere", runs / "main")


def test_cli_samples_with_a_guide_plainly_and_in_shards(runs, tmp_path, capsys):
    """``--guide``: the samples of ``sd.sample`` on ``load_score(..., guide=)``, sharded or not; a shard folder
    keeps the guide's weights in its key, so a run with another guide is refused."""
    args = ["sample", "--checkpoint", str(runs / "main"), "--num-samples", "6", "--steps", "3", "--seed", "2"]
    args += ["--label", "all", "--guidance", "1", "--no-progress"]
    assert main([*args, "--guide", str(runs / "guide"), "--out", str(tmp_path / "p"), "--save", ".safetensors"]) == 0
    shard_args = [*args, "--shard-size", "4", "--out", str(tmp_path / "s")]
    assert main([*shard_args, "--guide", str(runs / "guide")]) == 0
    score, sde, _, _ = load_score(runs / "main", y=torch.arange(6) % 10, guidance=1.0, guide=runs / "guide")
    # scoresde sample's defaults: dpm++2m, ending with the denoising step
    want = sd.sample(score, sde, (6, 1, 8, 8), method="dpm++2m", steps=3, seed=2, denoise=True).x
    torch.testing.assert_close(load_file(str(tmp_path / "p.safetensors"))["x"], want, rtol=0, atol=1e-6)
    torch.testing.assert_close(load_shards(tmp_path / "s")["x"], want, rtol=0, atol=1e-6)
    capsys.readouterr()
    assert main([*shard_args, "--guide", str(runs / "main")]) == 2
    assert "guide" in capsys.readouterr().err
    assert main([*args, "--guide", str(runs / "eps"), "--out", str(tmp_path / "e")]) == 2
    assert "a guide must share the model's data, SDE, prediction and labels" in capsys.readouterr().err
