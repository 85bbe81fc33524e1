"""A large sampling job as a folder of shards that a restart completes: resumable, shareable between processes.

``n`` samples are cut into shards of ``S`` (the last may be shorter); shard ``i`` holds samples ``[i S, (i + 1) S)``
in ``shard-<i>.safetensors``, written atomically (a reader sees the whole file or none), so a file that exists is
finished. ``manifest.json``, written once when the folder is created, records the run's *key*: everything that
determines the samples (the score's identity, SDE, method and options, steps, grid, seed, dtype, the device type
the noise is drawn on, the number of samples, the shard size and the batch size). A restart with the same key
skips the shards that exist; one with another key is refused, naming what differs, instead of mixing two runs in
one folder.

Sample ``i`` draws its noise from its own streams (:class:`~scoresde.noise.NoiseSource` with ``sample_offset``),
so its value depends neither on the shard size, the batch size nor the number of processes. Under ``torchrun``
rank 0 lists the unfinished shards and sends the list to every rank; rank ``r`` of ``W`` takes entries
``r, r + W, ...``: no shard is drawn twice or left out, and an interrupted run resumed on another number of
processes shares out what is left.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .util import atomic_write_text, save_tensors

__all__ = ["ShardedRun", "open_sharded", "sample_shards", "load_shards", "weights_sha256", "ShardMismatchError"]

MANIFEST = "manifest.json"
FORMAT = "scoresde-shards/1"


class ShardMismatchError(ValueError):
    """The folder holds shards of a run with other inputs (or is not a shard folder)."""


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def key_sha256(key: dict) -> str:
    return hashlib.sha256(_canonical(key).encode()).hexdigest()


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and bytes), in name order: the identity of
    a network whatever file it came from."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class ShardedRun:
    """A shard folder: ``num_samples`` samples in shards of ``shard_size``, determined by ``key``."""

    out: Path
    num_samples: int
    shard_size: int
    key: dict

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_samples / self.shard_size)

    def bounds(self, i: int) -> tuple[int, int]:
        """Samples ``[start, stop)`` of shard ``i``."""
        return i * self.shard_size, min(self.num_samples, (i + 1) * self.shard_size)

    def path(self, i: int) -> Path:
        return self.out / f"shard-{i:06d}.safetensors"

    def pending(self) -> list[int]:
        """The shards not written yet, in order."""
        return [i for i in range(self.num_shards) if not self.path(i).exists()]

    def write(self, i: int, tensors: dict[str, Tensor]) -> Path:
        """Write shard ``i`` atomically, its key's hash and sample range in the metadata."""
        start, stop = self.bounds(i)
        for name, t in tensors.items():
            if t.shape[0] != stop - start:
                raise ValueError(f"shard {i}: {name!r} has {t.shape[0]} rows, expected {stop - start}")
        meta = {"key_sha256": key_sha256(self.key), "shard": str(i), "start": str(start), "stop": str(stop)}
        save_tensors(self.path(i), tensors, metadata=meta)
        return self.path(i)


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<absent>") != new.get(k, "<absent>"):
            out.append(f"{k}: {_canonical(old.get(k, '<absent>'))} there, {_canonical(new.get(k, '<absent>'))} now")
    return out


def open_sharded(out: str | Path, key: dict, num_samples: int, shard_size: int) -> ShardedRun:
    """Create the shard folder ``out`` with its manifest, or reopen it if its manifest has this ``key``.

    Raises :class:`ShardMismatchError` if ``out`` holds a run with another key, or files but no manifest. Call it on
    one process (rank 0) before the others look at the folder.
    """
    if num_samples < 1 or shard_size < 1:
        raise ValueError(f"num_samples and shard_size must be >= 1, got {num_samples} and {shard_size}")
    out = Path(out)
    key = {**key, "num_samples": int(num_samples), "shard_size": int(shard_size)}
    run = ShardedRun(out, int(num_samples), int(shard_size), key)
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
            old_key = old["key"]
        except (ValueError, KeyError, TypeError) as err:
            raise ShardMismatchError(f"{manifest}: not a scoresde shard manifest ({err})") from None
        if old.get("format") != FORMAT:
            raise ShardMismatchError(f"{manifest}: format {old.get('format')!r}, expected {FORMAT!r}")
        diff = _differences(old_key, key)
        if diff:
            raise ShardMismatchError(
                f"{out} holds shards of a run with other inputs; resuming would mix two runs. Differences: "
                + "; ".join(diff)
                + ". Use another --out, or delete the folder to start again."
            )
        for tmp in out.glob(".shard-*.tmp"):  # a write cut short by a kill: nobody is writing while the run opens
            tmp.unlink(missing_ok=True)
        return run
    if out.exists() and any(p.name.startswith("shard-") for p in out.iterdir()):
        raise ShardMismatchError(f"{out} holds shard files but no {MANIFEST}: not a folder this run can resume")
    info = {"torch": torch.__version__}
    try:
        from importlib.metadata import version

        info["scoresde"] = version("scoresde")
    except Exception:  # noqa: BLE001 - an uninstalled checkout has no version; it is informative only
        pass
    payload = {"format": FORMAT, "key": key, "key_sha256": key_sha256(key), "num_shards": run.num_shards}
    atomic_write_text(manifest, json.dumps(payload | {"written_by": info}, indent=2, sort_keys=True) + "\n")
    return run


