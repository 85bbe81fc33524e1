"""`scoresde sample` end to end on tiny trained checkpoints: files written, labels, guidance, inpainting."""

import numpy as np
import torch
from safetensors.torch import load_file

from scoresde.cli import main


def test_class_conditional_grid_and_tensors(digits_ckpt, tmp_path, capsys):
    stem = tmp_path / "s"
    args = ["sample", "--checkpoint", str(digits_ckpt), "--n", "12", "--steps", "3", "--label", "all"]
    rc = main([*args, "--guidance", "2", "--out", str(stem), "--save", ".safetensors", "--save", ".npz"])
    assert rc == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    t = load_file(str(tmp_path / "s.safetensors"))
    assert t["x"].shape == (12, 1, 8, 8) and torch.equal(t["y"], torch.arange(12) % 10)
    assert np.array_equal(np.load(tmp_path / "s.npz")["x"], t["x"].numpy())
    assert "6 NFE" not in capsys.readouterr().out  # guidance doubles the batch, not the NFE: 3 calls


def test_guidance_interval_from_the_command_line(digits_ckpt, tmp_path, capsys):
    """An interval holding every level is plain guidance, one holding none the conditional model; a bad one is
    an argument error."""
    base = ["sample", "--checkpoint", str(digits_ckpt), "--n", "6", "--steps", "3", "--label", "all"]

    def draw(name, *extra):
        assert main([*base, *extra, "--out", str(tmp_path / name), "--save", ".safetensors"]) == 0
        return load_file(str(tmp_path / f"{name}.safetensors"))["x"]

    guided, plain = draw("g", "--guidance", "2"), draw("c")
    assert not torch.equal(guided, plain)
    assert torch.equal(draw("all", "--guidance", "2", "--guidance-interval", "0,inf"), guided)
    assert torch.equal(draw("none", "--guidance", "2", "--guidance-interval", "1e6,1e7"), plain)
    assert main([*base, "--guidance-interval", "3,1", "--out", str(tmp_path / "bad")]) == 2
    assert "0 <= lo < hi" in capsys.readouterr().err


def test_inpainting_keeps_the_known_half(digits_ckpt, tmp_path):
    from scoresde.data import digits

    stem = tmp_path / "inp"
    args = ["sample", "--checkpoint", str(digits_ckpt), "--n", "4", "--steps", "3", "--method", "ddpm"]
    assert main([*args, "--inpaint", "left", "--resample", "2", "--out", str(stem), "--save", ".safetensors"]) == 0
    x = load_file(str(tmp_path / "inp.safetensors"))["x"]
    test, _ = digits("test")
    assert torch.equal(x[..., :4], test[:4, ..., :4])


def test_points_and_method_options(moons_ckpt, tmp_path):
    stem = tmp_path / "m"
    args = ["sample", "--checkpoint", str(moons_ckpt), "--n", "50", "--method", "ddim", "--steps", "4"]
    args += ["--option", "eta=1.0"]
    assert main([*args, "--out", str(stem), "--save", ".npz"]) == 0
    assert np.load(tmp_path / "m.npz")["x"].shape == (50, 2)
    assert (tmp_path / "m.png").exists()


def test_errors_are_reported(moons_ckpt, tmp_path, capsys):
    base = ["sample", "--checkpoint", str(moons_ckpt), "--out", str(tmp_path / "x")]
    assert main([*base, "--method", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main([*base, "--label", "3"]) == 2  # labels for an unconditional model
    assert "unconditional" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_dtype_and_device(moons_ckpt, tmp_path, monkeypatch):
    """``--dtype float64`` samples in float64; ``bfloat16`` keeps a float32 state and runs the network under
    bfloat16 autocast (close to float32, not equal); a CPU run never initialises CUDA (every door to it is watched)."""
    touched = []

    def watch(owner, name):
        real = getattr(owner, name, None)
        if real is not None:
            monkeypatch.setattr(owner, name, lambda *a, **k: touched.append(name) or real(*a, **k))

    watch(torch.cuda, "_lazy_init")
    watch(torch.cuda.random, "_lazy_init")
    watch(torch._C, "_cuda_init")
    base = ["sample", "--checkpoint", str(moons_ckpt), "--n", "64", "--steps", "4", "--device", "cpu", "--save"]
    x = {}
    for dtype in ("float32", "float64", "bfloat16"):
        assert main([*base, ".safetensors", "--dtype", dtype, "--out", str(tmp_path / dtype)]) == 0
        x[dtype] = load_file(str(tmp_path / f"{dtype}.safetensors"))["x"]
    assert x["float32"].dtype == x["bfloat16"].dtype == torch.float32 and x["float64"].dtype == torch.float64
    assert torch.allclose(x["float64"].float(), x["float32"], atol=1e-4)
    diff = (x["bfloat16"] - x["float32"]).abs().max()
    assert 0 < diff < 0.1, diff
    assert not touched and not torch.cuda.is_initialized()


def test_check_frequency_does_not_change_the_samples(moons_ckpt, tmp_path):
    base = ["sample", "--checkpoint", str(moons_ckpt), "--n", "16", "--steps", "3", "--save", ".safetensors"]
    for check in ("step", "call", "end"):
        assert main([*base, "--check", check, "--no-progress", "--out", str(tmp_path / check)]) == 0
    xs = [load_file(str(tmp_path / f"{c}.safetensors"))["x"] for c in ("step", "call", "end")]
    assert torch.equal(xs[0], xs[1]) and torch.equal(xs[0], xs[2])
