"""``tools/notebooks.py`` (the docs build's notebook executor) for the tests, and the folder this run executes into.

The notebook tests and the docs-build test share one folder per test run (under pytest-xdist, the workers' common
base), so each notebook is executed once per run, by whichever test gets to it first.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_NAME = "scoresde_tools_notebooks"


def tools():
    """The module ``tools/notebooks.py``, loaded once per process."""
    if _NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(_NAME, ROOT / "tools" / "notebooks.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_NAME]


def run_build_dir(tmp_path_factory) -> Path:
    """This test run's folder of executed notebooks: one per run, shared by pytest-xdist's workers."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' basetemps are popen-gw0, popen-gw1, ... in one folder of the run
    path = base / "executed-notebooks"
    path.mkdir(exist_ok=True)
    return path
