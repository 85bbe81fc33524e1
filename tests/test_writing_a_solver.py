"""The worked example of docs/guides/writing-a-solver.md, taken from the guide's own text and run as the guide says.

Its solver block (the one that registers) is under 60 lines and one ``init``/``step`` pair; registered from outside
the package it samples with counted NFE, the loop's NaN location and callback; its fitted order is held to the
declared 2 by the same helper as the built-in methods' (``tests/test_orders.py``); and ``scoresde bench --plugin``
benchmarks it from a file beside ``dpm++2m``, redoing its rows when the file changes.
"""

import json
import math
import sys

import pytest
import torch
from test_docs_blocks import ROOT, python_blocks
from test_orders import SDES, fitted_order

import scoresde as sd
from scoresde.cli import main
from scoresde.solvers import GridSolver, NonFiniteError, registry

GUIDE = ROOT / "docs" / "guides" / "writing-a-solver.md"
NAME = "rho-ab2"


def solver_code() -> str:
    """The guide's block that registers the example: the file a reader saves as ``rho_ab2.py``."""
    blocks = [b for b in python_blocks(GUIDE) if "@sd.solvers.register" in b.code]
    assert len(blocks) == 1, "the guide has one block that registers its solver"
    return blocks[0].code


@pytest.fixture
def own_registry(monkeypatch):
    """A copy of the registry for the test: what it registers is gone after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture
def example(own_registry):
    namespace = {"__name__": "rho_ab2"}
    exec(compile(solver_code(), str(GUIDE), "exec", dont_inherit=True), namespace)
    return namespace["RhoAB2"]


def test_the_example_is_one_init_step_pair_under_60_lines(example):
    lines = len(solver_code().splitlines())
    assert lines < 60 and f"in {lines} lines" in GUIDE.read_text()  # the guide says how long it is
    assert issubclass(example, GridSolver) and {"init", "step"} <= set(vars(example))
    info = sd.method_info(NAME)
    assert (info["kind"], info["order"], info["nfe_per_step"], info["engine"]) == ("ode", 2, 1, False)
    assert NAME in sd.available_methods("ode")


# The slopes measured here (float64, 64 points of the Gaussian): 1.85 (logsnr), 1.95 (uniform), 1.89 (quadratic)
# on 20-160 steps; the local slopes rise towards 2 as the steps double (logsnr: 1.75, 1.87, 1.93; 1.92 fitted on
# 40-320), the pre-asymptotic range of a second-order method. test_orders.py's 0.2 holds them; a first-order slip
# (the Euler step every time: DDIM) measures 1.0.
@pytest.mark.parametrize("grid", ["logsnr", "uniform", "quadratic"])
def test_the_example_is_second_order(example, grid):
    slope, errs = fitted_order(SDES["vp"], NAME, [20, 40, 80, 160], grid)
    assert errs[-1] < errs[0]
    assert abs(slope - 2) < 0.2, f"{NAME} on {grid} grid: slope {slope:.3f}, errors {errs}"


# On the other paths, on its own log-SNR grid, 40-320 steps as test_orders.py's other SDEs: measured 1.92
# (vp-cosine), 1.89 (subvp), 1.90 (ve); the flow path 1.80 on 20-160 steps (its grid starts at alpha = 2^-10).
@pytest.mark.parametrize("sde_name", ["vp-cosine", "subvp", "ve"])
def test_the_example_is_second_order_on_the_other_sdes(example, sde_name):
    sde = SDES[sde_name]
    slope, errs = fitted_order(sde, NAME, [40, 80, 160, 320], "logsnr", t_min=sde.t_min)
    assert abs(slope - 2) < 0.25, f"{NAME} on {sde_name}: slope {slope:.3f}, errors {errs}"


def test_a_first_order_slip_would_fail_the_order_test(example):
    class Slip(example):  # forgets the previous eps: DDIM, first order
        name = "rho-ab2-slip"

        def step(self, ctx, k, x, state):
            return super().step(ctx, k, x, self.init(ctx, x))

    sd.solvers.register(Slip)
    slope, _ = fitted_order(SDES["vp"], Slip.name, [20, 40, 80, 160], "logsnr")
    assert abs(slope - 1) < 0.2 and abs(slope - 2) > 0.5


def test_the_loop_counts_checks_and_calls_back(example):
    ring, vp = sd.get_problem("ring"), sd.VPSDE()
    seen = []
    out = sd.sample(ring.score(vp), vp, (16, 2), method=NAME, steps=6, seed=0, callback=seen.append)
    assert out.nfe == 6 and [i.k for i in seen] == list(range(6))
    assert all(type(i.state).__name__ == "RhoAB2State" and i.denoised is i.state.denoised for i in seen)
    assert seen[0].state.eps is not None and seen[-1].x is not None
    part = sd.sample(ring.score(vp), vp, (5, 2), method=NAME, steps=6, seed=0)  # per-sample streams
    torch.testing.assert_close(part.x, out.x[:5], rtol=0, atol=0)

    exact = ring.eps_model(vp)

    def broken(x, t):
        return exact(x, t) * (math.nan if float(t[0]) < 0.5 else 1.0)

    with pytest.raises(NonFiniteError, match=r"step \d+ of 6, t = "):
        sd.sample(sd.EpsilonScore(broken, vp), vp, (4, 2), method=NAME, steps=6, seed=0)


def test_registering_again_replaces_only_the_same_definition(example, own_registry):
    namespace = {"__name__": "rho_ab2"}  # the cell run again: the new class replaces the old
    exec(compile(solver_code(), str(GUIDE), "exec", dont_inherit=True), namespace)
    assert sd.solvers.get_solver(NAME) is namespace["RhoAB2"] is not example
    with pytest.raises(ValueError, match="registered twice"):  # another class under a taken name is refused
        exec(compile(solver_code(), str(GUIDE), "exec", dont_inherit=True), {"__name__": "someone_else"})
    assert sd.solvers.get_solver(NAME) is namespace["RhoAB2"]


@pytest.fixture
def plugin(tmp_path, own_registry, monkeypatch):
    """The guide's solver saved as ``rho_ab2.py``, as the guide tells; its module is forgotten after the test."""
    path = tmp_path / "rho_ab2.py"
    path.write_text(solver_code())
    monkeypatch.delitem(sys.modules, "rho_ab2", raising=False)
    yield path
    sys.modules.pop("rho_ab2", None)


