"""The recipes table (issue 32): one source for `scoresde train`'s defaults, the docs' figures and learned.py."""

from pathlib import Path

import pytest

from scoresde import data as data_mod
from scoresde import precision
from scoresde.train import TrainConfig
from scoresde.train.recipes import RECIPES, recipe


@pytest.mark.parametrize("name", data_mod.TOY_SETS)
def test_every_2d_set_gets_the_measured_2d_recipe_for_itself(name, monkeypatch):
    monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: True)
    cfg = recipe(name).config()
    assert cfg.data == name
    for key, value in RECIPES["2d"].settings.items():
        assert getattr(cfg, key) == value, key
    # the figure's settings, written out, not TrainConfig's small defaults
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.model["fourier_features"]) == (6000, 1024, 2e-3, 256)
    assert (TrainConfig().steps, TrainConfig().batch_size) == (2000, 128)


def test_digits_with_and_without_labels_and_the_errors():
    assert recipe("digits").config().clusters == 20 and not recipe("digits").config().class_conditional
    cond = recipe("digits", class_conditional=True).config()
    assert cond.class_conditional and cond.p_uncond == 0.1 and cond.clusters == 0
    with pytest.raises(ValueError, match="'moons' has no labels"):
        recipe("moons", class_conditional=True)


def test_mnist_is_one_class_conditional_network_on_patches():
    cfg = recipe("mnist").config()
    assert recipe("mnist", class_conditional=True) is recipe("mnist") is RECIPES["mnist"]
    assert cfg.data == "mnist" and cfg.class_conditional and cfg.p_uncond == 0.1
    assert cfg.model["patch_size"] == 2 and cfg.model_config()["num_classes"] == 10
    assert "--label prior" in RECIPES["mnist"].sample_hint


def test_a_set_without_a_recipe_is_refused_naming_those_with_one(monkeypatch):
    monkeypatch.setattr(data_mod, "TOY_SETS", ("moons",))
    with pytest.raises(
        ValueError, match="no measured recipe for data 'rings' yet; recipes exist for moons, mixture16, digits, mni"
    ):
        recipe("rings")


def test_a_mixture_set_trains_the_2d_network_on_its_own_width():
    cfg = recipe("mixture16").config()
    assert cfg.data == "mixture16" and cfg.model["arch"] == "mlp" and cfg.model_config()["dim"] == 16
    assert (cfg.steps, cfg.batch_size, cfg.prediction) == (RECIPES["2d"].settings["steps"], 1024, "v")
    assert "--method unipc" in RECIPES["mixture"].sample_hint and "eta_sigma_max=0.3" in RECIPES["mixture"].sample_hint
    with pytest.raises(ValueError, match="has no labels"):
        recipe("mixture16", class_conditional=True)


def test_overrides_win_and_bfloat16_falls_back_where_it_is_slow(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: False)
    assert recipe("checkerboard").config().dtype == "float32"
    assert recipe("checkerboard").config(dtype="bfloat16").dtype == "bfloat16"  # asked for: the user's choice
    monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: True)
    cfg = recipe("checkerboard").config(steps=10, lr=1e-3)
    assert (cfg.steps, cfg.lr, cfg.batch_size, cfg.dtype) == (10, 1e-3, 1024, "bfloat16")


def test_expected_time_comes_from_the_measured_throughput(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: True)
    r = recipe("checkerboard")
    cfg = r.config()
    assert r.expected_seconds(cfg, 2) == pytest.approx(6000 * 1024 / 49_652)
    assert r.expected_seconds(cfg, 8) == r.expected_seconds(cfg, 2)  # measured on 2 cores: no extrapolation upwards
    assert r.expected_seconds(r.config(batch_size=64), 2) is None  # not what was measured: no figure invented
    text = r.describe(cfg, 2)
    assert "6000 steps of batch 1024" in text and "about 2 min on 2 idle threads" in text and "1.34x" in text


def test_benchmarks_learned_trains_the_table_itself(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import learned

    assert learned.FULL["2d"] == recipe("checkerboard").settings
    assert learned.FULL["digits-uncond"] is RECIPES["digits"].settings
    assert learned.FULL["digits"] is RECIPES["digits-class"].settings
    assert learned.FULL["mnist"] is RECIPES["mnist"].settings
