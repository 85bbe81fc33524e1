"""Issue 32: the command line's defaults are the measured recipes, and no flag is dropped or mislabelled silently."""

import json
import re

import pytest

from scoresde import precision
from scoresde.cli import main
from scoresde.train.recipes import recipe


@pytest.fixture
def fast_bf16(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: True)


def _saved(folder):
    return json.loads((folder / "config.json").read_text())


def test_train_with_only_the_data_trains_its_recipe_and_says_so(tmp_path, capsys, fast_bf16):
    out = tmp_path / "cb"
    args = ["train", "--data", "checkerboard", "--out", str(out), "--no-progress", "--no-plots", "--steps", "2"]
    assert main(args) == 0
    saved, want = _saved(out), recipe("checkerboard").settings
    for key, value in want.items():
        if key != "steps":
            assert saved[key] == value, key  # every recipe value, written out in the run's config
    assert saved["steps"] == 2  # an explicit flag wins
    text = capsys.readouterr().out
    assert "recipe '2d': 2 steps of batch 1024" in text and "the docs report: checkerboard histogram TV" in text
    assert "changed by flags, so the figure above does not apply as is: steps=2 (recipe: 6000)" in text


def test_the_recipe_can_be_turned_off_and_a_config_file_replaces_it(tmp_path, capsys):
    assert main(["train", "--data", "moons", "--recipe", "none", "--steps", "1", "--out", str(tmp_path / "a"),
                 "--no-progress", "--no-plots"]) == 0  # fmt: skip
    assert _saved(tmp_path / "a")["batch_size"] == 128 and "recipe '" not in capsys.readouterr().out
    (tmp_path / "c.json").write_text(json.dumps({"data": "moons", "steps": 1, "batch_size": 8}))
    assert main(["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "b"), "--no-progress",
                 "--no-plots"]) == 0  # fmt: skip
    assert _saved(tmp_path / "b")["batch_size"] == 8 and "recipe '" not in capsys.readouterr().out


def test_class_conditional_digits_get_their_own_recipe(tmp_path, capsys, fast_bf16):
    from scoresde.cli.train import _config

    class Args:  # what argparse gives for `scoresde train --data digits --class-conditional --out X`
        config = None
        resume = False
        recipe = "auto"
        data, class_conditional, out, device = "digits", True, str(tmp_path), None
        model = clusters = cluster_method = augment = prediction = sde = steps = batch_size = lr = seed = None
        t_sampler = weighting = lr_schedule = warmup = ckpt_every = dtype = None
        no_plots = False

    cfg = _config(Args)
    assert cfg.class_conditional and cfg.p_uncond == 0.1 and cfg.model["base_channels"] == 64 and cfg.steps == 8000


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fitted", "F", "--steps", "5"], "--fitted runs its own method, steps and grid: drop --steps"),
        (["--fitted", "F", "--method", "ddim"], "--fitted runs its own method, steps and grid: drop --method"),
        (["--method", "ode-dopri5", "--steps", "10"], "--steps does not apply to the adaptive method 'ode-dopri5'"),
        (["--method", "ddim", "--option", "rtol=1e-3"], "--option: method 'ddim' got unexpected option(s) rtol"),
    ],
)
def test_sample_refuses_flags_it_would_ignore_before_printing_anything(tmp_path, capsys, extra, message):
    stem = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(tmp_path), "--out", str(stem), *extra]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_sample_defaults_to_the_measured_method_with_the_denoising_step_and_says_what_ran(moons_ckpt, tmp_path, capsys):
    stem = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(moons_ckpt), "--n", "20", "--steps", "3", "--out", str(stem),
                 "--no-progress", "--save", ".npz"]) == 0  # fmt: skip
    line = capsys.readouterr().out
    assert "20 samples with dpm++2m (3 steps on its quadratic grid) and one denoising call in 4 NFE" in line
    assert main(["sample", "--checkpoint", str(moons_ckpt), "--n", "20", "--steps", "3", "--out", str(stem) + "b",
                 "--no-progress", "--no-denoise", "--grid", "uniform"]) == 0  # fmt: skip
    assert "with dpm++2m (3 steps on the uniform grid) in 3 NFE" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(moons_ckpt), "--n", "20", "--steps", "3", "--out", str(stem) + "c",
                 "--no-progress", "--no-denoise", "--method", "unipc", "--option", "eta=0.5"]) == 0  # fmt: skip
    assert "with unipc (3 steps on its logsnr grid) in 3 NFE" in capsys.readouterr().out  # stochastic steps' grid


