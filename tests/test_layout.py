"""The package's shape, read from its source (no import): the import graph has no cycle, the floors of
shared/DESIGN.md hold, and no module is over 400 lines nor any function over 80, but the named exceptions.

An import is an edge whether it sits at the top of the module, under ``if TYPE_CHECKING:`` or inside a function:
a lazy import still makes the two modules one unit to read and to change (the cycle cli <-> cli_sample was one
through a function-level import). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg`` (its ``__init__``); importing ``pkg.mod`` adds no edge to ``pkg``'s ``__init__``, which Python runs first
but which is not a dependency one writes.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scoresde"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80

# Over the limits today, each with its reason (none: sde, peers, the training loop and fitted were split).
LONG_MODULES: dict[str, str] = {}
# Code lines without the docstring (none: the U-Net's argument checks moved out of its __init__).
LONG_FUNCTIONS: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


@cache
def _graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its source)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                edges |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reach(start: str) -> set[str]:
    graph, seen, todo = _graph(), set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_import_graph_has_no_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


CORE = ("sde", "param", "noise", "grids", "solvers", "sample", "conditioning", "likelihood")


@pytest.mark.parametrize("core", CORE)
def test_the_sampling_core_never_reaches_training_models_or_the_bench(core):
    """DESIGN.md's floors: the sampling core imports no training, networks or benchmark, even through another
    module."""
    bad = {m for m in _reach(f"scoresde.{core}") if _under(m, "scoresde.train", "scoresde.models", "scoresde.bench")}
    assert not bad, f"scoresde.{core} reaches {sorted(bad)}"


def test_training_never_imports_solvers_or_the_bench_and_metrics_know_no_sampler():
    """Not even through another module (a plot of samples at a checkpoint would be one way in)."""
    for m in [m for m in _graph() if _under(m, "scoresde.train")]:
        bad = {w for w in _reach(m) if _under(w, "scoresde.solvers", "scoresde.bench")}
        assert not bad, f"{m} reaches {sorted(bad)}"
    sampler = ("scoresde.solvers", "scoresde.sample", "scoresde.conditioning", "scoresde.grids", "scoresde.fitted")
    assert not {w for w in _reach("scoresde.metrics") if _under(w, *sampler)}


def test_only_the_adapters_import_the_engines():
    """Only the torchsde adapter imports torchsde; only the ODE solvers and the likelihood import torchdiffeq."""
    seen: dict[str, set[str]] = {"torchsde": set(), "torchdiffeq": set()}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for engine in seen:
                if any(n == engine or n.startswith(engine + ".") for n in names):
                    seen[engine].add(name)
    assert seen["torchsde"] <= {"scoresde.solvers.reverse_sde"}
    # peers/runs.py: the flow-torchdiffeq-* peers run torchdiffeq as a peer library, on the velocity, beside ours
    assert seen["torchdiffeq"] <= {"scoresde.solvers.ode", "scoresde.likelihood", "scoresde.peers.runs"}


def test_no_module_over_400_lines_but_the_named_ones():
    long = {}
    for path in _modules().values():
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long[rel] = lines
    assert set(long) <= set(LONG_MODULES), f"over {MAX_MODULE_LINES} lines: {long}"


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines from its signature to its end, without its docstring (which gives the equation and the
    shapes, as STYLE.md asks, and is no code to read through)."""
    body = node.body
    doc = body[0] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else None
    lines = node.end_lineno - node.lineno + 1
    if doc is not None and isinstance(doc.value.value, str):
        lines -= doc.end_lineno - doc.lineno + 1
    return lines


def test_no_function_over_80_lines_but_the_named_ones():
    long = {}
    for path in _modules().values():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = _code_lines(node)
                if lines > MAX_FUNCTION_LINES:
                    long[f"{rel}::{node.name}"] = lines
    assert set(long) <= set(LONG_FUNCTIONS), f"over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_exceptions_are_still_exceptions():
    """An allow-list entry whose module or function has come under the limit goes: the lists name only what is."""
    present = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in _modules().values()}
    stale = [m for m in LONG_MODULES if present.get(m, 0) <= MAX_MODULE_LINES]
    assert not stale, f"no longer over {MAX_MODULE_LINES} lines (drop them from LONG_MODULES): {stale}"
    longest: dict[str, int] = {}
    for rel in {key.partition("::")[0] for key in LONG_FUNCTIONS} & set(present):
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{rel}::{node.name}"
                longest[key] = max(longest.get(key, 0), _code_lines(node))
    stale = [f for f in LONG_FUNCTIONS if longest.get(f, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"no longer over {MAX_FUNCTION_LINES} lines (drop them from LONG_FUNCTIONS): {stale}"
