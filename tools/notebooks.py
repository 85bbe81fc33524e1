"""The notebooks executed at CI size, once per version of the code: an mkdocs hook for the docs, a suite runner.

The notebooks are committed without outputs. ``make docs`` renders each page from a copy executed into
``build/notebooks/`` (``SCORESDE_NB_SMALL=1``, the size the suite runs; ``SCORESDE_NB_SMALL=0`` for full size), so
every figure on the site is drawn by the code it documents. A copy is reused while its key holds: the notebook, every
file of ``scoresde/``, the size and the versions of Python, torch, numpy and matplotlib. ``tests/test_notebooks.py``
runs the same :func:`execute` into a folder of its run (``SCORESDE_NB_BUILD``) and the docs-build test builds from
it, so the suite executes each notebook once, whichever test gets to it first (one lock per notebook).

Run ``python tools/notebooks.py`` to execute them all into ``build/notebooks/`` by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@dataclass
class Executed:
    path: Path  # the executed copy (build/notebooks/<name>.ipynb)
    seconds: float  # how long its execution took
    reused: bool  # True when an earlier execution with the same key was taken
    figures: int  # outputs holding a PNG


def build_dir() -> Path:
    """Where the executed copies go: ``$SCORESDE_NB_BUILD/notebooks/``, by default ``build/notebooks/`` (the folder
    is named ``notebooks`` so that mkdocs-jupyter's ``include: notebooks/*.ipynb`` takes the copies)."""
    return Path(os.environ.get("SCORESDE_NB_BUILD") or ROOT / "build") / "notebooks"


def small() -> bool:
    return os.environ.get("SCORESDE_NB_SMALL", "1") == "1"


def key(notebook: Path) -> str:
    """What an executed copy depends on: the notebook, this executor, the package's files, the size and versions."""
    h = hashlib.sha256(Path(notebook).read_bytes())
    h.update(Path(__file__).read_bytes())  # how it is executed
    for f in sorted((ROOT / "scoresde").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(f.relative_to(ROOT).as_posix().encode())
            h.update(f.read_bytes())
    versions = [platform.python_version()]
    for mod in ("torch", "numpy", "matplotlib"):
        with contextlib.suppress(ImportError):
            versions.append(f"{mod}={__import__(mod).__version__}")
    h.update(f"small={small()} {' '.join(versions)}".encode())
    return h.hexdigest()


def figures(nb) -> int:
    """How many outputs of the notebook's code cells hold an image (matplotlib's inline figures, IPython images)."""
    return sum(
        any(mime.startswith("image/") for mime in o.get("data", {}))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


class Busy(Exception):
    """Another process is executing this notebook now (raised by :func:`execute` with ``wait=False``)."""


@contextlib.contextmanager
def _lock(path: Path, wait: bool):
    try:
        from filelock import FileLock, Timeout
    except ImportError:  # the dev extra brings filelock; without it, one process at a time is assumed
        yield
        return
    try:
        with FileLock(str(path), timeout=-1 if wait else 0):
            yield
    except Timeout:
        raise Busy(path.stem) from None


def _cached(notebook: Path, k: str) -> Executed | None:
    out, meta = build_dir() / notebook.name, build_dir() / f"{notebook.stem}.json"
    if not (out.is_file() and meta.is_file()):
        return None
    info = json.loads(meta.read_text())
    if info.get("key") != k:
        return None
    return Executed(out, info["seconds"], True, info["figures"])


def _show_gifs(nb) -> None:
    """nbconvert's HTML shows PNG and JPEG but not GIF (an animation of scoresde.plot.animate_fields shown with
    IPython's ``Image``): give each GIF output an HTML ``<img>`` of the same data, which the page renders."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/gif" in data and "text/html" not in data:
                gif = "".join(data["image/gif"].split())
                data["text/html"] = f'<img src="data:image/gif;base64,{gif}" alt="animation">'


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def execute(notebook: Path, *, timeout: int = 600, wait: bool = True) -> Executed:
    """Execute ``notebook`` in a fresh kernel from its own folder into :func:`build_dir`, or reuse the copy there if
    its key holds. ``wait=False`` raises :class:`Busy` instead of waiting while another process executes it. A cell
    that raises raises here (nbclient's ``CellExecutionError``), and nothing is written.
    """
    import nbclient
    import nbformat

    notebook = Path(notebook).resolve()
    build = build_dir()
    build.mkdir(parents=True, exist_ok=True)
    k = key(notebook)
    with _lock(build / f"{notebook.stem}.lock", wait):
        if (hit := _cached(notebook, k)) is not None:
            return hit
        nb = nbformat.read(notebook, as_version=4)
        with tempfile.TemporaryDirectory(prefix=f"nb-{notebook.stem}-") as tmp:
            env = {
                **os.environ,
                "SCORESDE_NB_SMALL": "1" if small() else "0",
                "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "TMPDIR": tmp,  # what a notebook writes (bench tables, GIFs, checkpoints) goes away with it
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            }
            client = nbclient.NotebookClient(
                nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
            )
            start = time.perf_counter()
            client.execute(env=env)
            seconds = time.perf_counter() - start
        _show_gifs(nb)
        out = build / notebook.name
        _write(out, nbformat.writes(nb))
        info = {"key": k, "seconds": round(seconds, 1), "figures": figures(nb)}
        _write(build / f"{notebook.stem}.json", json.dumps(info))
        return Executed(out, seconds, False, info["figures"])


def on_files(files, config):
    """mkdocs hook: render every notebook page from its executed copy, executing those the build has not got.

    A notebook another process is executing (the suite's notebook test) is taken after the others, when it is done.
    """
    from mkdocs.plugins import get_plugin_logger

    log = get_plugin_logger("notebooks")
    pages = {f.src_uri: f for f in files if f.src_uri.startswith("notebooks/") and f.src_uri.endswith(".ipynb")}
    todo = sorted(pages, reverse=True)  # the suite's notebook tests start at the first: meet them at the end
    for wait in (False, True):
        busy = []
        for uri in todo:
            try:
                done = execute(Path(pages[uri].abs_src_path), wait=wait)
            except Busy:
                busy.append(uri)
                continue
            how = "reused" if done.reused else "executed"
            log.info(f"{uri}: {how} ({done.seconds:.1f} s, {done.figures} figures)")
            pages[uri].abs_src_path = str(done.path)
        todo = busy
    return files


on_files.mkdocs_priority = -100  # after mkdocs-jupyter's on_files wraps the notebooks: the page reads the copy


if __name__ == "__main__":
    for path in sys.argv[1:] and [Path(p) for p in sys.argv[1:]] or sorted(NOTEBOOKS.glob("*.ipynb")):
        done = execute(path)
        print(f"{path.name}: {'reused' if done.reused else 'executed'}, {done.seconds:.1f} s, {done.figures} figures")
