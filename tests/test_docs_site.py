"""The documentation site builds with `mkdocs build --strict`: no broken link, API reference or notebook page."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nbtools import run_build_dir

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IMG = re.compile(r"<img\b[^>]*\bsrc=\"data:image/(png|gif|jpeg|svg\+xml)[;,]")


def _mkdocs() -> list[str]:
    pytest.importorskip("mkdocs", reason="the docs extra (make install) installs mkdocs")
    return [sys.executable, "-m", "mkdocs"]


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path, tmp_path_factory):
    """The site builds with --strict, and every notebook page shows the figures its executed notebook drew.

    The notebooks are executed at CI size by the build's hook (tools/notebooks.py) into this run's folder, the one
    tests/test_notebooks.py executes into: each notebook is executed once per run, by whichever test comes first.
    """
    pytest.importorskip("nbclient", reason="the dev extra installs nbclient: the build executes the notebooks")
    site, build = tmp_path / "site", run_build_dir(tmp_path_factory)
    res = subprocess.run(
        [*_mkdocs(), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "SCORESDE_NB_SMALL": "1", "SCORESDE_NB_BUILD": str(build)},
    )
    assert res.returncode == 0, res.stderr[-4000:]
    for page in (
        "index.html",
        "math/index.html",
        "api/plot/index.html",
        "notebooks/02_score_and_drift_fields/index.html",
    ):
        assert (site / page).is_file(), page
    assert "vector_field" in (site / "api/plot/index.html").read_text()
    for nb in NOTEBOOKS:
        page = (site / "notebooks" / nb.stem / "index.html").read_text()
        figures = json.loads((build / "notebooks" / f"{nb.stem}.json").read_text())["figures"]
        shown = len(IMG.findall(page))
        assert shown >= 1, f"the page of {nb.name} shows no figure"
        assert shown == figures, f"the page of {nb.name} shows {shown} images, its executed notebook drew {figures}"


def test_every_nav_page_and_notebook_exists():
    import yaml

    text = (ROOT / "mkdocs.yml").read_text()
    nav = yaml.safe_load(text[text.index("\nnav:\n") :])["nav"]  # the nav alone: no plugin tags to resolve

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from pages(v)
        else:
            for v in node:
                yield from pages(v)

    listed = list(pages(nav))
    for page in listed:
        assert (ROOT / "docs" / page).is_file(), page
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(Path(p).name for p in listed if p.endswith(".ipynb")) == notebooks


def test_docs_figures_name_their_script():
    """Every figure the README and the docs show is produced by a script, notebook or command named beside it."""
    producers = ("benchmarks/", "notebooks/", "make bench", "scoresde bench")
    for md in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        text = md.read_text()
        for line_no, line in enumerate(text.splitlines()):
            if line.startswith("![") and "figures/" in line:
                after = "\n".join(text.splitlines()[line_no + 1 : line_no + 4])
                assert any(p in after for p in producers), f"{md}: {line} names no script"
