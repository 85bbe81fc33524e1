"""Every notebook runs top to bottom at CI size (SCORESDE_NB_SMALL=1), in a fresh kernel, from notebooks/."""

import os
import re
from pathlib import Path

import pytest
from nbtools import run_build_dir, tools

nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat, nbclient and ipykernel")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_seven_notebooks_are_there_and_committed_without_outputs():
    assert [p.stem[:2] for p in NOTEBOOKS] == [f"0{i}" for i in range(1, 8)]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        assert "SMALL = " in code[0].source, f"{path.name}: the size switch belongs in the first cell"


# a cell that calls a plotting function of scoresde.plot or shows an image file
DRAWS = re.compile(r"\bplot\.(plot_|animate_)\w*\(|\bImage\(")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path_factory, monkeypatch):
    """Executed in a fresh kernel (tools/notebooks.py, the docs build's executor), every drawing cell shows a figure.

    The executed copy goes to this run's folder, where the docs-build test renders the site from it: whichever of the
    two tests gets to a notebook first executes it, the other reads that copy (same notebook, code and size).
    """
    monkeypatch.setenv("SCORESDE_NB_SMALL", "1")
    monkeypatch.setenv("SCORESDE_NB_BUILD", str(run_build_dir(tmp_path_factory)))
    done = tools().execute(path)
    nb = nbformat.read(done.path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert done.figures >= 1, f"{path.name} showed no figure"
    for i, cell in enumerate(code):
        images = [o for o in cell.outputs if any(m.startswith("image/") for m in o.get("data", {}))]
        if DRAWS.search(cell.source):
            assert images, f"{path.name}, code cell {i}: it draws, but shows no image"
    how = "read the docs build's copy" if done.reused else "executed"
    print(f"{path.name}: {done.seconds:.1f} s, {done.figures} figures ({how})")
    if os.environ.get("SCORESDE_NB_TIMES"):
        with open(os.environ["SCORESDE_NB_TIMES"], "a") as f:
            f.write(f"{path.name} {done.seconds:.1f}\n")
