"""Models that ship inside the package (issue 31, part 4): the export that makes one from a training run, the name
that finds one, and the shipped MNIST model itself, checked for what it must do without training anything."""

from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde.checkpoint import CheckpointError, load_checkpoint
from scoresde.names import SHIPPED_MODELS
from scoresde.train import TrainConfig, load_score, train
from scoresde.train.shipped import SHIPPED, export_checkpoint, resolve_checkpoint, shipped_checkpoint


def _samples(run, **kw):
    score, sde, _, _ = load_score(run, y=torch.arange(6) % 10, **kw)
    return sd.sample(score, sde, (6, 1, 8, 8), method="dpm++2m", steps=4, seed=3).x


def test_export_keeps_the_ema_weights_in_float16_and_nothing_else(digits_ckpt, tmp_path):
    path = export_checkpoint(digits_ckpt, tmp_path / "exp")
    src, exp = load_checkpoint(digits_ckpt), load_checkpoint(tmp_path / "exp")
    assert exp.ema is None and exp.optimizer is None and exp.rng_state == {}
    assert set(exp.model) == set(src.ema) and all(v.dtype == torch.float16 for v in exp.model.values())
    assert all(torch.equal(exp.model[k], src.ema[k].half()) for k in src.ema)
    assert exp.extra["export"] == {
        "weights": "ema",
        "dtype": "float16",
        "source_step": src.step,
        "source_sha256": src.sidecar["sha256"],
    }
    assert exp.extra["label_counts"] == src.extra["label_counts"] and exp.config == src.config
    assert path.stat().st_size < (Path(digits_ckpt) / src.sidecar["file"]).stat().st_size / 5
    # the samples of the float16 weights, computed in float32, are the EMA model's to float16's rounding
    assert torch.allclose(_samples(tmp_path / "exp"), _samples(digits_ckpt), atol=5e-3)


def test_export_refusals(digits_ckpt, tmp_path):
    export_checkpoint(digits_ckpt, tmp_path / "exp")
    with pytest.raises(ValueError, match="already holds a checkpoint; export into a new folder"):
        export_checkpoint(digits_ckpt, tmp_path / "exp")
    with pytest.raises(ValueError, match="is an export already"):
        export_checkpoint(tmp_path / "exp", tmp_path / "again")
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_checkpoint(digits_ckpt, tmp_path / "x", dtype="int8")
    with pytest.raises(CheckpointError, match="holds its EMA weights only \\(use ema=True\\)"):
        load_score(tmp_path / "exp", ema=False)
    cfg = TrainConfig.from_saved(Path(digits_ckpt) / "config.json").replace(out=str(tmp_path / "exp"), steps=5)
    with pytest.raises(CheckpointError, match="holds no EMA weights to restore"):
        train(cfg, resume=True, progress=False)


