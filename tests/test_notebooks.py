"""Every notebook runs top to bottom at CI size (SCORESDE_NB_SMALL=1), in a fresh kernel, from notebooks/."""

import os
import time
from pathlib import Path

import pytest

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


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SCORESDE_NB_SMALL", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()
    seconds = time.perf_counter() - start
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 1, f"{path.name} showed no figure"
    print(f"{path.name}: {seconds:.1f} s, {images} figures")
    if os.environ.get("SCORESDE_NB_TIMES"):
        with open(os.environ["SCORESDE_NB_TIMES"], "a") as f:
            f.write(f"{path.name} {seconds:.1f}\n")