def load_shards(out: str | Path) -> dict[str, Tensor]:
    """The tensors of a finished shard folder, concatenated in sample order (``{"x": ..., "y": ...}``).

    Raises if a shard is missing (the run is not finished: run the same command again) or belongs to another run.
    """
    from safetensors import safe_open

    out = Path(out)
    try:
        man = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{out}: no {MANIFEST}; not a shard folder") from None
    key = man["key"]
    run = ShardedRun(out, key["num_samples"], key["shard_size"], key)
    missing = run.pending()
    if missing:
        raise FileNotFoundError(
            f"{out}: {len(missing)} of {run.num_shards} shards are missing (first: {run.path(missing[0]).name}); "
            "the run is not finished: run the same command again to complete it"
        )
    parts: dict[str, list[Tensor]] = {}
    want = key_sha256(key)
    for i in range(run.num_shards):
        with safe_open(str(run.path(i)), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key_sha256") != want or meta.get("shard") != str(i):
                raise ShardMismatchError(f"{run.path(i)} does not belong to the run in {out / MANIFEST}")
            for name in f.keys():
                parts.setdefault(name, []).append(f.get_tensor(name))
    return {name: torch.cat(ts) for name, ts in parts.items()}


def run_shards(
    run: ShardedRun,
    draw: Callable[[int, int], dict[str, Tensor]],
    mine: list[int],
    say: Callable[[str], None] = lambda s: None,
) -> int:
    """Draw and write the shards ``mine`` of ``run`` (``draw(start, stop)`` gives the tensors of samples
    ``[start, stop)``); returns how many were written."""
    for j, i in enumerate(mine):
        start, stop = run.bounds(i)
        path = run.write(i, draw(start, stop))
        say(f"shard {i + 1}/{run.num_shards} (samples {start}-{stop - 1}, {j + 1} of {len(mine)} here) -> {path}")
    return len(mine)


def share(pending: list[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s part of the pending shards: entries ``rank, rank + W, ...`` (each shard exactly once)."""
    return pending[rank::world_size]


def pending_everywhere(run: ShardedRun | None, rank: int, world_size: int) -> list[int]:
    """Rank 0's list of unfinished shards, on every rank (one broadcast; rank 0 alone reads the folder, so no rank
    sees a shard another has just written)."""
    if world_size == 1:
        return run.pending()
    box = [run.pending() if rank == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def open_everywhere(out: str | Path, key: dict, num_samples: int, shard_size: int) -> ShardedRun:
    """:func:`open_sharded` on rank 0, its verdict on every rank (the others raise the same error, or get the run
    once rank 0 has written the manifest)."""
    from .process_group import world

    rank, size = world()
    if size == 1:
        return open_sharded(out, key, num_samples, shard_size)
    run, error = None, None
    if rank == 0:
        try:
            run = open_sharded(out, key, num_samples, shard_size)
        except (ValueError, OSError) as err:
            error = f"{type(err).__name__}: {err}"
    box = [error]
    torch.distributed.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise ShardMismatchError(box[0].split(": ", 1)[1])
    key = {**key, "num_samples": int(num_samples), "shard_size": int(shard_size)}
    return run or ShardedRun(Path(out), int(num_samples), int(shard_size), key)


def sample_shards(
    score,
    sde=None,
    dims: tuple[int, ...] | None = None,
    *,
    out: str | Path,
    num_samples: int,
    shard_size: int,
    seed: int,
    batch_size: int | None = None,
    identity: str | None = None,
    say: Callable[[str], None] = lambda s: None,
    **kwargs,
) -> ShardedRun:
    """:func:`scoresde.sample` of ``num_samples`` samples of shape ``dims`` into the shard folder ``out``, resumable
    and shared among the processes of the default group (each rank calls it the same way).

    ``identity`` names the score in the manifest's key; by default the SHA-256 of ``score.model``'s weights when it
    is a ``torch.nn.Module`` (else pass one: a callable's code cannot be hashed). ``kwargs`` (``method``,
    ``steps``, ``grid``, ``dtype``, method options...) go to :func:`scoresde.sample` and into the key; they must be
    JSON-representable or have a stable ``repr``. ``batch_size`` (default: a whole shard) is in the key too: the
    noise does not depend on it, but a network's kernels may round differently at another batch size. Returns the
    :class:`ShardedRun`; :func:`load_shards` reads the result.
    """
    from .process_group import world
    from .sample import sample

    if "generator" in kwargs or "noise" in kwargs or "sample_offset" in kwargs or "x_init" in kwargs:
        raise ValueError(
            "sample_shards draws from seed= by sample index; do not pass generator, noise, x_init or sample_offset"
        )
    sde = score.sde if sde is None else sde
    if dims is None:
        raise ValueError("give dims, the shape of one sample")
    if identity is None:
        model = getattr(score, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise ValueError("pass identity=: the score's model is not a torch.nn.Module whose weights can be hashed")
        identity = weights_sha256(model)
    device = torch.device(kwargs.get("device") or "cpu")
    key = {
        "score": identity,
        "sde": repr(sde),
        "dims": list(dims),
        "seed": int(seed),
        "noise_device": device.type,
        "batch_size": int(batch_size or shard_size),
        "sample": {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v) for k, v in kwargs.items()},
    }
    rank, size = world()
    run = open_everywhere(out, key, num_samples, shard_size)
    batch = batch_size or shard_size

    def draw(start: int, stop: int) -> dict[str, Tensor]:
        xs = [
            sample(score, sde, (min(stop, b + batch) - b, *dims), seed=seed, sample_offset=b, **kwargs).x.cpu()
            for b in range(start, stop, batch)
        ]
        return {"x": torch.cat(xs)}

    mine = share(pending_everywhere(run, rank, size), rank, size)
    run_shards(run, draw, mine, say)
    if size > 1:
        torch.distributed.barrier()
    return run
