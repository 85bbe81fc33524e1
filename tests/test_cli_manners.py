"""Every subcommand turns bad input into one line on stderr naming the flag, exit 2, no traceback, no lost file."""

import subprocess
import sys

import pytest

from scoresde.cli import main


def _usage_error(capsys, argv, flag):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and flag in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", "--data", "moons", "--steps", "0"], "--steps"),
        (["train", "--data", "moons", "--device", "cuda:99"], "--device"),
        (["sample", "--checkpoint", "x", "--n", "0"], "--n"),
        (["sample", "--checkpoint", "x", "--device", "cuda:99"], "--device"),
        (["sample", "--checkpoint", "x", "--device", "nonsense"], "--device"),
        (["sample", "--checkpoint", "x", "--save", "pickle"], "--save"),
        (["sample", "--checkpoint", "x", "--seed", "-1"], "--seed"),
        (["likelihood", "--problem", "ring", "--n", "0"], "--n"),
        (["likelihood", "--problem", "ring", "--trace", "foo"], "--trace"),
        (["likelihood", "--problem", "ring", "--sde", "foo"], "--sde"),
        (["likelihood", "--problem", "ring", "--device", "cuda:99"], "--device"),
        (["bench", "--nfe", "abc"], "invalid comma-separated int value: 'abc'"),
    ],
)
def test_bad_flags_are_one_line_exit_2(capsys, argv, flag):
    _usage_error(capsys, argv, flag)


def test_an_invalid_choice_names_the_flag_and_the_accepted_values(capsys):
    err = _usage_error(capsys, ["likelihood", "--problem", "ring", "--probe", "cauchy"], "--probe")
    assert "--probe must be one of rademacher, gaussian, got 'cauchy'" in err


def test_an_unavailable_device_says_what_is_available(capsys):
    err = _usage_error(capsys, ["likelihood", "--problem", "ring", "--device", "cuda:99"], "--device")
    assert "accepted: cpu" in err


def test_sample_never_overwrites_silently(moons_ckpt, tmp_path, capsys):
    stem = str(tmp_path / "s")
    args = ["sample", "--checkpoint", str(moons_ckpt), "--n", "5", "--steps", "2", "--out", stem]
    assert main(args) == 0
    (tmp_path / "s.png").write_bytes(b"mine")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--force" in err and "\n" not in err
    assert (tmp_path / "s.png").read_bytes() == b"mine"
    assert main([*args, "--force", "--save", "safetensors"]) == 0  # on purpose; the suffix needs no dot
    assert (tmp_path / "s.png").read_bytes() != b"mine" and (tmp_path / "s.safetensors").exists()


def test_sample_checks_out_before_sampling(moons_ckpt, tmp_path, capsys, monkeypatch):
    import importlib

    sample_mod = importlib.import_module("scoresde.sample")

    def never(*a, **k):
        raise AssertionError("sampled before checking --out")

    monkeypatch.setattr(sample_mod, "sample", never)
    (tmp_path / "file").write_text("x")
    assert main(["sample", "--checkpoint", str(moons_ckpt), "--out", str(tmp_path / "file" / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scoresde sample: error: --out:") and "\n" not in err


def test_methods_lists_the_peers(capsys):
    assert main(["methods"]) == 0
    assert "peers (scoresde bench --peers):" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--n", "1"], ["--methods", "nope"], ["--nfe", "0"]])
def test_bench_through_a_subprocess_exits_2_without_traceback(tmp_path, args):
    cmd = [sys.executable, "-m", "scoresde", "bench", "--quick", "--no-progress", "--out", str(tmp_path / "r"), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    err = res.stderr.strip()
    assert res.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"scoresde bench: error: {args[0]}:") and not (tmp_path / "r").exists()


def test_train_checks_out_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    args = ["train", "--data", "moons", "--steps", "2", "--no-progress", "--out", str(tmp_path / "file" / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scoresde train: error: --out: cannot write") and "\n" not in err
