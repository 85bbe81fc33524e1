"""The documentation site builds with `mkdocs build --strict`: no broken link, API reference or notebook page."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _mkdocs() -> list[str]:
    pytest.importorskip("mkdocs", reason="the docs extra (make install) installs mkdocs")
    return [sys.executable, "-m", "mkdocs"]


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    res = subprocess.run(
        [*_mkdocs(), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
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
    """Every figure the docs show is produced by a script or notebook named beside it."""
    for md in (ROOT / "docs").rglob("*.md"):
        text = md.read_text()
        for line_no, line in enumerate(text.splitlines()):
            if line.startswith("![") and "figures/" in line:
                after = "\n".join(text.splitlines()[line_no + 1 : line_no + 4])
                assert "benchmarks/" in after or "notebooks/" in after, f"{md}: {line} names no script"
