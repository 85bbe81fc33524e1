"""benchmarks/fitted_families.py: a tiny run measures each variant with the fit's cost, resumes by its key
(revision included), and the table gives median / worst per family with choosing and held-out members apart."""

import json
import math

import pytest


@pytest.fixture
def ff(benchmark_script):
    return benchmark_script("fitted_families")


def test_a_run_counts_the_fit_and_resumes(ff, tmp_path):
    said = []
    ff.run(["fam16"], [0], ["fitted", "unipc"], [4], 400, tmp_path, said.append)
    rows = ff._read(tmp_path / "rows.fam16.jsonl")
    assert [(r["variant"], r["steps"]) for r in rows] == [("fitted", 4), ("unipc", 4)]
    fitted, unipc = rows
    assert all(math.isfinite(r["ratio"]) and r["ratio"] > 0 for r in rows)
    assert 0 < fitted["fit_evals"] <= 10_008 and fitted["nfe_amortised"] == round(4 + fitted["fit_evals"] / 400, 3)
    assert unipc["fit_evals"] == 0 and unipc["nfe_amortised"] == 4 and fitted["grid"].endswith(", searched")
    ff.run(["fam16"], [0], ["fitted", "unipc"], [4], 400, tmp_path, said.append)  # nothing left to do
    assert len(ff._read(tmp_path / "rows.fam16.jsonl")) == 2 == len(said)
    assert (tmp_path / "fitted_families.md").is_file()


def test_the_table_splits_the_members_and_skips_other_revisions(ff, tmp_path):
    base = dict(variant="fitted", steps=5, n=100, nfe=5, fit_evals=1000, nfe_amortised=15.0, grid="g", floor=1.0)
    rows = [
        dict(base, seed=s, ratio=r, revision=ff.REVISION) for s, r in ((0, 9.0), (100, 1.0), (101, 3.0), (102, 2.0))
    ] + [dict(base, seed=103, ratio=50.0, revision=ff.REVISION - 1)]
    (tmp_path / "rows.fam16.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    choosing, held = ff.table(tmp_path, ["fam16"]).split("## held-out")
    assert "| `fitted` | 9.00 / 9.00 (15) |" in choosing
    assert "| `fitted` | 2.00 / 3.00 (15) |" in held and "fam16 (3)" in held  # the old revision's row is left out
