"""Small shared helpers with no scoresde imports."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text", "atomic_write_bytes", "cache_root", "save_tensors", "unwritable"]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where the package caches what it builds once (the digit and MNIST classifiers, the parsed MNIST arrays):
    ``cache_dir`` if given, else ``$SCORESDE_CACHE``, else ``~/.cache/scoresde``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("SCORESDE_CACHE") or Path.home() / ".cache" / "scoresde")


def _umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def unwritable(folder: str | Path) -> str | None:
    """Why no file can be written in ``folder``, or ``None`` when one can: checked by writing and removing a probe
    file, before any work whose results would have nowhere to go. Folders it had to create for the probe are
    removed again, so a command refused later leaves nothing behind."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return err.strerror or str(err)
    finally:
        for p in created:  # deepest first
            try:
                p.rmdir()
            except OSError:
                break
    return None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a torn one.

    The file gets the mode a plain ``open(path, "w")`` would give it, ``0o666 & ~umask`` (``mkstemp`` alone
    makes it ``0o600``, unreadable by colleagues on a shared machine whatever their umask says).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write named tensors atomically as ``.safetensors`` (with string ``metadata``) or ``.npz``, by suffix."""
    import io

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    elif path.suffix == ".npz":
        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, **{k: v.detach().cpu().numpy() for k, v in tensors.items()})
        data = buf.getvalue()
    else:
        raise ValueError(f"tensors are saved as .safetensors or .npz, got {path.name!r}")
    atomic_write_bytes(path, data)