def test_a_folder_wins_over_a_shipped_name(digits_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("mnist") == shipped_checkpoint("mnist")
    export_checkpoint(digits_ckpt, tmp_path / "mnist")  # a run of the user's own called "mnist"
    assert resolve_checkpoint("mnist") == Path("mnist")
    assert resolve_checkpoint("elsewhere") == Path("elsewhere")  # neither: loading it says what is missing
    with pytest.raises(CheckpointError, match="directory elsewhere does not exist"):
        load_score("elsewhere")
    with pytest.raises(ValueError, match="no shipped model 'cifar'; the package ships mnist"):
        shipped_checkpoint("cifar")


def test_the_shipped_mnist_model_is_small_verified_and_conditional():
    """At most about 8 MB (issue 31), its hashes checked on load, a class-conditional MNIST network of the recipe."""
    run = shipped_checkpoint("mnist")
    assert tuple(SHIPPED) == SHIPPED_MODELS == ("mnist",)  # names.py lists them for the torch-free command line
    ckpt = load_checkpoint(run)
    size = (run / ckpt.sidecar["file"]).stat().st_size
    assert size <= 8 * 2**20
    assert ckpt.extra["export"]["weights"] == "ema" and len(ckpt.extra["label_counts"]) == 10
    _, sde, cfg, model = load_score("mnist")
    assert cfg.data == "mnist" and cfg.class_conditional and model.num_classes == 10
    for key, value in sd.train.recipe("mnist").settings.items():  # trained by the recipe, every setting of it
        assert getattr(cfg, key) == value, key


def test_the_shipped_files_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["scoresde"]
    pkg = root / "scoresde"
    for path in shipped_checkpoint("mnist").iterdir():
        assert any(path.relative_to(pkg).match(p) for p in patterns), path.name


def test_the_shipped_mnist_model_draws_the_digits_it_is_asked_for(mnist_cache, monkeypatch):
    """Guided (w = 1 in the guidance interval of the recipe) at 20 NFE, three samples per class: the MNIST judge
    reads each as its label (the recipe reaches 0.99 at n = 2,000 and 50 NFE; 29 of 30 leaves room for one)."""
    from scoresde.models.mnist_judge import mnist_accuracy, mnist_classifier

    monkeypatch.setenv("SCORESDE_CACHE", str(mnist_cache))
    y = torch.arange(30) % 10
    score, sde, _, _ = load_score("mnist", y=y, guidance=1.0, guidance_interval=(0.28, 2.0))
    x = sd.sample(score, sde, (30, 1, 28, 28), method="dpm++2m", steps=20, seed=0).x
    assert torch.isfinite(x).all() and x.abs().max() < 1.5
    assert mnist_accuracy(x, y, mnist_classifier()) >= 29 / 30


def test_learned_mnist_is_the_shipped_model_sampled_for_its_data_law(mnist_cache, monkeypatch):
    """``learned:mnist`` in the bench: labels drawn from the training frequencies by sample index (the same labels
    whatever the batch), and an FD far below that of noise-corrupted digits (a coarse check at n = 100)."""
    from scoresde.bench.problems import make_problem
    from scoresde.train import draw_labels

    monkeypatch.setenv("SCORESDE_CACHE", str(mnist_cache))
    prob = make_problem("learned:mnist")
    assert prob.name == "learned:mnist" and prob.metrics == ("fd",) and len(prob.label_counts) == 10
    seen = []
    prob.model.register_forward_hook(lambda m, args, out: seen.append(args[2].clone()))
    score = prob.score(prob.sde)
    x = sd.sample(score, prob.sde, prob.shape(100), method="unipc", steps=10, seed=0).x
    assert all(torch.equal(y, draw_labels(prob.label_counts, 100, 0)) for y in seen)
    fd = prob.quality(x, prob.sde, prob.sde.t_min, seed=7)["fd"]
    real = sd.data.mnist("train")[0][torch.randperm(60_000, generator=torch.Generator().manual_seed(1))[:100]]
    noisy = prob.quality(real + 0.3 * torch.randn_like(real), prob.sde, prob.sde.t_min, seed=7)["fd"]
    assert fd < noisy / 4


def test_the_command_line_samples_the_shipped_model_by_name(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    from scoresde.cli import main

    monkeypatch.chdir(tmp_path)  # no folder called mnist here: the name is the shipped model's
    args = ["sample", "--checkpoint", "mnist", "--n", "4", "--steps", "2", "--label", "prior", "--no-denoise"]
    assert main([*args, "--out", "s", "--save", ".safetensors"]) == 0
    t = load_file("s.safetensors")
    assert t["x"].shape == (4, 1, 28, 28) and torch.isfinite(t["x"]).all()
    assert torch.equal(t["y"], sd.train.draw_labels(shipped_checkpoint("mnist"), 4, 0))
    assert main(["sample", "--checkpoint", "mnsit", "--out", "x"]) == 2
    assert "directory mnsit does not exist (nor is it a shipped model: mnist)" in capsys.readouterr().err
