"""benchmarks/default_grids.py: the family table reads its rows into median / worst per family, choosing and held-out
members apart, and a run measures what the bench measures (a tiny run on one member)."""

import json
import math

import pytest


@pytest.fixture
def dg(benchmark_script):
    return benchmark_script("default_grids")


def test_table_splits_choosing_from_held_out_and_gives_median_and_worst(dg, tmp_path):
    rows = [
        dict(seed=s, variant="unipc@quadratic", nfe=5, n=100, ratio=r, floor=1.0, wall_s=0.0)
        for s, r in ((0, 9.0), (100, 1.0), (101, 3.0), (102, 2.0))
    ]
    (tmp_path / "rows.fam16.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = dg.table(tmp_path)
    choosing, held = text.split("## held-out members")
    assert "| `unipc@quadratic` | 9.00 / 9.00 |" in choosing
    assert "| `unipc@quadratic` | 2.00 / 3.00 |" in held  # median and worst of the three held-out seeds
    assert set(dg.CHOOSE_SEEDS).isdisjoint(dg.HELD_OUT)


def test_a_run_appends_a_row_per_variant_and_budget_and_resumes(dg, tmp_path):
    lines = []
    dg.run_family("fam16", (0,), ("unipc@quadratic",), 200, tmp_path, lines.append)
    rows = dg._read(tmp_path / "rows.fam16.jsonl")
    assert [r["nfe"] for r in rows] == list(dg.NFE) and all(math.isfinite(r["ratio"]) and r["ratio"] > 0 for r in rows)
    dg.run_family("fam16", (0,), ("unipc@quadratic",), 200, tmp_path, lines.append)  # nothing left to do
    assert len(dg._read(tmp_path / "rows.fam16.jsonl")) == len(dg.NFE) == len(lines)


def test_a_method_of_two_calls_a_step_runs_the_steps_that_fit_the_budget(dg):
    """ode-midpoint makes two model calls a step: at 5 NFE it runs 2 steps (4 calls; ratio asserts the count),
    at 10 NFE 5 steps, and it is among the candidates on the quadratic grid."""
    import scoresde as sd

    mix, sde = dg.FAMILIES["fam16"][0](0), sd.VPSDE()
    fl = dg.floor(mix.marginal(sde, sde.t_min), 200)
    for nfe in (5, 10):
        assert math.isfinite(dg.ratio(mix, sde, "ode-midpoint@quadratic", nfe, 200, fl))
    assert "ode-midpoint@quadratic" in dg.CANDIDATES
