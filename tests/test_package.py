"""The package's shape: `import scoresde` stays light, the lazy names resolve, `python -m scoresde` is the CLI."""

import json
import subprocess
import sys

import scoresde as sd

LAZY = ("train", "TrainConfig", "TrainResult", "load_score", "ConditionalModel", "AutoGuided", "CheckpointError")
HEAVY = ("scoresde.train", "scoresde.checkpoint", "scoresde.models", "scoresde.data", "scoresde.loss", "safetensors")


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_import_is_light_and_lazy_names_resolve():
    got = _run(
        "import json, sys\n"
        "import scoresde as sd\n"
        f"heavy = {HEAVY!r}\n"
        "before = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "sd.sample, sd.VPSDE, sd.log_likelihood, sd.inpaint  # the sampling names are there already\n"
        "cfg = sd.TrainConfig(steps=1)\n"
        "names = {n: type(getattr(sd, n)).__name__ for n in sd.__all__}\n"
        "after = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "print(json.dumps({'before': before, 'after': after, 'steps': cfg.steps, 'names': names}))\n"
    )
    assert got["before"] == []
    assert {"scoresde.train", "scoresde.checkpoint", "safetensors"} <= set(got["after"])
    assert got["steps"] == 1
    assert got["names"]["train"] == got["names"]["models"] == got["names"]["data"] == "module"
    assert got["names"]["load_score"] == "function" and got["names"]["CheckpointError"] == "type"


def test_lazy_names_are_the_defining_modules_objects():
    from scoresde import checkpoint, train

    assert sd.train is train and sd.TrainConfig is train.TrainConfig and sd.load_score is train.load_score
    assert sd.ConditionalModel is train.ConditionalModel and sd.TrainResult is train.TrainResult
    assert sd.CheckpointError is checkpoint.CheckpointError
    assert sd.train.train is train.loop.train  # the function, beside its package
    for name in sd.__all__:
        assert getattr(sd, name) is not None and name in dir(sd)
    try:
        sd.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("sd.no_such_name resolved")


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "scoresde", "methods"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ddim" in out.stdout and "dpm++2m" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "scoresde", "no-such-command"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage: scoresde" in bad.stderr
