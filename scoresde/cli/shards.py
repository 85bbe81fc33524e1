"""``scoresde sample``'s sharded, resumable mode (``--shard-size``); ``--dtype`` is :mod:`scoresde.precision`.

``--device`` is where the network, the state and the noise live; a CPU run never touches CUDA.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path


def _files_sha256(folder: str | Path) -> str:
    folder, h = Path(folder), hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _key(args, p, identity: str, device: str) -> dict:
    """What determines the shards' content; a rerun with another key is refused (the manifest keeps it)."""
    import torch

    from ..shards import weights_sha256

    return {
        "score": identity,
        "weights": "raw" if args.raw_weights else "ema",
        "prediction": p.cfg.prediction,
        "sde": repr(p.sde),
        "dims": list(p.dims),
        "method": args.method if not args.fitted else f"fitted:{_files_sha256(args.fitted)}",
        "options": {k: v for k, v in sorted(dict(args.option).items())},
        "steps": args.steps,
        "grid": args.grid,
        "seed": args.seed,
        "denoise": args.denoise,
        "label": args.label,
        "guidance": args.guidance,
        "dtype": args.dtype,
        # absent unless given, so shard runs written before the option still resume
        **({"guidance_interval": list(args.guidance_interval)} if args.guidance_interval else {}),
        **({"guide": weights_sha256(p.guide)} if p.guide is not None else {}),
        "noise_device": torch.device(device).type,
        # a network's kernels may round differently at another batch size (2e-9 measured on the tiny U-Net)
        "batch_size": args.batch_size or args.shard_size,
    }


def _drawer(args, p, device: str):
    """``draw(start, stop) -> {"x": ..., "y": ...}``: samples ``[start, stop)`` in batches of ``--batch-size``."""
    import torch

    from ..precision import network_precision, state_dtype
    from ..sample import sample
    from ..train.pretrained import make_score

    batch = args.batch_size or args.shard_size
    common = dict(
        steps=args.steps, seed=args.seed, denoise=args.denoise, dtype=state_dtype(args.dtype), check=args.check
    )
    common |= dict(args.option) | ({"grid": args.grid} if args.grid else {})

    def draw(start: int, stop: int) -> dict:
        xs = []
        for b in range(start, stop, batch):
            e = min(stop, b + batch)
            y = p.labels(b, e)
            s = (
                p.score
                if y is None
                else make_score(
                    p.net, p.sde, p.cfg.prediction, y.to(device), args.guidance, args.guidance_interval, guide=p.guide
                )
            )
            shape = (e - b, *p.dims)
            with network_precision(args.dtype, device):
                xs.append(sample(s, p.sde, shape, method=p.method, device=device, sample_offset=b, **common).x)
        y = p.labels(start, stop)
        return {"x": torch.cat(xs).cpu()} | ({} if y is None else {"y": y})

    return draw


def sample_to_shards(args, device: str) -> int:
    """``scoresde sample --shard-size S --out DIR``: the samples as a resumable shard folder (see
    :mod:`scoresde.shards`); every process of a ``torchrun`` job calls it. Returns the exit status."""
    from ..process_group import any_rank, world
    from ..shards import ShardMismatchError, open_everywhere, pending_everywhere, run_shards, share, weights_sha256
    from .sampling import prepare

    rank, size = world()
    say = print if rank == 0 else (lambda *a, **k: None)
    if args.inpaint or args.save or args.force:
        which = "--inpaint" if args.inpaint else "--save" if args.save else "--force"
        say(
            f"scoresde sample: error: {which} does not go with --shard-size (the shards are the output)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    error = None
    try:
        p = prepare(args, device)  # without labels: the shards draw theirs per batch
        identity = weights_sha256(p.net)  # of the weights as trained, before a cast
        p.to_state_dtype(args.dtype)
        run = open_everywhere(out, _key(args, p, identity, device), args.n, args.shard_size)
    except (ValueError, TypeError, OSError) as err:
        error = err
    if any_rank(error is not None):
        if error is not None and (rank == 0 or not isinstance(error, ShardMismatchError)):
            print(f"scoresde sample: error: {error}", file=sys.stderr)
        return 2

    tag = f"[rank {rank}] " if size > 1 else ""
    pending = pending_everywhere(run, rank, size)
    already = run.num_shards - len(pending)
    mine = share(pending, rank, size)
    try:
        run_shards(run, _drawer(args, p, device), mine, say=lambda line: _line(tag + line))
    except (ValueError, TypeError) as err:
        error = err
        print(f"scoresde sample: error: {err}", file=sys.stderr)
    if any_rank(error is not None):
        return 2
    missing = run.pending() if rank == 0 else []
    if missing:  # cannot happen unless a file was removed while the run went on
        say(f"scoresde sample: error: {len(missing)} shards are still missing in {out}", file=sys.stderr)
        return 2
    procs = f" on {size} processes" if size > 1 else ""
    skipped = f", {already} of them already there" if already else ""
    say(f"{args.n} samples in {run.num_shards} shards of {args.shard_size}{skipped}{procs} -> {out}")
    return 0


def _line(text: str) -> None:
    """One line to stdout in a single write: the ranks share the pipe, and print's separate write of the newline
    let two ranks' lines run together."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
