"""`import scoresde` imports no torch; every public name loads its module on first use and is that module's object,
in every import order (`sd.sample` stays the function though `scoresde/sample.py` is a submodule of that name); the
command line's `--help` and argument errors start without torch. Wall times live in the CHANGELOG, not here."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import scoresde as sd

INIT = Path(sd.__file__)


def _python(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(INIT.parent.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def _json(code: str):
    return json.loads(_python("-c", code).stdout.strip().splitlines()[-1])


def _imported(importtime_stderr: str) -> set[str]:
    """The modules a ``python -X importtime`` run imported, from its stderr."""
    lines = importtime_stderr.splitlines()
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}


def _type_checking_imports() -> dict[str, tuple[str, str | None]]:
    """Public name -> (module, attribute), read from ``__init__.py``'s ``if TYPE_CHECKING:`` block; the attribute
    is None for a submodule that is itself the public name (``from . import data``)."""
    tree = ast.parse(INIT.read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    table = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1, ast.unparse(node)
        for alias in node.names:
            assert alias.asname is None, ast.unparse(node)
            if node.module is None:
                table[alias.name] = (f"scoresde.{alias.name}", None)
            else:
                table[alias.name] = (f"scoresde.{node.module}", alias.name)
    return table


def test_import_scoresde_imports_no_torch():
    got = _json(
        "import json, sys, scoresde as sd\n"
        "before = 'torch' in sys.modules\n"
        "version = sd.__version__\n"
        "names = sorted(dir(sd))\n"
        "after_dir = 'torch' in sys.modules\n"
        "print(json.dumps([before, version, after_dir, 'torch' in sys.modules, sorted(sys.modules)]))\n"
    )
    before, version, after_dir, _, modules = got
    assert before is False and after_dir is False, [m for m in modules if m.startswith("torch")][:5]
    assert version == sd.__version__
    assert not any(m.startswith(("numpy", "scipy")) for m in modules), "import scoresde should import no numpy either"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["train", "--help"],
        ["sample", "--help"],
        ["bench", "--help"],
        ["sample", "--steps", "0"],  # an argument error
        ["sample", "--device", "cuda", "--steps", "0"],  # a device needing torch's check waits for the others
        ["sample", "--device", "gpu!", "--checkpoint", "x"],  # not a device's form: refused without torch
        ["train", "--data", "moons", "--lr", "fast"],
    ],
)
def test_help_and_argument_errors_import_no_torch(argv):
    out = _python("-X", "importtime", "-m", "scoresde", *argv, check=False)
    assert out.returncode in (0, 2), out.stderr[-2000:]
    if out.returncode == 2:  # the error's one line is there, besides the import times
        assert "error:" in out.stderr
    heavy = {m for m in _imported(out.stderr) if m.split(".")[0] in ("torch", "numpy", "torchsde", "torchdiffeq")}
    assert not heavy, sorted(heavy)[:10]


def test_the_device_check_still_runs_after_the_other_flags():
    out = _python("-m", "scoresde", "sample", "--checkpoint", "x", "--device", "cuda:99", check=False)
    assert out.returncode == 2 and "--device" in out.stderr and "accepted: cpu" in out.stderr, out.stderr
    out = _python("-m", "scoresde", "sample", "--checkpoint", "x", "--device", "gpu!", check=False)
    assert out.returncode == 2 and "not a device: 'gpu!'" in out.stderr, out.stderr


def test_the_type_checking_block_lists_every_public_name():
    assert set(_type_checking_imports()) == set(sd.__all__)
    assert len(sd.__all__) == len(set(sd.__all__))


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_every_public_name_is_its_modules_object(order):
    """In a fresh interpreter, each name of ``__all__`` (touched in one order, then the other) is the object of the
    module the TYPE_CHECKING block imports it from, and ``dir`` lists it."""
    table = _type_checking_imports()
    got = _json(
        "import importlib, json, types\n"
        "import scoresde as sd\n"
        f"table = {table!r}\n"
        f"names = list(sd.__all__)[::{1 if order == 'forward' else -1}]\n"
        "bad = []\n"
        "for name in names:\n"
        "    value = getattr(sd, name)\n"
        "    module_name, attribute = table[name]\n"
        "    module = importlib.import_module(module_name)\n"
        "    want = module if attribute is None else getattr(module, attribute)\n"
        "    if value is not want or name not in dir(sd):\n"
        "        bad.append(name)\n"
        "    exec(f'from scoresde import {name} as again', globals())\n"
        "    if again is not want:\n"
        "        bad.append('from scoresde import ' + name)\n"
        "print(json.dumps(bad))\n"
    )
    assert got == []


# Import orders that load `scoresde.sample` (the submodule) before anyone touches `sd.sample` (the function).
ORDERS = {
    "fresh": "import scoresde as sd",
    "the submodule first": "import scoresde.sample\nimport scoresde as sd",
    "importlib first": "import importlib\nimportlib.import_module('scoresde.sample')\nimport scoresde as sd",
    "the solvers first": "from scoresde.solvers import method_info\nimport scoresde as sd",
    "fitted first (imports .sample)": "import scoresde.fitted\nimport scoresde as sd",
    "from-import first": "from scoresde import sample\nimport scoresde as sd\nassert sample is sd.sample",
    "a likelihood name first": "from scoresde import log_likelihood\nimport scoresde as sd",
    "the cli's sampling first": "import scoresde.cli.sampling, scoresde.cli.sample\nimport scoresde as sd",
    "every submodule": "import scoresde.sample, scoresde.likelihood, scoresde.train\nimport scoresde as sd",
}


@pytest.mark.parametrize("prelude", ORDERS.values(), ids=ORDERS.keys())
def test_names_that_are_also_submodules_resolve_as_before(prelude):
    """``sd.sample`` is the function and ``sample`` the name imported, whatever loaded ``scoresde/sample.py``
    first; the submodules that are public names (``train``, ``data``, ``metrics``, ...) and the ones an eager import
    used to leave bound (``likelihood``, ``sde``, ``solvers``, ...) are modules."""
    got = _json(
        prelude + "\n"
        "import json, sys, types\n"
        "import scoresde.sample as m  # `import a.b as m` reads the attribute: the function, as before\n"
        "mods = ('likelihood', 'train', 'data', 'metrics', 'problems', 'models', 'loss', 'sde', 'solvers', 'grids')\n"
        "print(json.dumps({\n"
        "    'sample': sd.sample is sys.modules['scoresde.sample'].sample,\n"
        "    'as': m is sd.sample,\n"
        "    'train.train': callable(sd.train.train) and isinstance(sd.train, types.ModuleType),\n"
        "    'modules': [n for n in mods if getattr(sd, n) is not sys.modules[f'scoresde.{n}']],\n"
        "}))\n"
    )
    assert got == {"sample": True, "as": True, "train.train": True, "modules": []}


def test_a_submodule_bound_by_the_import_system_does_not_replace_the_function():
    import importlib

    sample_mod = importlib.import_module("scoresde.sample")
    setattr(sd, "sample", sample_mod)  # what the import system does when it first loads the submodule  # noqa: B010
    assert sd.sample is sample_mod.sample
    setattr(sd, "metrics", importlib.import_module("scoresde.metrics"))  # noqa: B010  (a module name stays a module)
    assert sd.metrics.__name__ == "scoresde.metrics"


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        sd.no_such_name  # noqa: B018