def _bench(plugin, out, *extra):
    args = ["bench", "--plugin", str(plugin), "--methods", f"{NAME},dpm++2m", "--problems", "ring"]
    return main([*args, "--n", "200", "--nfe", "5,10", "--peers", "", "--out", str(out), "--no-progress", *extra])


def _rows(out):
    return json.loads((out / "bench_full.json").read_text())["rows"]


def test_bench_runs_a_plugin_beside_the_built_in_methods(plugin, tmp_path):
    out = tmp_path / "res"
    assert _bench(plugin, out) == 0
    rows = _rows(out)
    assert {(r["method"], r["nfe"]) for r in rows if r["status"] == "ok"} == {
        (NAME, 5),
        (NAME, 10),
        ("dpm++2m", 5),
        ("dpm++2m", 10),
    }
    assert f"| {NAME} | budget=5 |" in (out / "bench_full.md").read_text()
    keys = {r["key"] for r in rows}

    assert _bench(plugin, out) == 0  # the same file again: every row resumed under its key
    assert {r["key"] for r in _rows(out)} == keys
    plugin.write_text(solver_code().replace("r / 2", "r / 2.0"))  # an edit of the solver's file redoes its rows
    assert _bench(plugin, out) == 0
    new = {(r["method"], r["run"]) for r in _rows(out) if r["key"] not in keys}
    assert new == {(NAME, "budget=5"), (NAME, "budget=10")}


def test_methods_lists_a_plugin_and_a_bad_plugin_is_one_line(plugin, tmp_path, capsys):
    assert main(["methods", "--plugin", str(plugin)]) == 0
    assert any(line.startswith(f"{NAME} ") and "order 2" in line for line in capsys.readouterr().out.splitlines())
    assert main(["bench", "--plugin", str(tmp_path / "missing.py"), "--methods", NAME]) == 2
    assert "--plugin: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad_solver.py"
    bad.write_text(
        "import scoresde as sd\n\n\n@sd.solvers.register\nclass Bad(sd.solvers.GridSolver):\n    name = 'x'\n\n"
        "    def step(self, ctx, k, x, state):\n        return x, state\n"
    )
    assert main(["bench", "--plugin", str(bad), "--methods", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(line 4)" in err and "must declare 'kind'" in err, err
