"""``--plugin``: import a user's Python file (or module) before a command runs, so the solvers it registers
(``@scoresde.solvers.register``) are methods of that command like the built-in ones.

``scoresde bench --plugin my_solver.py --methods my-solver,dpm++2m`` is how a solver written outside the package
is benchmarked (docs/guides/writing-a-solver.md). Under torchrun every process imports the plugin.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

__all__ = ["add_plugin_argument", "load_plugins"]


def add_plugin_argument(parser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        metavar="FILE.py|MODULE",
        help="a Python file or importable module to import first (repeatable): the solvers it registers with "
        "@scoresde.solvers.register can be named like the built-in methods (default: none)",
    )


def load_plugins(plugins: list[str] | None) -> None:
    """Import each plugin: a path to a ``.py`` file (imported as a module named after the file, kept in
    ``sys.modules``) or a module name on ``sys.path``. A missing plugin or one whose import fails is a
    ``ValueError`` naming it, the exception and the plugin's line where it was raised."""
    for plugin in plugins or ():
        path = Path(plugin)
        if plugin.endswith(".py") and not path.is_file():
            raise ValueError(f"--plugin: no such file {plugin!r}")
        try:
            if path.is_file():
                spec = importlib.util.spec_from_file_location(path.stem, path.resolve())
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module  # before it runs: dataclasses and pickling look the module up
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[path.stem]
                    raise
            else:
                importlib.import_module(plugin)
        except Exception as err:
            raise ValueError(_failed(plugin, err)) from err


def _failed(plugin: str, err: Exception) -> str:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).name == Path(plugin).name]
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"--plugin {plugin}: importing it failed{where}: {type(err).__name__}: {err}"