def test_fitted_samples_are_titled_by_the_fitted_solver(moons_ckpt, tmp_path, capsys, monkeypatch):
    import scoresde.plot as plot_mod

    titles = []
    monkeypatch.setattr(plot_mod, "save_points", lambda *a, title=None, **k: titles.append(title))
    fitted = tmp_path / "fit"
    assert main(["fit", "--checkpoint", str(moons_ckpt), "--steps", "3", "--budget", "4000", "--out", str(fitted)]) == 0
    line = capsys.readouterr().out  # the numbers add up: the probe's rows are named
    m = re.search(r"(\d+) model calls on (\d+) samples \+ 1 on the (\d+) fingerprint probe rows = (\d+) sample-", line)
    assert m and int(m[1]) * int(m[2]) + int(m[3]) == int(m[4])
    assert main(["sample", "--checkpoint", str(moons_ckpt), "--fitted", str(fitted), "--n", "16", "--out",
                 str(tmp_path / "s"), "--no-progress"]) == 0  # fmt: skip
    assert titles and titles[0].startswith("fitted ") and "3 steps" in titles[0] and "dpm++2m, 50" not in titles[0]
    assert f"the fitted solver in {fitted}" in capsys.readouterr().out


def test_fields_of_a_2d_model_fit_its_data_and_draw_it(moons_ckpt, tmp_path, capsys, monkeypatch):
    """`fields --checkpoint` on moons drew them in a quarter of the panel (lim 4.5), without axes or the data."""
    import scoresde.plot as plot_mod

    seen = {}
    real = plot_mod.plot_fields

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(plot_mod, "plot_fields", spy)
    out = tmp_path / "f.png"
    assert main(["fields", "--checkpoint", str(moons_ckpt), "--t", "0.5", "--grid-size", "8", "--out", str(out)]) == 0
    assert seen["lim"] < 3.5 and seen["data"].shape == (2000, 2)
    assert "over 2000 training points" in capsys.readouterr().out
    assert main(["fields", "--t", "0.5", "--grid-size", "8", "--out", str(tmp_path / "g.png")]) == 0
    assert seen["lim"] == 4.5 and seen["data"] is None  # the exact ring: its density is drawn instead


def test_every_option_of_every_command_shows_its_default_in_help(capsys):
    """Issue 32: `--help` showed no defaults. An option with a default says it; one without (None, an off flag)
    may not."""
    import argparse

    from scoresde.cli import COMMANDS
    from scoresde.cli.args import DefaultsFormatter, Parser

    for command in COMMANDS:
        p = Parser(prog=f"scoresde {command.NAME}", formatter_class=DefaultsFormatter)
        command.add_arguments(p)
        text = " ".join(p.format_help().split())
        for action in p._actions:
            unset = action.default is None or action.default is False or action.default == []
            if isinstance(action, argparse._HelpAction) or unset:
                continue
            shown = " ".join(p._get_formatter()._expand_help(action).split())
            assert "default" in shown or f"({action.default})" in shown, (command.NAME, action.dest, shown)
            assert shown in text


def test_the_light_data_names_are_the_data_sets():
    from scoresde import data, names

    assert data.DATASETS is names.DATASETS and data.TOY_SETS is names.TOY_SETS
    for name in names.DATASETS:  # every name the command line accepts is a data set the package knows
        assert data.dataset_info(name)["shape"]


def test_a_missing_checkpoint_is_refused_before_torch_is_imported(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from scoresde.cli import main; "
        f"rc = main(['sample', '--checkpoint', {str(tmp_path / 'nowhere')!r}]); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["2", "False"] and "no checkpoint: directory" in done.stderr
