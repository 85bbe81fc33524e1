"""Every ```python block of README.md and docs/**/*.md runs, as a reader would run it.

The blocks of one file run in order in one namespace (a later block may use what an earlier one defined),
in a temporary working directory, with matplotlib's non-interactive backend, on a copy of the solver registry
(a solver a page registers, as the guide to writing one does, is gone after the page). A block is skipped only when
the line before its fence (blank lines aside) is a visible ``<!-- no-test: <reason> -->`` comment with a
non-empty reason; the test id of each file says how many blocks ran and how many were skipped, and the
summary test prints the totals.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
NO_TEST = re.compile(r"^\s*<!--\s*no-test:(?P<reason>.*?)-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason given in a no-test comment, or None


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    files = [ROOT / "README.md"] if (ROOT / "README.md").exists() else []
    return files + sorted((ROOT / "docs").rglob("*.md"))


def python_blocks(path: Path) -> list[Block]:
    """The ```python (or ```py) fenced blocks of one Markdown file, dedented to their fence's indent."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, info = m["indent"], m["ticks"], m["info"].lower()
        close = re.compile(rf"^[ \t]*{re.escape(ticks[0])}{{{len(ticks)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if info in ("python", "py", "python3"):
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : j]]
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            skip = None
            if k >= 0 and (s := NO_TEST.match(lines[k])):
                skip = s["reason"].strip()
                if not skip:
                    raise ValueError(f"{path.name}:{k + 1}: a no-test comment must give its reason")
            blocks.append(Block(path, i + 1, textwrap.dedent("\n".join(body)) + "\n", skip))
        i = j + 1
    return blocks


FILES = {p: python_blocks(p) for p in doc_files()}


def _id(path: Path) -> str:
    blocks = FILES[path]
    skipped = sum(b.skip is not None for b in blocks)
    return f"{path.relative_to(ROOT)}: {len(blocks) - skipped} run, {skipped} skipped"


@pytest.mark.parametrize("path", [p for p, b in FILES.items() if b], ids=_id)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    import matplotlib

    from scoresde.solvers import registry

    matplotlib.use("Agg")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for block in FILES[path]:
        if block.skip is not None:
            print(f"{path.relative_to(ROOT)}:{block.line}: skipped ({block.skip})")
            continue
        where = f"{path.relative_to(ROOT)}:{block.line}"
        try:
            exec(compile(block.code, where, "exec", dont_inherit=True), namespace)
        except Exception as e:
            raise AssertionError(f"the python block at {where} fails as written: {type(e).__name__}: {e}") from e
        ran += 1
    print(f"{path.relative_to(ROOT)}: {ran} python blocks ran")


def test_blocks_are_found_and_counted(capsys):
    """The README has blocks to run, every skip names its reason, and the totals are reported."""
    assert FILES.get(ROOT / "README.md"), "README.md has no python block: the extraction is broken"
    blocks = [b for bs in FILES.values() for b in bs]
    skipped = [b for b in blocks if b.skip is not None]
    assert all(b.skip for b in skipped)
    with capsys.disabled():
        print(
            f"\ndocs blocks: {len(blocks) - skipped.__len__()} python blocks run from {len(FILES)} Markdown files, "
            f"{len(skipped)} skipped"
            + "".join(f"\n  skipped {b.path.relative_to(ROOT)}:{b.line}: {b.skip}" for b in skipped)
        )


def test_extraction(tmp_path):
    """Fences, indentation, other languages and the no-test marker are read as a reader sees them."""
    md = tmp_path / "x.md"
    md.write_text(
        "text\n```python\na = 1\n```\n\n```bash\nls\n```\n- item\n\n  ```python\n  b = a + 1\n  ```\n"
        "<!-- no-test: needs a GPU -->\n\n```python\nraise SystemExit\n```\n````python\nc = '```'\n````\n"
    )
    blocks = python_blocks(md)
    assert [b.code for b in blocks] == ["a = 1\n", "b = a + 1\n", "raise SystemExit\n", "c = '```'\n"]
    assert [b.skip for b in blocks] == [None, None, "needs a GPU", None]
    assert [b.line for b in blocks] == [2, 11, 16, 19]
    md.write_text("<!-- no-test: -->\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="must give its reason"):
        python_blocks(md)
